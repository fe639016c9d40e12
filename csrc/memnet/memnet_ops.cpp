// The memory-network ops registered as torch operators in C++: the schemas, the front functions that call them
// (memnet_ops.h), their autograd and autocast policy. The fake kernels are in Python (pyseq/_ops/memnet.py).
#include "memnet_ops.h"

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

at::Tensor position_encoded_bag(const at::Tensor& table, const at::Tensor& indices, const at::Tensor& weights,
                                const at::Tensor& lengths) {
  PYSEQ_CALL_OP(position_encoded_bag, table, indices, weights, lengths);
}

std::tuple<at::Tensor, at::Tensor> position_encoded_bag_backward(const at::Tensor& grad, const at::Tensor& table,
                                                                 const at::Tensor& indices, const at::Tensor& weights,
                                                                 const at::Tensor& lengths) {
  PYSEQ_CALL_OP(position_encoded_bag_backward, grad, table, indices, weights, lengths);
}

std::tuple<at::Tensor, at::Tensor> memory_hops(const at::Tensor& u, const at::Tensor& memory_in,
                                               const at::Tensor& memory_out, const Optional& mask, int64_t hops,
                                               const Optional& H, bool softmax) {
  PYSEQ_CALL_OP(memory_hops, u, memory_in, memory_out, mask, hops, H, softmax);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> memory_hops_backward(
    const at::Tensor& grad_states, const Optional& grad_weights, const at::Tensor& memory_in,
    const at::Tensor& memory_out, const Optional& mask, const Optional& H, const at::Tensor& states,
    const at::Tensor& weights, bool softmax) {
  PYSEQ_CALL_OP(memory_hops_backward, grad_states, grad_weights, memory_in, memory_out, mask, H, states, weights,
                softmax);
}

namespace {

at::Tensor or_undefined(const Optional& t) { return t.value_or(at::Tensor()); }
Optional optional_of(const at::Tensor& t) { return t.defined() ? Optional(t) : std::nullopt; }

// The ops as differentiable ATen ops, for backward with create_graph and for torch.func
// (csrc/common/double_backward.h). Arguments as the ops'.
at::Tensor bag_composite(const at::Tensor& table, const at::Tensor& indices, const at::Tensor& weights,
                         const at::Tensor& lengths) {
  const int64_t N = indices.size(0), W = indices.size(1), D = table.size(1);
  const at::Tensor words = table.index_select(0, indices.reshape({-1})).view({N, W, D}) * weights.unsqueeze(0);
  const at::Tensor valid = at::arange(W, lengths.options()).unsqueeze(0) < lengths.unsqueeze(1);  // [N, W]
  return at::where(valid.unsqueeze(2), words, 0).sum(1);
}

std::tuple<at::Tensor, at::Tensor> hops_composite(const at::Tensor& u, const at::Tensor& memory_in,
                                                  const at::Tensor& memory_out, const at::Tensor& mask,
                                                  int64_t hops, const at::Tensor& H, bool softmax) {
  std::vector<at::Tensor> states{u}, weights;
  at::Tensor state = u;
  for (int64_t k = 0; k < hops; ++k) {
    const at::Tensor m_in = memory_in.dim() == 4 ? memory_in.select(0, k) : memory_in;
    const at::Tensor m_out = memory_out.dim() == 4 ? memory_out.select(0, k) : memory_out;
    at::Tensor scores = at::bmm(m_in, state.unsqueeze(2)).squeeze(2);  // [B, S]
    at::Tensor p;
    if (!softmax) {
      p = mask.defined() ? scores * mask : scores;
    } else if (mask.defined()) {
      // Dropped sentences get weight 0; an entry with none kept gets zero weights (no NaN, gradients included).
      const at::Tensor any = mask.any(1, /*keepdim=*/true);
      scores = scores.masked_fill(mask.logical_not(), -std::numeric_limits<double>::infinity())
                   .masked_fill(any.logical_not(), 0);
      p = scores.softmax(1) * any;
    } else {
      p = scores.softmax(1);
    }
    const at::Tensor o = at::bmm(p.unsqueeze(1), m_out).squeeze(1);
    state = (H.defined() ? at::mm(state, H.t()) : state) + o;
    states.push_back(state);
    weights.push_back(p);
  }
  return {at::stack(states), at::stack(weights)};
}

// The derivatives (csrc/common/autograd_kernel.h). The bag: with respect to the table and the position weights.
struct BagDerivative {
  static constexpr auto forward = &position_encoded_bag;
  static constexpr std::array<size_t, 2> kDifferentiable{0, 2};

  static void save(AutogradContext* ctx, const at::Tensor& out, const at::Tensor& table, const at::Tensor& indices,
                   const at::Tensor& weights, const at::Tensor& lengths) {
    ctx->save_for_backward({table, indices, weights, lengths});
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const variable_list s = ctx->get_saved_variables();
    auto [d_table, d_weights] = position_encoded_bag_backward(grads[0].contiguous(), s[0], s[1], s[2], s[3]);
    return {d_table, d_weights};
  }

  static variable_list backward_composite(AutogradContext* ctx, const variable_list& grads) {
    const variable_list s = ctx->get_saved_variables();
    return differentiable_vjp(grads, {s[0], s[2]}, [&](const auto& in) {
      return variable_list{bag_composite(in[0], s[1], in[1], s[3])};
    });
  }

  static constexpr auto composite = &bag_composite;
};

// The hops: with respect to the query, both memories and H.
struct HopsDerivative {
  static constexpr auto forward = &memory_hops;
  static constexpr std::array<size_t, 4> kDifferentiable{0, 1, 2, 5};

  static void save(AutogradContext* ctx, const std::tuple<at::Tensor, at::Tensor>& results, const at::Tensor& u,
                   const at::Tensor& memory_in, const at::Tensor& memory_out, const Optional& mask, int64_t hops,
                   const Optional& H, bool softmax) {
    const auto& [states, weights] = results;
    ctx->save_for_backward({u, memory_in, memory_out, or_undefined(mask), or_undefined(H), states, weights});
    ctx->saved_data["softmax"] = softmax;
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const variable_list s = ctx->get_saved_variables();
    const at::Tensor& states = s[5];
    const at::Tensor grad_states = grads[0].defined() ? grads[0] : at::zeros_like(states);
    auto [d_u, d_in, d_out, d_H] = memory_hops_backward(
        grad_states, grads[1].defined() ? Optional(grads[1]) : std::nullopt, s[1], s[2], optional_of(s[3]),
        optional_of(s[4]), states, s[6], ctx->saved_data["softmax"].toBool());
    return {d_u, d_in, d_out, s[4].defined() ? d_H : at::Tensor()};
  }

  static variable_list backward_composite(AutogradContext* ctx, const variable_list& grads) {
    const variable_list s = ctx->get_saved_variables();
    const int64_t hops = s[6].size(0);
    const bool softmax = ctx->saved_data["softmax"].toBool();
    return differentiable_vjp(grads, {s[0], s[1], s[2], s[4]}, [&](const auto& in) {
      auto [states, weights] = hops_composite(in[0], in[1], in[2], s[3], hops, in[3], softmax);
      return variable_list{states, weights};
    });
  }

  static std::tuple<at::Tensor, at::Tensor> composite(const at::Tensor& u, const at::Tensor& memory_in,
                                                      const at::Tensor& memory_out, const Optional& mask,
                                                      int64_t hops, const Optional& H, bool softmax) {
    return hops_composite(u, memory_in, memory_out, or_undefined(mask), hops, or_undefined(H), softmax);
  }
};

}  // namespace
}  // namespace pyseq

