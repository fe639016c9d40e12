// The attention ops registered as torch operators in C++ with their autograd kernels, for the reason given in
// csrc/crf/crf_ops.cpp: a decoder step calls attention once per output token, and the Python custom-op wrapper's
// per-call cost (forward and backward) was 5-20% of a step. The fake kernels stay in Python
// (pyseq/_ops/attention.py).
#include <torch/autograd.h>
#include <torch/library.h>

#include <limits>
#include <optional>
#include <tuple>

#include "../common/autocast.h"
#include "../common/double_backward.h"
#include "../common/float32_compute.h"
#include "../common/ops.h"
#include "attention.h"

namespace pyseq {
namespace {

using Outputs = std::tuple<at::Tensor, at::Tensor>;
using Optional = std::optional<at::Tensor>;

at::Tensor or_undefined(const Optional& t) { return t ? *t : at::Tensor(); }

Outputs additive_cpu(const at::Tensor& query_proj, const at::Tensor& key_proj, const at::Tensor& v,
                     const at::Tensor& value, const Optional& mask, const Optional& key_exp2x,
                     const Optional& key_maxabs) {
  std::vector<at::Tensor> out = additive_attention_forward_cpu(query_proj, key_proj, v, value, or_undefined(mask),
                                                               or_undefined(key_exp2x), or_undefined(key_maxabs));
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> additive_backward_cpu(
    const at::Tensor& grad_context, const Optional& grad_weights, const at::Tensor& query_proj,
    const at::Tensor& key_proj, const at::Tensor& v, const at::Tensor& value, const at::Tensor& weights,
    const Optional& key_exp2x, const Optional& key_maxabs) {
  std::vector<at::Tensor> g =
      additive_attention_backward_cpu(grad_context, or_undefined(grad_weights), query_proj, key_proj, v, value, weights,
                                      or_undefined(key_exp2x), or_undefined(key_maxabs));
  return {g[0], g[1], g[2], g[3]};
}

Outputs dot_cpu(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value, const Optional& mask,
                double scale) {
  std::vector<at::Tensor> out = dot_attention_forward_cpu(query, key, value, or_undefined(mask), scale);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dot_backward_cpu(const at::Tensor& grad_context,
                                                                const Optional& grad_weights, const at::Tensor& query,
                                                                const at::Tensor& key, const at::Tensor& value,
                                                                const at::Tensor& weights, double scale) {
  std::vector<at::Tensor> g =
      dot_attention_backward_cpu(grad_context, or_undefined(grad_weights), query, key, value, weights, scale);
  return {g[0], g[1], g[2]};
}

// The incoming gradients of (context, weights): either may be undefined; a missing context gradient is zero.
std::pair<at::Tensor, Optional> incoming(const torch::autograd::variable_list& grads, const at::Tensor& weights,
                                         const at::Tensor& value) {
  at::Tensor grad_context = grads[0].defined()
                                ? grads[0].contiguous()
                                : at::zeros({weights.size(0), weights.size(1), value.size(2)}, weights.options());
  return {grad_context, grads[1].defined() ? Optional(grads[1].contiguous()) : std::nullopt};
}

Optional optional_of(const at::Tensor& t) { return t.defined() ? Optional(t) : std::nullopt; }

// The weights and context from scores [B, Tq, Tk] as differentiable ATen ops (csrc/common/double_backward.h): masked
// keys get weight 0, a query whose keys are all masked gets zero weights (no NaN on the way, gradients included).
torch::autograd::variable_list softmax_context_composite(at::Tensor scores, const at::Tensor& mask,
                                                         const at::Tensor& value) {
  at::Tensor weights;
  if (mask.defined()) {
    const at::Tensor attend = (mask.dim() == 2 ? mask.unsqueeze(1) : mask).to(at::kBool).expand_as(scores);
    const at::Tensor any = attend.any(-1, /*keepdim=*/true);
    scores = scores.masked_fill(attend.logical_not(), -std::numeric_limits<double>::infinity())
                 .masked_fill(any.logical_not(), 0);
    weights = scores.softmax(-1) * any;
  } else {
    weights = scores.softmax(-1);
  }
  return {at::bmm(weights, value), weights};
}

// v . tanh(q_i + k_j) as ATen ops (with the [B, Tq, Tk, A] tensor the kernels avoid).
torch::autograd::variable_list additive_composite(const at::Tensor& query_proj, const at::Tensor& key_proj,
                                                  const at::Tensor& v, const at::Tensor& value,
                                                  const at::Tensor& mask) {
  const at::Tensor scores = at::matmul((query_proj.unsqueeze(2) + key_proj.unsqueeze(1)).tanh(), v);
  return softmax_context_composite(scores, mask, value);
}

torch::autograd::variable_list dot_composite(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                                             const at::Tensor& mask, double scale) {
  return softmax_context_composite(at::bmm(query, key.transpose(1, 2)) * scale, mask, value);
}

class Additive : public torch::autograd::Function<Additive> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& query_proj,
                                                const at::Tensor& key_proj, const at::Tensor& v,
                                                const at::Tensor& value, const Optional& mask,
                                                const Optional& key_exp2x, const Optional& key_maxabs) {
    static const auto op = find_op<decltype(additive_cpu)>("pyseq::additive_attention");
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [context, weights] = op.call(query_proj, key_proj, v, value, mask, key_exp2x, key_maxabs);
    ctx->save_for_backward({query_proj, key_proj, v, value, weights, or_undefined(key_exp2x),
                            or_undefined(key_maxabs), or_undefined(mask)});
    ctx->set_materialize_grads(false);
    return {context, weights};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    if (!grads[0].defined() && !grads[1].defined()) return torch::autograd::variable_list(7);
    const torch::autograd::variable_list s = ctx->get_saved_variables();
    if (backward_builds_graph()) {
      torch::autograd::variable_list g = differentiable_vjp(grads, {s[0], s[1], s[2], s[3]}, [&](const auto& in) {
        return additive_composite(in[0], in[1], in[2], in[3], s[7]);
      });
      g.resize(7);
      return g;
    }
    static const auto op = find_op<decltype(additive_backward_cpu)>("pyseq::additive_attention_backward");
    const auto [grad_context, grad_weights] = incoming(grads, s[4], s[3]);
    auto [gq, gk, gv, gvalue] =
        op.call(grad_context, grad_weights, s[0], s[1], s[2], s[3], s[4], optional_of(s[5]), optional_of(s[6]));
    return {gq, gk, gv, gvalue, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class Dot : public torch::autograd::Function<Dot> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& query,
                                                const at::Tensor& key, const at::Tensor& value, const Optional& mask,
                                                double scale) {
    static const auto op = find_op<decltype(dot_cpu)>("pyseq::dot_attention");
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [context, weights] = op.call(query, key, value, mask, scale);
    ctx->save_for_backward({query, key, value, weights, or_undefined(mask)});
    ctx->saved_data["scale"] = scale;
    ctx->set_materialize_grads(false);
    return {context, weights};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    if (!grads[0].defined() && !grads[1].defined()) return torch::autograd::variable_list(5);
    const torch::autograd::variable_list s = ctx->get_saved_variables();
    const double scale = ctx->saved_data["scale"].toDouble();
    if (backward_builds_graph()) {
      torch::autograd::variable_list g = differentiable_vjp(
          grads, {s[0], s[1], s[2]}, [&](const auto& in) { return dot_composite(in[0], in[1], in[2], s[4], scale); });
      g.resize(5);
      return g;
    }
    static const auto op = find_op<decltype(dot_backward_cpu)>("pyseq::dot_attention_backward");
    const auto [grad_context, grad_weights] = incoming(grads, s[3], s[2]);
    auto [gq, gk, gvalue] =
        op.call(grad_context, grad_weights, s[0], s[1], s[2], s[3], scale);
    return {gq, gk, gvalue, at::Tensor(), at::Tensor()};
  }
};

Outputs additive_autograd(const at::Tensor& query_proj, const at::Tensor& key_proj, const at::Tensor& v,
                          const at::Tensor& value, const Optional& mask, const Optional& key_exp2x,
                          const Optional& key_maxabs) {
  if (inside_functorch_transform()) {
    const torch::autograd::variable_list out = additive_composite(query_proj, key_proj, v, value, or_undefined(mask));
    return {out[0], out[1]};
  }
  torch::autograd::variable_list out = Additive::apply(query_proj, key_proj, v, value, mask, key_exp2x, key_maxabs);
  return {out[0], out[1]};
}

Outputs dot_autograd(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value, const Optional& mask,
                     double scale) {
  if (inside_functorch_transform()) {
    const torch::autograd::variable_list out = dot_composite(query, key, value, or_undefined(mask), scale);
    return {out[0], out[1]};
  }
  torch::autograd::variable_list out = Dot::apply(query, key, value, mask, scale);
  return {out[0], out[1]};
}

}  // namespace
}  // namespace pyseq

TORCH_LIBRARY_FRAGMENT(pyseq, m) {
  m.def(
      "additive_attention(Tensor query_proj, Tensor key_proj, Tensor v, Tensor value, Tensor? mask, "
      "Tensor? key_exp2x, Tensor? key_maxabs) -> (Tensor, Tensor)");
  m.def(
      "additive_attention_backward(Tensor grad_context, Tensor? grad_weights, Tensor query_proj, Tensor key_proj, "
      "Tensor v, Tensor value, Tensor weights, Tensor? key_exp2x, Tensor? key_maxabs) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def("dot_attention(Tensor query, Tensor key, Tensor value, Tensor? mask, float scale) -> (Tensor, Tensor)");
  m.def(
      "dot_attention_backward(Tensor grad_context, Tensor? grad_weights, Tensor query, Tensor key, Tensor value, "
      "Tensor weights, float scale) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pyseq, CPU, m) {
  m.impl("additive_attention", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::additive_cpu));
  m.impl("additive_attention_backward", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::additive_backward_cpu));
  m.impl("dot_attention", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::dot_cpu));
  m.impl("dot_attention_backward", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::dot_backward_cpu));
}

TORCH_LIBRARY_IMPL(pyseq, Autograd, m) {
  m.impl("additive_attention", &pyseq::additive_autograd);
  m.impl("dot_attention", &pyseq::dot_autograd);
}

// Under autocast: in the autocast dtype, as torch's attention (scaled_dot_product_attention) runs there; the CPU
// kernels compute 16-bit attention in float32 and return the 16-bit dtype (csrc/common/float32_compute.h). The
// backward ops run below autocast (csrc/common/autocast.h).
namespace {
const pyseq::AutocastOps kAutocastOps{
    {"additive_attention", "dot_attention"}, {}, {"additive_attention_backward", "dot_attention_backward"}};
}
PYSEQ_REGISTER_AUTOCAST(kAutocastOps)
