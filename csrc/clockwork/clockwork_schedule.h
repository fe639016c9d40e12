// The Clockwork RNN's device-independent schedule: argument checks, outputs, the argument struct of
// clockwork_elements.h, and the recurrent weights' gradient as GEMMs (device-generic ATen); `Kernels` (CpuKernels:
// clockwork_cpu.cpp; CudaKernels: clockwork_cuda.cpp) runs the time loops.
#pragma once

#include <ATen/ATen.h>

#include <tuple>
#include <vector>

#include "../common/checks.h"
#include "clockwork_elements.h"

namespace pyseq {

// periods: non-decreasing, positive, at most kClockworkMaxModules, dividing H into modules of equal width.
inline void check_periods(at::IntArrayRef periods, int64_t H) {
  const int64_t n = static_cast<int64_t>(periods.size());
  TORCH_CHECK_VALUE(n >= 1 && n <= kClockworkMaxModules, "periods must name 1 to ", kClockworkMaxModules,
                    " modules, got ", n);
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK_VALUE(periods[i] >= 1, "periods must be positive, got ", periods[i], " for module ", i);
    TORCH_CHECK_VALUE(i == 0 || periods[i] >= periods[i - 1],
                      "periods must be in non-decreasing order (the fastest modules first), got ", periods);
  }
  TORCH_CHECK_VALUE(H % n == 0, "hidden_size (", H, ") must be divisible by the number of modules (", n, ")");
}

// input_proj [T, B, H], h0 [B, H], w_hh [H, H], lengths [B] int64 on the CPU. Returns the lengths.
inline std::vector<int64_t> check_clockwork(const at::Tensor& input_proj, const at::Tensor& h0, const at::Tensor& w_hh,
                                            at::IntArrayRef periods, const at::Tensor& lengths,
                                            c10::DeviceType device) {
  check_dim(input_proj, "input_proj", 3, "(T, batch, hidden_size)");
  check_floating(input_proj, "input_proj");
  check_device_type(input_proj, "input_proj", device);
  const int64_t T = input_proj.size(0), B = input_proj.size(1), H = input_proj.size(2);
  check_shape(h0, "h0", {B, H});
  check_like(h0, "h0", input_proj, "input_proj");
  check_shape(w_hh, "weight_hh", {H, H});
  check_like(w_hh, "weight_hh", input_proj, "input_proj");
  check_periods(periods, H);
  return read_lengths(lengths, "lengths", B, T, "T = " + std::to_string(T));
}

// The inputs contiguous and the periods in the argument struct, kept alive while the kernels run.
struct ClockworkInputs {
  at::Tensor h0, w_hh, lengths;
  at::IntArrayRef periods;
  int64_t T, B, H;
  ClockworkInputs(const at::Tensor& input_proj, const at::Tensor& h0_, const at::Tensor& w_hh_,
                  at::IntArrayRef periods_, const at::Tensor& lengths_on_device)
      : h0(h0_.contiguous()),
        w_hh(w_hh_.contiguous()),
        lengths(lengths_on_device.contiguous()),
        periods(periods_),
        T(input_proj.size(0)),
        B(input_proj.size(1)),
        H(input_proj.size(2)) {}

  template <typename T_>
  ClockworkArgs<T_> args(RecurrentActivation activation) const {
    ClockworkArgs<T_> a{};
    a.steps = T;
    a.B = B;
    a.H = H;
    a.modules = static_cast<int64_t>(periods.size());
    a.width = H / a.modules;
    a.activation = activation;
    for (int64_t i = 0; i < a.modules; ++i) {
      a.periods[i] = periods[i];
      a.first[i] = i > 0 && periods[i] == periods[i - 1] ? a.first[i - 1] : i;
    }
    a.lengths = lengths.data_ptr<int64_t>();
    a.w_hh = w_hh.data_ptr<T_>();
    a.h0 = h0.data_ptr<T_>();
    return a;
  }
};

// The time loop on arguments already checked (the Clockwork RNN's op, and the SCRN's hidden layer: csrc/scrn);
// lengths on the kernels' device. Returns (output [T, B, H], h_n [B, H]).
template <typename Kernels>
std::tuple<at::Tensor, at::Tensor> run_clockwork(const Kernels& kernels, const at::Tensor& input_proj,
                                                 const at::Tensor& h0, const at::Tensor& w_hh, at::IntArrayRef periods,
                                                 const at::Tensor& lengths, RecurrentActivation activation) {
  const ClockworkInputs in(input_proj, h0, w_hh, periods, lengths);
  const at::Tensor xp = input_proj.contiguous();
  at::Tensor output = at::empty(input_proj.sizes(), input_proj.options());
  at::Tensor h_n = at::empty(h0.sizes(), input_proj.options());
  AT_DISPATCH_FLOATING_TYPES(input_proj.scalar_type(), "clockwork_rnn", [&] {
    ClockworkArgs<scalar_t> a = in.args<scalar_t>(activation);
    a.input_proj = xp.data_ptr<scalar_t>();
    a.output = output.data_ptr<scalar_t>();
    a.h_n = h_n.data_ptr<scalar_t>();
    kernels.forward(a);
  });
  return {output, h_n};
}

