// Helpers of the CUDA glue files (<family>_cuda.cpp): device-generic c10 only, so that they build against a CPU torch
// (see CMakeLists.txt). Included only where PYSEQ_WITH_CUDA is defined.
//
// In the emulation build (PYSEQ_CUDA_EMULATION, make cuda-emulate) the glue runs on CPU tensors and launches the
// kernels on the CPU through the emulator: its ops are registered as pyseq_emulated::<op> with the schemas of
// pyseq::<op> (pyseq/cuda_emulation.py defines them), and pyseq's own CPU and CUDA registrations stay as they are.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/library.h>

#include "cuda_info.h"

// Registers a family's CUDA kernels: TORCH_LIBRARY_IMPL(pyseq, CUDA, m), or in the emulation build the same kernels
// for CPU tensors as pyseq_emulated::<op>.
#if defined(PYSEQ_CUDA_EMULATION)
#define PYSEQ_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(pyseq_emulated, CPU, m)
#else
#define PYSEQ_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(pyseq, CUDA, m)
#endif

namespace pyseq {

// The device type of the tensors the glue receives: CUDA, or the CPU in the emulation build.
#if defined(PYSEQ_CUDA_EMULATION)
constexpr c10::DeviceType kGlueDevice = c10::kCPU;
#else
constexpr c10::DeviceType kGlueDevice = c10::kCUDA;
#endif

// The stream of `first`, the tensor that decides the device: the dispatcher picks a CUDA kernel when any tensor
// argument is on CUDA, so `first` may still be a CPU tensor, which is torch's mixed-device error. (The emulator has
// one stream, nullptr.)
inline void* cuda_stream_of(const at::Tensor& first, const char* name) {
  TORCH_CHECK(first.device().type() == kGlueDevice, "Expected all tensors to be on the same device, but found ", name,
              " on ", first.device(), " and other arguments on ", c10::DeviceTypeName(kGlueDevice, true));
#if defined(PYSEQ_CUDA_EMULATION)
  return nullptr;
#else
  return c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->getStream(first.device()).native_handle();
#endif
}

// Raises when the last kernel launch on this thread failed (a bad configuration, no kernel image for this GPU).
inline void check_kernel_launch(const char* kernel) {
  const char* error = cuda_last_error();
  TORCH_CHECK(error == nullptr, "pyseq: the ", kernel, " kernel failed to launch: ", error);
}

}  // namespace pyseq
