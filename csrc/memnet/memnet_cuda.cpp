// Memory networks on CUDA: the glue between the ops and the kernels of memnet_cuda.cu (device-generic ATen only, so
// that it builds against a CPU torch too; see CMakeLists.txt). The ops' schedule (checks, outputs, argument structs,
// the table gradient's sort, the H gradient's GEMM) is memnet_schedule.h's, shared with the CPU kernels. 16-bit
// inputs are computed in float32. (In the emulation build the same glue runs on CPU tensors, the kernels through the
// CUDA emulator: cuda_glue.h.)
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "../common/cuda_glue.h"
#include "../common/float32_compute.h"
#include "memnet_cuda.h"
#include "memnet_schedule.h"

namespace pyseq {
namespace {

// The per-element work (memnet_schedule.h) as kernels on the current stream of `first`'s device.
struct CudaKernels {
  void* stream;
  CudaKernels(const at::Tensor& first, const char* name) : stream(cuda_stream_of(first, name)) {}
  c10::DeviceType device() const { return kGlueDevice; }

  template <typename T>
  void bag(const BagArgs<T>& a) const {
    launch_bag(a, stream);
    check_kernel_launch("position-encoded bag");
  }
  template <typename T>
  void bag_weight_gradients(const BagArgs<T>& a) const {
    launch_bag_weight_gradients(a, stream);
    check_kernel_launch("position-encoded bag weight gradient");
  }
  template <typename T>
  void bag_table_gradient(const BagTableGradientArgs<T>& a) const {
    launch_bag_table_gradient(a, stream);
    check_kernel_launch("position-encoded bag table gradient");
  }
  template <typename T>
  void hops(const HopArgs<T>& a) const {
    check_sentences(a.S);
    launch_hops(a, stream);
    check_kernel_launch("memory hops");
  }
  template <typename T>
  void hops_backward(const HopArgs<T>& a) const {
    check_sentences(a.S);
    launch_hops_backward(a, stream);
    check_kernel_launch("memory hops backward");
  }
  static void check_sentences(int64_t S) {
    TORCH_CHECK_VALUE(S <= kMemnetCudaMaxSentences, "the CUDA memory-hop kernels take at most ",
                      kMemnetCudaMaxSentences, " sentences, got ", S);
  }
};

at::Tensor position_encoded_bag_cuda(const at::Tensor& table, const at::Tensor& indices, const at::Tensor& weights,
                                     const at::Tensor& lengths) {
  const c10::DeviceGuard guard(table.device());
  return position_encoded_bag_on(CudaKernels(table, "table"), table, indices, weights, lengths);
}

std::tuple<at::Tensor, at::Tensor> position_encoded_bag_backward_cuda(const at::Tensor& grad, const at::Tensor& table,
                                                                      const at::Tensor& indices,
                                                                      const at::Tensor& weights,
                                                                      const at::Tensor& lengths) {
  const c10::DeviceGuard guard(table.device());
  return position_encoded_bag_backward_on(CudaKernels(table, "table"), grad, table, indices, weights, lengths);
}

std::tuple<at::Tensor, at::Tensor> memory_hops_cuda(const at::Tensor& u, const at::Tensor& memory_in,
                                                    const at::Tensor& memory_out,
                                                    const std::optional<at::Tensor>& mask, int64_t hops,
                                                    const std::optional<at::Tensor>& H, bool softmax) {
  const c10::DeviceGuard guard(u.device());
  return memory_hops_on(CudaKernels(u, "u"), u, memory_in, memory_out, mask, hops, H, softmax);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> memory_hops_backward_cuda(
    const at::Tensor& grad_states, const std::optional<at::Tensor>& grad_weights, const at::Tensor& memory_in,
    const at::Tensor& memory_out, const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& H,
    const at::Tensor& states, const at::Tensor& weights, bool softmax) {
  const c10::DeviceGuard guard(states.device());
  return memory_hops_backward_on(CudaKernels(states, "states"), grad_states, grad_weights, memory_in, memory_out,
                                 mask, H, states, weights, softmax);
}

}  // namespace
}  // namespace pyseq

PYSEQ_CUDA_LIBRARY_IMPL(m) {
  m.impl("position_encoded_bag", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::position_encoded_bag_cuda));
  m.impl("position_encoded_bag_backward", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::position_encoded_bag_backward_cuda));
  m.impl("memory_hops", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::memory_hops_cuda));
  m.impl("memory_hops_backward", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::memory_hops_backward_cuda));
}
