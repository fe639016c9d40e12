// Launchers of the Clockwork RNN's CUDA kernels (csrc/clockwork/clockwork_cuda.cu), queued on `stream` (a
// cudaStream_t). Torch-free: the glue (clockwork_cuda.cpp) passes device pointers.
#pragma once

#include <cstddef>

#include "clockwork_elements.h"

namespace pyseq {

// The shared memory a block keeps (3 vectors of H values, the backward's), within the 48 KiB every GPU gives a
// block without opting in.
constexpr size_t kClockworkCudaSharedBytes = 48 * 1024;

#define PYSEQ_DECLARE_CLOCKWORK_LAUNCHERS(T)                                                     \
  /* The forward: a block per batch row, the time loop inside, a thread per hidden unit. */      \
  void launch_clockwork_forward(const ClockworkArgs<T>& a, void* stream);                        \
  /* The backward's time loop (d_pre and d h0; the glue adds d W_hh by GEMMs): the same grid. */ \
  void launch_clockwork_backward(const ClockworkArgs<T>& a, void* stream);
PYSEQ_DECLARE_CLOCKWORK_LAUNCHERS(float)
PYSEQ_DECLARE_CLOCKWORK_LAUNCHERS(double)
#undef PYSEQ_DECLARE_CLOCKWORK_LAUNCHERS

}  // namespace pyseq
