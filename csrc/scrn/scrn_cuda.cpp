// The SCRN on CUDA: the glue between the ops and the kernels of scrn_cuda.cu and the Clockwork RNN's
// (device-generic ATen only, so that it builds against a CPU torch too; see CMakeLists.txt). The ops' schedule is
// scrn_schedule.h's, shared with the CPU kernels. 16-bit inputs are computed in float32. (In the emulation build the
// same glue runs on CPU tensors, the kernels through the CUDA emulator: cuda_glue.h.)
#include "scrn_cuda.h"

#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <tuple>

#include "../clockwork/clockwork_cuda_kernels.h"
#include "../common/float32_compute.h"
#include "scrn_schedule.h"

namespace pyseq {
namespace {

struct ScrnCudaKernels : ClockworkCudaKernels {
  using ClockworkCudaKernels::ClockworkCudaKernels;

  template <typename T>
  void context(const ScrnContextArgs<T>& a, T* s_n) const {
    launch_scrn_context(a, s_n, stream);
    check_kernel_launch("SCRN context");
  }
  template <typename T>
  void context_backward(const ScrnContextArgs<T>& a) const {
    launch_scrn_context_backward(a, stream);
    check_kernel_launch("SCRN context backward");
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> scrn_cuda(
    const at::Tensor& input_proj, const at::Tensor& context_proj, const at::Tensor& h0, const at::Tensor& s0,
    const at::Tensor& w_hh, const at::Tensor& w_ch, double alpha, const at::Tensor& lengths, bool sigmoid) {
  const c10::DeviceGuard guard(input_proj.device());
  return scrn_on(ScrnCudaKernels(input_proj, "input_proj"), input_proj, context_proj, h0, s0, w_hh, w_ch, alpha,
                 lengths, sigmoid);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> scrn_backward_cuda(
    const at::Tensor& grad_hidden, const at::Tensor& grad_context, const at::Tensor& grad_h_n,
    const at::Tensor& grad_s_n, const at::Tensor& hidden, const at::Tensor& context, const at::Tensor& h0,
    const at::Tensor& s0, const at::Tensor& w_hh, const at::Tensor& w_ch, double alpha, const at::Tensor& lengths,
    bool sigmoid) {
  const c10::DeviceGuard guard(hidden.device());
  return scrn_backward_on(ScrnCudaKernels(hidden, "hidden"), grad_hidden, grad_context, grad_h_n, grad_s_n, hidden,
                          context, h0, s0, w_hh, w_ch, alpha, lengths, sigmoid);
}

}  // namespace
}  // namespace pyseq

PYSEQ_CUDA_LIBRARY_IMPL(m) {
  m.impl("scrn", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::scrn_cuda));
  m.impl("scrn_backward", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::scrn_backward_cuda));
}
