// Launchers of the CRF CUDA kernels (csrc/crf/crf_cuda.cu), queued on `stream` (a cudaStream_t). Torch-free: the glue
// (crf_cuda.cpp) fills the argument structs of crf_chain.h with device pointers.
#pragma once

#include "crf_chain.h"

namespace pyseq {

// The largest tag count the kernels take (their shared vectors: four of K values per block).
constexpr int64_t kCrfCudaMaxTags = 1024;

#define PYSEQ_DECLARE_CRF_LAUNCHERS(T)                                                          \
  /* The forward recursion; out[b] = log Z, or with a.tags the log-likelihood. */               \
  void launch_crf_forward(const CrfChainArgs<T>& a, T* out, void* stream);                     \
  /* The backward recursion (node marginals, and with a.pair the per-sequence sums; with      \
     a.tags the path's term too). */                                                            \
  void launch_crf_backward(const CrfChainArgs<T>& a, void* stream);                            \
  /* The score of each sequence's tag path into out [B]. */                                     \
  void launch_crf_path_scores(const CrfChainArgs<T>& a, T* out, void* stream);                 \
  /* The path terms of the gradient of the path scores (node, pair, start and end sums). */    \
  void launch_crf_path_gradients(const CrfChainArgs<T>& a, void* stream);                      \
  /* Viterbi, one best path per sequence. */                                                    \
  void launch_crf_viterbi(const CrfViterbiArgs<T>& a, void* stream);
PYSEQ_DECLARE_CRF_LAUNCHERS(float)
PYSEQ_DECLARE_CRF_LAUNCHERS(double)
#undef PYSEQ_DECLARE_CRF_LAUNCHERS

}  // namespace pyseq