// Returns (output [T, B, H], h_n [B, H]).
template <typename Kernels>
std::tuple<at::Tensor, at::Tensor> clockwork_rnn_on(const Kernels& kernels, const at::Tensor& input_proj,
                                                    const at::Tensor& h0, const at::Tensor& w_hh,
                                                    at::IntArrayRef periods, const at::Tensor& lengths, bool relu) {
  check_clockwork(input_proj, h0, w_hh, periods, lengths, kernels.device());
  return run_clockwork(kernels, input_proj, h0, w_hh, periods, kernels.lengths_on_device(lengths, input_proj),
                       relu ? RecurrentActivation::Relu : RecurrentActivation::Tanh);
}

// The backward of run_clockwork on arguments already checked: grad_output [T, B, H], grad_h_n [B, H]; output: the
// forward's. Returns the gradients of (input_proj, h0, w_hh); w_hh's is 0 on the entries the layer does not read.
template <typename Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor> run_clockwork_backward(
    const Kernels& kernels, const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& output,
    const at::Tensor& h0, const at::Tensor& w_hh, at::IntArrayRef periods, const at::Tensor& lengths,
    RecurrentActivation activation) {
  const ClockworkInputs in(output, h0, w_hh, periods, lengths);
  const at::Tensor y = output.contiguous(), gy = grad_output.contiguous(), ghn = grad_h_n.contiguous();
  at::Tensor d_pre = at::empty(output.sizes(), output.options());
  at::Tensor d_h0 = at::empty(h0.sizes(), output.options());
  AT_DISPATCH_FLOATING_TYPES(output.scalar_type(), "clockwork_rnn_backward", [&] {
    ClockworkArgs<scalar_t> a = in.args<scalar_t>(activation);
    a.output = y.data_ptr<scalar_t>();
    a.grad_output = gy.data_ptr<scalar_t>();
    a.grad_h_n = ghn.data_ptr<scalar_t>();
    a.grad_input_proj = d_pre.data_ptr<scalar_t>();
    a.grad_h0 = d_h0.data_ptr<scalar_t>();
    kernels.backward(a);
  });
  // d W_hh[units of i, columns from first[i]] = sum over the steps t that i runs of d_pre[t, :, units]^T
  // h_{t-1}[:, columns]: per period (its modules' rows are contiguous and read the same columns), the step 0 term with
  // h0, then one GEMM over the steps t = p, 2p, ... (strided views of d_pre and of output, h_{t-1} = output[t-1]
  // while a row runs, which is all that d_pre reaches: a finished row's d_pre is 0).
  const int64_t T = in.T, B = in.B, H = in.H, modules = static_cast<int64_t>(periods.size()), width = H / modules;
  at::Tensor d_w_hh = at::zeros({H, H}, output.options());
  for (int64_t i = 0; i < modules && T > 0;) {
    int64_t end = i;
    while (end < modules && periods[end] == periods[i]) ++end;
    const int64_t p = periods[i], rows = (end - i) * width, col0 = i * width, later = (T - 1) / p;
    at::Tensor block = d_w_hh.narrow(0, col0, rows).narrow(1, col0, H - col0);
    block.addmm_(d_pre.select(0, 0).narrow(1, col0, rows).t(), in.h0.narrow(1, col0, H - col0));
    if (later > 0) {
      const at::Tensor dp = d_pre.slice(0, p, T, p).narrow(2, col0, rows).reshape({later * B, rows});
      const at::Tensor hp = y.slice(0, p - 1, T - 1, p).narrow(2, col0, H - col0).reshape({later * B, H - col0});
      block.addmm_(dp.t(), hp);
    }
    i = end;
  }
  return {d_pre, d_h0, d_w_hh};
}

// grad_output [T, B, H], grad_h_n [B, H]; output: the forward's. Returns the gradients of (input_proj, h0, w_hh).
template <typename Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor> clockwork_rnn_backward_on(
    const Kernels& kernels, const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& output,
    const at::Tensor& h0, const at::Tensor& w_hh, at::IntArrayRef periods, const at::Tensor& lengths, bool relu) {
  check_clockwork(output, h0, w_hh, periods, lengths, kernels.device());
  check_shape(grad_output, "grad_output", output.sizes().vec());
  check_like(grad_output, "grad_output", output, "output");
  check_shape(grad_h_n, "grad_h_n", h0.sizes().vec());
  check_like(grad_h_n, "grad_h_n", output, "output");
  return run_clockwork_backward(kernels, grad_output, grad_h_n, output, h0, w_hh, periods,
                                kernels.lengths_on_device(lengths, output),
                                relu ? RecurrentActivation::Relu : RecurrentActivation::Tanh);
}

}  // namespace pyseq