TORCH_LIBRARY_FRAGMENT(pyseq, m) {
  m.def("position_encoded_bag(Tensor table, Tensor indices, Tensor weights, Tensor lengths) -> Tensor");
  m.def(
      "position_encoded_bag_backward(Tensor grad, Tensor table, Tensor indices, Tensor weights, Tensor lengths) "
      "-> (Tensor, Tensor)");
  m.def(
      "memory_hops(Tensor u, Tensor memory_in, Tensor memory_out, Tensor? mask, int hops, Tensor? H, bool softmax) "
      "-> (Tensor, Tensor)");
  m.def(
      "memory_hops_backward(Tensor grad_states, Tensor? grad_weights, Tensor memory_in, Tensor memory_out, "
      "Tensor? mask, Tensor? H, Tensor states, Tensor weights, bool softmax) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pyseq, Autograd, m) {
  m.impl("position_encoded_bag", PYSEQ_AUTOGRAD_KERNEL(pyseq::BagDerivative));
  m.impl("memory_hops", PYSEQ_AUTOGRAD_KERNEL(pyseq::HopsDerivative));
}

// Under autocast: the bags in float32, as torch's embedding lookups keep the table's dtype (16-bit tables are
// computed in float32); the hops in the autocast dtype, as attention (csrc/common/autocast.h); the backward ops below
// autocast.
namespace {
const pyseq::AutocastOps kAutocastOps{
    {"memory_hops"}, {"position_encoded_bag"}, {"position_encoded_bag_backward", "memory_hops_backward"}};
}
PYSEQ_REGISTER_AUTOCAST(kAutocastOps)
