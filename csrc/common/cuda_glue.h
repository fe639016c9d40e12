// Helpers of the CUDA glue files (<family>_cuda.cpp): device-generic c10 only, so that they build against a CPU torch
// (see CMakeLists.txt). Included only where PYSEQ_WITH_CUDA is defined.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include "cuda_info.h"

namespace pyseq {

// The cudaStream_t of the current stream of t's device, for the launchers.
inline void* current_cuda_stream(const at::Tensor& t) {
  return c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->getStream(t.device()).native_handle();
}

// The stream of `first`, the tensor that decides the device: the dispatcher picks a CUDA kernel when any tensor
// argument is on CUDA, so `first` may still be a CPU tensor, which is torch's mixed-device error.
inline void* cuda_stream_of(const at::Tensor& first, const char* name) {
  TORCH_CHECK(first.is_cuda(), "Expected all tensors to be on the same device, but found ", name, " on ",
              first.device(), " and other arguments on CUDA");
  return current_cuda_stream(first);
}

// Raises when the last kernel launch on this thread failed (a bad configuration, no kernel image for this GPU).
inline void check_kernel_launch(const char* kernel) {
  const char* error = cuda_last_error();
  TORCH_CHECK(error == nullptr, "pyseq: the ", kernel, " kernel failed to launch: ", error);
}

}  // namespace pyseq
