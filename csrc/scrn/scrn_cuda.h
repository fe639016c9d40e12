// Launchers of the SCRN's CUDA kernels (csrc/scrn/scrn_cuda.cu), queued on `stream` (a cudaStream_t). Torch-free:
// the glue (scrn_cuda.cpp) passes device pointers. The hidden layer runs the Clockwork RNN's kernels
// (clockwork_cuda.h).
#pragma once

#include "scrn_elements.h"

namespace pyseq {

#define PYSEQ_DECLARE_SCRN_LAUNCHERS(T)                                                                   \
  /* The context states a.context and s_n [B, C]: a thread per (row, unit) element, the steps in turn. */ \
  void launch_scrn_context(const ScrnContextArgs<T>& a, T* s_n, void* stream);                            \
  /* Their backward (a.grad_context_proj, a.grad_s0): the same grid, the steps last first. */             \
  void launch_scrn_context_backward(const ScrnContextArgs<T>& a, void* stream);
PYSEQ_DECLARE_SCRN_LAUNCHERS(float)
PYSEQ_DECLARE_SCRN_LAUNCHERS(double)
#undef PYSEQ_DECLARE_SCRN_LAUNCHERS

}  // namespace pyseq
