// The Clockwork RNN's CUDA time loops (clockwork_cuda.cu) as the `Kernels` of clockwork_schedule.h, for the glue of
// the Clockwork RNN's ops and of the SCRN's (csrc/scrn). Glue-side: device-generic ATen only (cuda_glue.h).
#pragma once

#include <ATen/ATen.h>

#include "../common/cuda_glue.h"
#include "clockwork_cuda.h"

namespace pyseq {

// The kernels on the current stream of `first`'s device.
struct ClockworkCudaKernels {
  void* stream;
  ClockworkCudaKernels(const at::Tensor& first, const char* name) : stream(cuda_stream_of(first, name)) {}
  c10::DeviceType device() const { return kGlueDevice; }
  at::Tensor lengths_on_device(const at::Tensor& lengths, const at::Tensor& like) const {
    return lengths.to(like.device());
  }

  template <typename T>
  void forward(const ClockworkArgs<T>& a) const {
    check_shared(a);
    launch_clockwork_forward(a, stream);
    check_kernel_launch("clockwork forward");
  }
  template <typename T>
  void backward(const ClockworkArgs<T>& a) const {
    check_shared(a);
    launch_clockwork_backward(a, stream);
    check_kernel_launch("clockwork backward");
  }
  template <typename T>
  static void check_shared(const ClockworkArgs<T>& a) {
    TORCH_CHECK_VALUE(3 * a.H * sizeof(T) <= kClockworkCudaSharedBytes, "the CUDA clockwork kernels take at most ",
                      kClockworkCudaSharedBytes / (3 * sizeof(T)), " hidden units in this dtype, got ", a.H);
  }
};

}  // namespace pyseq
