// The Clockwork RNN on CUDA: the glue between the ops and the kernels of clockwork_cuda.cu (device-generic ATen
// only, so that it builds against a CPU torch too; see CMakeLists.txt). The ops' schedule (checks, outputs, argument
// struct, the recurrent weights' gradient by GEMMs) is clockwork_schedule.h's, shared with the CPU kernels. 16-bit
// inputs are computed in float32. (In the emulation build the same glue runs on CPU tensors, the kernels through the
// CUDA emulator: cuda_glue.h.)
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <tuple>

#include "../common/float32_compute.h"
#include "clockwork_cuda_kernels.h"
#include "clockwork_schedule.h"

namespace pyseq {
namespace {

std::tuple<at::Tensor, at::Tensor> clockwork_rnn_cuda(const at::Tensor& input_proj, const at::Tensor& h0,
                                                      const at::Tensor& w_hh, at::IntArrayRef periods,
                                                      const at::Tensor& lengths, bool relu) {
  const c10::DeviceGuard guard(input_proj.device());
  return clockwork_rnn_on(ClockworkCudaKernels(input_proj, "input_proj"), input_proj, h0, w_hh, periods, lengths, relu);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> clockwork_rnn_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& output, const at::Tensor& h0,
    const at::Tensor& w_hh, at::IntArrayRef periods, const at::Tensor& lengths, bool relu) {
  const c10::DeviceGuard guard(output.device());
  return clockwork_rnn_backward_on(ClockworkCudaKernels(output, "output"), grad_output, grad_h_n, output, h0, w_hh,
                                   periods, lengths, relu);
}

}  // namespace
}  // namespace pyseq

PYSEQ_CUDA_LIBRARY_IMPL(m) {
  m.impl("clockwork_rnn", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::clockwork_rnn_cuda));
  m.impl("clockwork_rnn_backward", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::clockwork_rnn_backward_cuda));
}
