// Launchers of the CTC CUDA kernels (csrc/ctc/ctc_cuda.cu), queued on `stream` (a cudaStream_t). Torch-free: the
// glue (ctc_cuda.cpp) fills the argument structs of ctc_lattice.h with device pointers.
#pragma once

#include "ctc_lattice.h"

namespace pyseq {

// The forward recursion: alpha and the loss of every sequence (one block per sequence).
void launch_ctc_alpha(const CtcLossArgs<float>& a, void* stream);
void launch_ctc_alpha(const CtcLossArgs<double>& a, void* stream);

// The backward recursion and the gradient (one block per sequence); a.grad zero on entry.
void launch_ctc_backward(const CtcLossArgs<float>& a, void* stream);
void launch_ctc_backward(const CtcLossArgs<double>& a, void* stream);

// Best-path decoding: the best class of every frame into best [N, T_max] (scratch), then each sequence's collapsed
// tokens into tokens [N, T_max] (-1 on entry) and their number into counts [N].
void launch_ctc_greedy(const float* lp, int64_t T_max, int64_t N, int64_t C, int64_t blank,
                       const int64_t* input_lengths, int64_t* best, int64_t* tokens, int64_t* counts, void* stream);
void launch_ctc_greedy(const double* lp, int64_t T_max, int64_t N, int64_t C, int64_t blank,
                       const int64_t* input_lengths, int64_t* best, int64_t* tokens, int64_t* counts, void* stream);

// Forced alignment (one block per sequence).
void launch_ctc_align(const CtcAlignArgs<float>& a, void* stream);
void launch_ctc_align(const CtcAlignArgs<double>& a, void* stream);

}  // namespace pyseq
