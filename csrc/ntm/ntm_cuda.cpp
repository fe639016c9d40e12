// The NTM memory ops on CUDA: the glue between the ops and the kernels of ntm_cuda.cu (device-generic ATen only, so
// that it builds against a CPU torch too; see CMakeLists.txt). The ops' schedule (checks, outputs, argument structs)
// is ntm_schedule.h's, shared with the CPU kernels, which run the same row functions (ntm_rows.h) in loops; the CUDA
// path adds only the kernels' thread indexing and block reductions. 16-bit inputs are computed in float32.
#include "ntm_cuda.h"

#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <tuple>

#include "../common/cuda_glue.h"
#include "../common/float32_compute.h"
#include "ntm.h"
#include "ntm_schedule.h"

namespace pyseq {
namespace {

// The per-row work of each phase (ntm_schedule.h) as kernels on the current stream of the memory's device.
struct CudaKernels {
  at::Tensor memory;
  void* stream;

  explicit CudaKernels(const at::Tensor& m) : memory(m), stream(cuda_stream_of(m, "memory")) {}
  c10::DeviceType device() const { return kGlueDevice; }

  template <typename T>
  at::Tensor scratch(const NtmAddressArgs<T>& a) const {
    return at::empty({a.B, kNtmHeadVectors, a.N}, memory.options());
  }
  template <typename T>
  void address(const NtmAddressArgs<T>& a) const {
    const at::Tensor s = scratch(a);
    launch_ntm_address(a, s.data_ptr<T>(), stream);
    check_kernel_launch("NTM addressing");
  }
  template <typename T>
  void address_backward(const NtmAddressArgs<T>& a) const {
    const at::Tensor s = scratch(a);
    launch_ntm_address_backward(a, s.data_ptr<T>(), stream);
    check_kernel_launch("NTM addressing backward");
  }
  template <typename T>
  void write(const NtmWriteArgs<T>& a) const {
    launch_ntm_write(a, stream);
    check_kernel_launch("NTM write");
  }
  template <typename T>
  void write_backward(const NtmWriteArgs<T>& a) const {
    launch_ntm_write_backward(a, stream);
    check_kernel_launch("NTM write backward");
  }
};

at::Tensor ntm_address_cuda(const at::Tensor& memory, const at::Tensor& key, const at::Tensor& beta,
                            const at::Tensor& gate, const at::Tensor& shift, const at::Tensor& gamma,
                            const at::Tensor& prev_weights) {
  const c10::DeviceGuard guard(memory.device());
  return ntm_address_on(CudaKernels(memory), memory, key, beta, gate, shift, gamma, prev_weights);
}

NtmAddressGradients ntm_address_backward_cuda(const at::Tensor& grad_weights, const at::Tensor& memory,
                                              const at::Tensor& key, const at::Tensor& beta, const at::Tensor& gate,
                                              const at::Tensor& shift, const at::Tensor& gamma,
                                              const at::Tensor& prev_weights) {
  const c10::DeviceGuard guard(memory.device());
  return ntm_address_backward_on(CudaKernels(memory), grad_weights, memory, key, beta, gate, shift, gamma,
                                 prev_weights);
}

at::Tensor ntm_write_cuda(const at::Tensor& memory, const at::Tensor& weights, const at::Tensor& erase,
                          const at::Tensor& add) {
  const c10::DeviceGuard guard(memory.device());
  return ntm_write_on(CudaKernels(memory), memory, weights, erase, add);
}

NtmWriteGradients ntm_write_backward_cuda(const at::Tensor& grad_memory, const at::Tensor& memory,
                                          const at::Tensor& weights, const at::Tensor& erase, const at::Tensor& add) {
  const c10::DeviceGuard guard(memory.device());
  return ntm_write_backward_on(CudaKernels(memory), grad_memory, memory, weights, erase, add);
}

}  // namespace
}  // namespace pyseq

PYSEQ_CUDA_LIBRARY_IMPL(m) {
  m.impl("ntm_address", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::ntm_address_cuda));
  m.impl("ntm_address_backward", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::ntm_address_backward_cuda));
  m.impl("ntm_write", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::ntm_write_cuda));
  m.impl("ntm_write_backward", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::ntm_write_backward_cuda));
  // The step: the composite of the ops above and ATen ops (ntm_step.cpp; the CPU has a fused kernel).
  m.impl("ntm_step", &pyseq::ntm_step_composite);
  m.impl("ntm_step_backward", &pyseq::ntm_step_backward_composite);
}
