// CUDA kernels of the SCRN's context state: a thread per (batch row, context unit) element runs its steps in turn
// (the elements are independent); each step is a function of scrn_elements.h, which the CPU kernels run too (make
// cuda-emulate runs these kernels on the CPU). The hidden layer runs the Clockwork RNN's kernels.
#include <cuda_runtime.h>

#include "../common/cuda_launch.h"
#include "scrn_cuda.h"

namespace pyseq {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void scrn_context_kernel(const ScrnContextArgs<T> a, T* s_n) {
  PYSEQ_GRID_STRIDE(e, a.B * a.C) {
    const int64_t b = e / a.C, c = e % a.C;
    for (int64_t t = 0; t < a.steps; ++t) scrn_context_step(a, t, b, c);
    s_n[e] = scrn_context_final(a, b, c);
  }
}

template <typename T>
__global__ void scrn_context_backward_kernel(const ScrnContextArgs<T> a) {
  PYSEQ_GRID_STRIDE(e, a.B * a.C) {
    const int64_t b = e / a.C, c = e % a.C;
    for (int64_t t = a.steps - 1; t >= 0; --t) scrn_context_backward_step(a, t, b, c);
  }
}

template <typename T>
void context(const ScrnContextArgs<T>& a, T* s_n, void* stream) {
  if (a.B * a.C == 0) return;
  launch_kernel<scrn_context_kernel<T>>(grid_stride_blocks(a.B * a.C, kThreads), kThreads, 0, stream, a, s_n);
}

template <typename T>
void context_backward(const ScrnContextArgs<T>& a, void* stream) {
  if (a.B * a.C == 0) return;
  launch_kernel<scrn_context_backward_kernel<T>>(grid_stride_blocks(a.B * a.C, kThreads), kThreads, 0, stream, a);
}

}  // namespace

#define PYSEQ_DEFINE_SCRN_LAUNCHERS(T)                                                                     \
  void launch_scrn_context(const ScrnContextArgs<T>& a, T* s_n, void* stream) { context(a, s_n, stream); } \
  void launch_scrn_context_backward(const ScrnContextArgs<T>& a, void* stream) { context_backward(a, stream); }
PYSEQ_DEFINE_SCRN_LAUNCHERS(float)
PYSEQ_DEFINE_SCRN_LAUNCHERS(double)
#undef PYSEQ_DEFINE_SCRN_LAUNCHERS

}  // namespace pyseq
