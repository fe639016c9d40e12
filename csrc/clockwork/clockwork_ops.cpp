// The Clockwork RNN ops registered as torch operators in C++: the schemas, the front functions that call them
// (clockwork_ops.h), their autograd and autocast policy. The fake kernels are in Python (pyseq/_ops/clockwork.py).
#include "clockwork_ops.h"

#include <torch/library.h>

#include <array>
#include <tuple>
#include <vector>

#include "../common/autocast.h"
#include "../common/autograd_kernel.h"
#include "../common/ops.h"

namespace pyseq {

std::tuple<at::Tensor, at::Tensor> clockwork_rnn(const at::Tensor& input_proj, const at::Tensor& h0,
                                                 const at::Tensor& w_hh, at::IntArrayRef periods,
                                                 const at::Tensor& lengths, bool relu) {
  PYSEQ_CALL_OP(clockwork_rnn, input_proj, h0, w_hh, periods, lengths, relu);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> clockwork_rnn_backward(const at::Tensor& grad_output,
                                                                      const at::Tensor& grad_h_n,
                                                                      const at::Tensor& output, const at::Tensor& h0,
                                                                      const at::Tensor& w_hh, at::IntArrayRef periods,
                                                                      const at::Tensor& lengths, bool relu) {
  PYSEQ_CALL_OP(clockwork_rnn_backward, grad_output, grad_h_n, output, h0, w_hh, periods, lengths, relu);
}

namespace {

// The layer as differentiable ATen ops, for backward with create_graph and for torch.func
// (csrc/common/double_backward.h): the masked recurrent matrix, then one step after another. Arguments as the op's.
std::tuple<at::Tensor, at::Tensor> clockwork_composite(const at::Tensor& input_proj, const at::Tensor& h0,
                                                       const at::Tensor& w_hh, at::IntArrayRef periods,
                                                       const at::Tensor& lengths, bool relu) {
  const int64_t T = input_proj.size(0), H = input_proj.size(2), modules = static_cast<int64_t>(periods.size());
  const auto long_options = at::TensorOptions().dtype(at::kLong).device(input_proj.device());
  // period of each unit [H]; W_hh[u, c] is read when period(c) >= period(u)
  // (built from factories, not from host data: a torch.func transform may wrap the tensors the composite makes)
  std::vector<at::Tensor> module_periods;
  for (const int64_t p : periods) module_periods.push_back(at::full({H / modules}, p, long_options));
  const at::Tensor unit_period = at::cat(module_periods);
  const at::Tensor w = w_hh * (unit_period.unsqueeze(0) >= unit_period.unsqueeze(1)).to(w_hh.scalar_type());
  const at::Tensor running_until = lengths.to(input_proj.device()).unsqueeze(1);  // [B, 1]
  at::Tensor h = h0;
  std::vector<at::Tensor> outputs;
  for (int64_t t = 0; t < T; ++t) {
    const at::Tensor pre = input_proj.select(0, t) + at::mm(h, w.t());
    const at::Tensor stepped =
        at::where(at::remainder(t, unit_period).eq(0).unsqueeze(0), relu ? at::relu(pre) : at::tanh(pre), h);
    const at::Tensor running = running_until > t;
    h = at::where(running, stepped, h);
    outputs.push_back(at::where(running, h, 0));
  }
  const at::Tensor output = T > 0 ? at::stack(outputs) : at::empty_like(input_proj);
  return {output, h};
}

// With respect to input_proj, h0 and w_hh.
struct ClockworkDerivative {
  static constexpr auto forward = &clockwork_rnn;
  static constexpr std::array<size_t, 3> kDifferentiable{0, 1, 2};

  static void save(AutogradContext* ctx, const std::tuple<at::Tensor, at::Tensor>& results,
                   const at::Tensor& input_proj, const at::Tensor& h0, const at::Tensor& w_hh, at::IntArrayRef periods,
                   const at::Tensor& lengths, bool relu) {
    // input_proj only for the composite backward: the kernels' backward needs the outputs, not the inputs.
    ctx->save_for_backward({input_proj, h0, w_hh, lengths, std::get<0>(results), std::get<1>(results)});
    ctx->saved_data["periods"] = periods.vec();
    ctx->saved_data["relu"] = relu;
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const variable_list s = ctx->get_saved_variables();
    const at::Tensor& output = s[4];
    const at::Tensor grad_output = grads[0].defined() ? grads[0] : at::zeros_like(output);
    const at::Tensor grad_h_n = grads[1].defined() ? grads[1] : at::zeros_like(s[5]);
    auto [d_input_proj, d_h0, d_w_hh] =
        clockwork_rnn_backward(grad_output, grad_h_n, output, s[1], s[2], ctx->saved_data["periods"].toIntVector(),
                               s[3], ctx->saved_data["relu"].toBool());
    return {d_input_proj, d_h0, d_w_hh};
  }

  static variable_list backward_composite(AutogradContext* ctx, const variable_list& grads) {
    const variable_list s = ctx->get_saved_variables();
    const std::vector<int64_t> periods = ctx->saved_data["periods"].toIntVector();
    const bool relu = ctx->saved_data["relu"].toBool();
    return differentiable_vjp(grads, {s[0], s[1], s[2]}, [&](const auto& in) {
      auto [output, h_n] = clockwork_composite(in[0], in[1], in[2], periods, s[3], relu);
      return variable_list{output, h_n};
    });
  }

  static constexpr auto composite = &clockwork_composite;
};

}  // namespace
}  // namespace pyseq

TORCH_LIBRARY_FRAGMENT(pyseq, m) {
  m.def(
      "clockwork_rnn(Tensor input_proj, Tensor h0, Tensor w_hh, int[] periods, Tensor lengths, bool relu) "
      "-> (Tensor, Tensor)");
  m.def(
      "clockwork_rnn_backward(Tensor grad_output, Tensor grad_h_n, Tensor output, Tensor h0, Tensor w_hh, "
      "int[] periods, Tensor lengths, bool relu) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pyseq, Autograd, m) { m.impl("clockwork_rnn", PYSEQ_AUTOGRAD_KERNEL(pyseq::ClockworkDerivative)); }

// Under autocast the layer runs in the autocast dtype, as torch.nn's RNN does (csrc/common/autocast.h); its backward
// below autocast.
namespace {
const pyseq::AutocastOps kAutocastOps{{"clockwork_rnn"}, {}, {"clockwork_rnn_backward"}};
}
PYSEQ_REGISTER_AUTOCAST(kAutocastOps)
