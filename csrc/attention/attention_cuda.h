// Launchers of the attention CUDA kernels (csrc/attention/attention_cuda.cu), queued on `stream` (a cudaStream_t).
// Torch-free: the glue (attention_cuda.cpp) passes device pointers; the GEMMs with the values (and the dot scores)
// go through cuBLAS from the glue.
#pragma once

#include "attention_elements.h"

namespace pyseq {

#define PYSEQ_DECLARE_ATTENTION_LAUNCHERS(T)                                                                      \
  /* The additive scores of every (query, key) pair into a.scores. */                                            \
  void launch_additive_scores(const AdditiveArgs<T>& a, void* stream);                                           \
  /* The masked softmax of each row (b, i) of scores [B * Tq, Tk], in place (scores scaled by `scale`). */       \
  void launch_masked_softmax(T* scores, int64_t rows, int64_t Tq, int64_t Tk, MaskView mask, T scale,            \
                             void* stream);                                                                      \
  /* The softmax backward of each row, in place: grad <- scale * w * (grad - sum(w * grad)). */                  \
  void launch_softmax_backward(const T* weights, T* grad, int64_t rows, int64_t Tk, T scale, void* stream);      \
  /* The additive gradients a.dq, a.dk and a.dv_part from a.ds. */                                               \
  void launch_additive_gradients(const AdditiveArgs<T>& a, void* stream);
PYSEQ_DECLARE_ATTENTION_LAUNCHERS(float)
PYSEQ_DECLARE_ATTENTION_LAUNCHERS(double)
#undef PYSEQ_DECLARE_ATTENTION_LAUNCHERS

}  // namespace pyseq
