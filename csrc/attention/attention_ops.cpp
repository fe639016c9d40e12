// The attention ops registered as torch operators in C++: the schemas, the front functions that call them
// (attention_ops.h), their autograd and autocast policy, for the reason given in csrc/crf/crf_ops.cpp: a decoder
// step calls attention once per output token, and the Python custom-op wrapper's per-call cost (forward and
// backward) was 5-20% of a step. The fake kernels stay in Python (pyseq/_ops/attention.py).
#include "attention_ops.h"

#include <torch/library.h>

#include <array>
#include <limits>
#include <optional>
#include <tuple>

#include "../common/autocast.h"
#include "../common/autograd_kernel.h"
#include "../common/ops.h"

namespace pyseq {

using Optional = std::optional<at::Tensor>;

std::tuple<at::Tensor, at::Tensor> additive_attention(const at::Tensor& query_proj, const at::Tensor& key_proj,
                                                      const at::Tensor& v, const at::Tensor& value,
                                                      const Optional& mask, const Optional& key_exp2x,
                                                      const Optional& key_maxabs) {
  PYSEQ_CALL_OP(additive_attention, query_proj, key_proj, v, value, mask, key_exp2x, key_maxabs);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> additive_attention_backward(
    const at::Tensor& grad_context, const Optional& grad_weights, const at::Tensor& query_proj,
    const at::Tensor& key_proj, const at::Tensor& v, const at::Tensor& value, const at::Tensor& weights,
    const Optional& key_exp2x, const Optional& key_maxabs) {
  PYSEQ_CALL_OP(additive_attention_backward, grad_context, grad_weights, query_proj, key_proj, v, value, weights,
                key_exp2x, key_maxabs);
}

std::tuple<at::Tensor, at::Tensor> dot_attention(const at::Tensor& query, const at::Tensor& key,
                                                 const at::Tensor& value, const Optional& mask, double scale) {
  PYSEQ_CALL_OP(dot_attention, query, key, value, mask, scale);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dot_attention_backward(const at::Tensor& grad_context,
                                                                      const Optional& grad_weights,
                                                                      const at::Tensor& query, const at::Tensor& key,
                                                                      const at::Tensor& value,
                                                                      const at::Tensor& weights, double scale) {
  PYSEQ_CALL_OP(dot_attention_backward, grad_context, grad_weights, query, key, value, weights, scale);
}

namespace {

using Outputs = std::tuple<at::Tensor, at::Tensor>;

at::Tensor or_undefined(const Optional& t) { return t.value_or(at::Tensor()); }

// The incoming gradients of (context, weights): either may be undefined; a missing context gradient is zero.
std::pair<at::Tensor, Optional> incoming(const variable_list& grads, const at::Tensor& weights,
                                         const at::Tensor& value) {
  at::Tensor grad_context = grads[0].defined()
                                ? grads[0].contiguous()
                                : at::zeros({weights.size(0), weights.size(1), value.size(2)}, weights.options());
  return {grad_context, grads[1].defined() ? Optional(grads[1].contiguous()) : std::nullopt};
}

Optional optional_of(const at::Tensor& t) { return t.defined() ? Optional(t) : std::nullopt; }

// The weights and context from scores [B, Tq, Tk] as differentiable ATen ops (csrc/common/double_backward.h): masked
// keys get weight 0, a query whose keys are all masked gets zero weights (no NaN on the way, gradients included).
variable_list softmax_context_composite(at::Tensor scores, const at::Tensor& mask, const at::Tensor& value) {
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
variable_list additive_composite(const at::Tensor& query_proj, const at::Tensor& key_proj, const at::Tensor& v,
                                 const at::Tensor& value, const at::Tensor& mask) {
  const at::Tensor scores = at::matmul((query_proj.unsqueeze(2) + key_proj.unsqueeze(1)).tanh(), v);
  return softmax_context_composite(scores, mask, value);
}

variable_list dot_composite(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                            const at::Tensor& mask, double scale) {
  return softmax_context_composite(at::bmm(query, key.transpose(1, 2)) * scale, mask, value);
}

// The derivatives (csrc/common/autograd_kernel.h): with respect to the queries, keys, v and values; the mask and
// the cached key factors are not differentiable.
struct AdditiveDerivative {
  static constexpr auto forward = &additive_attention;
  static constexpr std::array<size_t, 4> kDifferentiable{0, 1, 2, 3};

  static void save(AutogradContext* ctx, const Outputs& results, const at::Tensor& query_proj,
                   const at::Tensor& key_proj, const at::Tensor& v, const at::Tensor& value, const Optional& mask,
                   const Optional& key_exp2x, const Optional& key_maxabs) {
    ctx->save_for_backward({query_proj, key_proj, v, value, std::get<1>(results), or_undefined(key_exp2x),
                            or_undefined(key_maxabs), or_undefined(mask)});
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const variable_list s = ctx->get_saved_variables();
    const auto [grad_context, grad_weights] = incoming(grads, s[4], s[3]);
    auto [gq, gk, gv, gvalue] = additive_attention_backward(grad_context, grad_weights, s[0], s[1], s[2], s[3], s[4],
                                                            optional_of(s[5]), optional_of(s[6]));
    return {gq, gk, gv, gvalue};
  }

  static variable_list backward_composite(AutogradContext* ctx, const variable_list& grads) {
    const variable_list s = ctx->get_saved_variables();
    return differentiable_vjp(grads, {s[0], s[1], s[2], s[3]},
                              [&](const auto& in) { return additive_composite(in[0], in[1], in[2], in[3], s[7]); });
  }

  static Outputs composite(const at::Tensor& query_proj, const at::Tensor& key_proj, const at::Tensor& v,
                           const at::Tensor& value, const Optional& mask, const Optional& key_exp2x,
                           const Optional& key_maxabs) {
    const variable_list out = additive_composite(query_proj, key_proj, v, value, or_undefined(mask));
    return {out[0], out[1]};
  }
};

struct DotDerivative {
  static constexpr auto forward = &dot_attention;
  static constexpr std::array<size_t, 3> kDifferentiable{0, 1, 2};

  static void save(AutogradContext* ctx, const Outputs& results, const at::Tensor& query, const at::Tensor& key,
                   const at::Tensor& value, const Optional& mask, double scale) {
    ctx->save_for_backward({query, key, value, std::get<1>(results), or_undefined(mask)});
    ctx->saved_data["scale"] = scale;
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const variable_list s = ctx->get_saved_variables();
    const auto [grad_context, grad_weights] = incoming(grads, s[3], s[2]);
    auto [gq, gk, gvalue] =
        dot_attention_backward(grad_context, grad_weights, s[0], s[1], s[2], s[3], ctx->saved_data["scale"].toDouble());
    return {gq, gk, gvalue};
  }

  static variable_list backward_composite(AutogradContext* ctx, const variable_list& grads) {
    const variable_list s = ctx->get_saved_variables();
    const double scale = ctx->saved_data["scale"].toDouble();
    return differentiable_vjp(grads, {s[0], s[1], s[2]},
                              [&](const auto& in) { return dot_composite(in[0], in[1], in[2], s[4], scale); });
  }

  static Outputs composite(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                           const Optional& mask, double scale) {
    const variable_list out = dot_composite(query, key, value, or_undefined(mask), scale);
    return {out[0], out[1]};
  }
};

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

TORCH_LIBRARY_IMPL(pyseq, Autograd, m) {
  m.impl("additive_attention", PYSEQ_AUTOGRAD_KERNEL(pyseq::AdditiveDerivative));
  m.impl("dot_attention", PYSEQ_AUTOGRAD_KERNEL(pyseq::DotDerivative));
}

// Under autocast: in the autocast dtype, as torch's attention (scaled_dot_product_attention) runs there; the CPU
// kernels compute 16-bit attention in float32 and return the 16-bit dtype (csrc/common/float32_compute.h). The
// backward ops run below autocast (csrc/common/autocast.h).
namespace {
const pyseq::AutocastOps kAutocastOps{
    {"additive_attention", "dot_attention"}, {}, {"additive_attention_backward", "dot_attention_backward"}};
}
PYSEQ_REGISTER_AUTOCAST(kAutocastOps)
