// The SCRN ops registered as torch operators in C++: the schemas, the front functions that call them (scrn_ops.h),
// their autograd and autocast policy. The fake kernels are in Python (pyseq/_ops/scrn.py).
#include "scrn_ops.h"

#include <torch/library.h>

#include <array>
#include <tuple>
#include <vector>

#include "../common/autocast.h"
#include "../common/autograd_kernel.h"
#include "../common/ops.h"

namespace pyseq {

using ScrnResults = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

ScrnResults scrn(const at::Tensor& input_proj, const at::Tensor& context_proj, const at::Tensor& h0,
                 const at::Tensor& s0, const at::Tensor& w_hh, const at::Tensor& w_ch, double alpha,
                 const at::Tensor& lengths, bool sigmoid) {
  PYSEQ_CALL_OP(scrn, input_proj, context_proj, h0, s0, w_hh, w_ch, alpha, lengths, sigmoid);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> scrn_backward(
    const at::Tensor& grad_hidden, const at::Tensor& grad_context, const at::Tensor& grad_h_n,
    const at::Tensor& grad_s_n, const at::Tensor& hidden, const at::Tensor& context, const at::Tensor& h0,
    const at::Tensor& s0, const at::Tensor& w_hh, const at::Tensor& w_ch, double alpha, const at::Tensor& lengths,
    bool sigmoid) {
  PYSEQ_CALL_OP(scrn_backward, grad_hidden, grad_context, grad_h_n, grad_s_n, hidden, context, h0, s0, w_hh, w_ch,
                alpha, lengths, sigmoid);
}

namespace {

// The layer as differentiable ATen ops, one step after another, for backward with create_graph and for torch.func
// (csrc/common/double_backward.h). Arguments as the op's.
ScrnResults scrn_composite(const at::Tensor& input_proj, const at::Tensor& context_proj, const at::Tensor& h0,
                           const at::Tensor& s0, const at::Tensor& w_hh, const at::Tensor& w_ch, double alpha,
                           const at::Tensor& lengths, bool sigmoid) {
  const int64_t T = input_proj.size(0);
  const at::Tensor running_until = lengths.to(input_proj.device()).unsqueeze(1);  // [B, 1]
  at::Tensor h = h0, s = s0;
  std::vector<at::Tensor> hidden, context;
  for (int64_t t = 0; t < T; ++t) {
    const at::Tensor running = running_until > t;
    s = at::where(running, (1 - alpha) * context_proj.select(0, t) + alpha * s, s);
    const at::Tensor pre = input_proj.select(0, t) + at::mm(s, w_ch.t()) + at::mm(h, w_hh.t());
    h = at::where(running, sigmoid ? at::sigmoid(pre) : at::tanh(pre), h);
    hidden.push_back(at::where(running, h, 0));
    context.push_back(at::where(running, s, 0));
  }
  return {T > 0 ? at::stack(hidden) : at::empty_like(input_proj),
          T > 0 ? at::stack(context) : at::empty_like(context_proj), h, s};
}

// With respect to input_proj, context_proj, h0, s0, w_hh and w_ch.
struct ScrnDerivative {
  static constexpr auto forward = &scrn;
  static constexpr std::array<size_t, 6> kDifferentiable{0, 1, 2, 3, 4, 5};

  static void save(AutogradContext* ctx, const ScrnResults& results, const at::Tensor& input_proj,
                   const at::Tensor& context_proj, const at::Tensor& h0, const at::Tensor& s0, const at::Tensor& w_hh,
                   const at::Tensor& w_ch, double alpha, const at::Tensor& lengths, bool sigmoid) {
    const auto& [hidden, context, h_n, s_n] = results;
    // the projections only for the composite backward: the kernels' backward needs the states, not the inputs
    ctx->save_for_backward({input_proj, context_proj, h0, s0, w_hh, w_ch, lengths, hidden, context, h_n, s_n});
    ctx->saved_data["alpha"] = alpha;
    ctx->saved_data["sigmoid"] = sigmoid;
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const variable_list s = ctx->get_saved_variables();
    variable_list g(4);
    for (size_t k = 0; k < 4; ++k) g[k] = grads[k].defined() ? grads[k] : at::zeros_like(s[7 + k]);
    auto [d_input_proj, d_context_proj, d_h0, d_s0, d_w_hh, d_w_ch] =
        scrn_backward(g[0], g[1], g[2], g[3], s[7], s[8], s[2], s[3], s[4], s[5], ctx->saved_data["alpha"].toDouble(),
                      s[6], ctx->saved_data["sigmoid"].toBool());
    return {d_input_proj, d_context_proj, d_h0, d_s0, d_w_hh, d_w_ch};
  }

  static variable_list backward_composite(AutogradContext* ctx, const variable_list& grads) {
    const variable_list s = ctx->get_saved_variables();
    const double alpha = ctx->saved_data["alpha"].toDouble();
    const bool sigmoid = ctx->saved_data["sigmoid"].toBool();
    return differentiable_vjp(grads, {s[0], s[1], s[2], s[3], s[4], s[5]}, [&](const auto& in) {
      auto [hidden, context, h_n, s_n] = scrn_composite(in[0], in[1], in[2], in[3], in[4], in[5], alpha, s[6], sigmoid);
      return variable_list{hidden, context, h_n, s_n};
    });
  }

  static constexpr auto composite = &scrn_composite;
};

}  // namespace
}  // namespace pyseq

TORCH_LIBRARY_FRAGMENT(pyseq, m) {
  m.def(
      "scrn(Tensor input_proj, Tensor context_proj, Tensor h0, Tensor s0, Tensor w_hh, Tensor w_ch, float alpha, "
      "Tensor lengths, bool sigmoid) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "scrn_backward(Tensor grad_hidden, Tensor grad_context, Tensor grad_h_n, Tensor grad_s_n, Tensor hidden, "
      "Tensor context, Tensor h0, Tensor s0, Tensor w_hh, Tensor w_ch, float alpha, Tensor lengths, bool sigmoid) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pyseq, Autograd, m) { m.impl("scrn", PYSEQ_AUTOGRAD_KERNEL(pyseq::ScrnDerivative)); }

// Under autocast the layer runs in the autocast dtype, as torch.nn's recurrent layers do (csrc/common/autocast.h);
// its backward below autocast.
namespace {
const pyseq::AutocastOps kAutocastOps{{"scrn"}, {}, {"scrn_backward"}};
}
PYSEQ_REGISTER_AUTOCAST(kAutocastOps)
