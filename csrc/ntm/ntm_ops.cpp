// The NTM memory ops registered as torch operators in C++: the schemas, the front functions that call them
// (ntm_ops.h), the autograd kernels (their backwards are ops too, so they stay traceable) and the autocast policy.
// The fake kernels are in Python (pyseq/_ops/ntm.py).
#include "ntm_ops.h"

#include <torch/library.h>

#include <array>
#include <tuple>

#include "../common/autocast.h"
#include "../common/autograd_kernel.h"
#include "../common/ops.h"
#include "ntm.h"
#include "ntm_rows.h"

namespace pyseq {

at::Tensor ntm_address(const at::Tensor& memory, const at::Tensor& key, const at::Tensor& beta, const at::Tensor& gate,
                       const at::Tensor& shift, const at::Tensor& gamma, const at::Tensor& prev_weights) {
  PYSEQ_CALL_OP(ntm_address, memory, key, beta, gate, shift, gamma, prev_weights);
}

NtmAddressGradients ntm_address_backward(const at::Tensor& grad_weights, const at::Tensor& memory,
                                         const at::Tensor& key, const at::Tensor& beta, const at::Tensor& gate,
                                         const at::Tensor& shift, const at::Tensor& gamma,
                                         const at::Tensor& prev_weights) {
  PYSEQ_CALL_OP(ntm_address_backward, grad_weights, memory, key, beta, gate, shift, gamma, prev_weights);
}

at::Tensor ntm_write(const at::Tensor& memory, const at::Tensor& weights, const at::Tensor& erase,
                     const at::Tensor& add) {
  PYSEQ_CALL_OP(ntm_write, memory, weights, erase, add);
}

NtmWriteGradients ntm_write_backward(const at::Tensor& grad_memory, const at::Tensor& memory, const at::Tensor& weights,
                                     const at::Tensor& erase, const at::Tensor& add) {
  PYSEQ_CALL_OP(ntm_write_backward, grad_memory, memory, weights, erase, add);
}

NtmStepTensors ntm_step(const at::Tensor& memory, const at::Tensor& params, const at::Tensor& prev_weights,
                        int64_t read_heads, int64_t write_heads) {
  PYSEQ_CALL_OP(ntm_step, memory, params, prev_weights, read_heads, write_heads);
}

NtmStepTensors ntm_step_backward(const at::Tensor& grad_weights, const at::Tensor& grad_reads,
                                 const at::Tensor& grad_memory, const at::Tensor& memory, const at::Tensor& params,
                                 const at::Tensor& prev_weights, const at::Tensor& weights, int64_t read_heads,
                                 int64_t write_heads) {
  PYSEQ_CALL_OP(ntm_step_backward, grad_weights, grad_reads, grad_memory, memory, params, prev_weights, weights,
                read_heads, write_heads);
}

namespace {

// The addressing and the write as differentiable ATen ops, for backward with create_graph
// (csrc/common/double_backward.h). Arguments as the ops'.
at::Tensor address_composite(const at::Tensor& memory, const at::Tensor& key, const at::Tensor& beta,
                             const at::Tensor& gate, const at::Tensor& shift, const at::Tensor& gamma,
                             const at::Tensor& prev_weights) {
  const at::Tensor key_norm = key.norm(2, -1).clamp_min(kNtmCosineEps);        // [B, H]
  const at::Tensor row_norm = memory.norm(2, -1).clamp_min(kNtmCosineEps);     // [B, N]
  const at::Tensor similarity =
      at::bmm(key, memory.transpose(1, 2)) / (key_norm.unsqueeze(2) * row_norm.unsqueeze(1));  // [B, H, N]
  const at::Tensor content = (beta.unsqueeze(2) * similarity).softmax(2);
  const at::Tensor g = gate.unsqueeze(2);
  const at::Tensor gated = g * content + (1 - g) * prev_weights;
  const int64_t S = shift.size(2), r = (S - 1) / 2;
  at::Tensor shifted = at::zeros_like(gated);
  for (int64_t s = 0; s < S; ++s) shifted = shifted + shift.narrow(2, s, 1) * at::roll(gated, {s - r}, {2});
  // (w_s / max w_s)^gamma normalized: w_s^gamma normalized, without its underflow (the maximum cancels out).
  const at::Tensor sharpened = (shifted / std::get<0>(shifted.max(2, true)).detach()).pow(gamma.unsqueeze(2));
  return sharpened / sharpened.sum(2, true);
}

at::Tensor write_composite(const at::Tensor& memory, const at::Tensor& weights, const at::Tensor& erase,
                           const at::Tensor& add) {
  const at::Tensor w = weights.unsqueeze(2);
  return memory * (1 - w * erase.unsqueeze(1)) + w * add.unsqueeze(1);
}

// The derivatives (csrc/common/autograd_kernel.h): the addressing and the write are differentiable in every input,
// the step in its memory, parameters and previous weights.
struct AddressDerivative {
  static constexpr auto forward = &ntm_address;
  static constexpr std::array<size_t, 7> kDifferentiable{0, 1, 2, 3, 4, 5, 6};

  static void save(AutogradContext* ctx, const at::Tensor& weights, const at::Tensor& memory, const at::Tensor& key,
                   const at::Tensor& beta, const at::Tensor& gate, const at::Tensor& shift, const at::Tensor& gamma,
                   const at::Tensor& prev_weights) {
    ctx->save_for_backward({memory, key, beta, gate, shift, gamma, prev_weights});
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const variable_list s = ctx->get_saved_variables();
    auto [dm, dk, dbeta, dgate, dshift, dgamma, dprev] =
        ntm_address_backward(grads[0].contiguous(), s[0], s[1], s[2], s[3], s[4], s[5], s[6]);
    return {dm, dk, dbeta, dgate, dshift, dgamma, dprev};
  }

  static variable_list backward_composite(AutogradContext* ctx, const variable_list& grads) {
    return differentiable_vjp(grads, ctx->get_saved_variables(), [](const auto& in) {
      return variable_list{address_composite(in[0], in[1], in[2], in[3], in[4], in[5], in[6])};
    });
  }

  static constexpr auto composite = &address_composite;
};

struct WriteDerivative {
  static constexpr auto forward = &ntm_write;
  static constexpr std::array<size_t, 4> kDifferentiable{0, 1, 2, 3};

  static void save(AutogradContext* ctx, const at::Tensor& written, const at::Tensor& memory, const at::Tensor& weights,
                   const at::Tensor& erase, const at::Tensor& add) {
    ctx->save_for_backward({memory, weights, erase, add});
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const variable_list s = ctx->get_saved_variables();
    auto [dm, dw, de, da] = ntm_write_backward(grads[0].contiguous(), s[0], s[1], s[2], s[3]);
    return {dm, dw, de, da};
  }

  static variable_list backward_composite(AutogradContext* ctx, const variable_list& grads) {
    return differentiable_vjp(grads, ctx->get_saved_variables(), [](const auto& in) {
      return variable_list{write_composite(in[0], in[1], in[2], in[3])};
    });
  }

  static constexpr auto composite = &write_composite;
};

struct StepDerivative {
  static constexpr auto forward = &ntm_step;
  static constexpr std::array<size_t, 3> kDifferentiable{0, 1, 2};

  static void save(AutogradContext* ctx, const NtmStepTensors& results, const at::Tensor& memory,
                   const at::Tensor& params, const at::Tensor& prev_weights, int64_t read_heads, int64_t write_heads) {
    ctx->save_for_backward({memory, params, prev_weights, std::get<0>(results)});
    ctx->saved_data["read_heads"] = read_heads;
    ctx->saved_data["write_heads"] = write_heads;
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const variable_list s = ctx->get_saved_variables();
    const at::Tensor& memory = s[0];
    const int64_t R = ctx->saved_data["read_heads"].toInt(), W = ctx->saved_data["write_heads"].toInt();
    const int64_t B = memory.size(0), N = memory.size(1), M = memory.size(2);
    const auto zeros_if_undefined = [&](const at::Tensor& g, at::IntArrayRef sizes) {
      return g.defined() ? g : at::zeros(sizes, memory.options());
    };
    auto [d_memory, d_params, d_prev] =
        ntm_step_backward(zeros_if_undefined(grads[0], {B, R + W, N}), zeros_if_undefined(grads[1], {B, R, M}),
                          zeros_if_undefined(grads[2], {B, N, M}), memory, s[1], s[2], s[3], R, W);
    return {d_memory, d_params, d_prev};
  }

  // The composite of the NTM ops, whose autograd kernels differentiate their own composites in turn.
  static variable_list backward_composite(AutogradContext* ctx, const variable_list& grads) {
    const variable_list s = ctx->get_saved_variables();
    const int64_t R = ctx->saved_data["read_heads"].toInt(), W = ctx->saved_data["write_heads"].toInt();
    return differentiable_vjp(grads, {s[0], s[1], s[2]}, [&](const auto& in) {
      auto [weights, reads, written] = ntm_step_composite(in[0], in[1], in[2], R, W);
      return variable_list{weights, reads, written};
    });
  }

  static constexpr auto composite = &ntm_step_composite;
};

}  // namespace
}  // namespace pyseq

TORCH_LIBRARY_FRAGMENT(pyseq, m) {
  m.def(
      "ntm_address(Tensor memory, Tensor key, Tensor beta, Tensor gate, Tensor shift, Tensor gamma, "
      "Tensor prev_weights) -> Tensor");
  m.def(
      "ntm_address_backward(Tensor grad_weights, Tensor memory, Tensor key, Tensor beta, Tensor gate, Tensor shift, "
      "Tensor gamma, Tensor prev_weights) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("ntm_write(Tensor memory, Tensor weights, Tensor erase, Tensor add) -> Tensor");
  m.def(
      "ntm_write_backward(Tensor grad_memory, Tensor memory, Tensor weights, Tensor erase, Tensor add) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "ntm_step(Tensor memory, Tensor params, Tensor prev_weights, int read_heads, int write_heads) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "ntm_step_backward(Tensor grad_weights, Tensor grad_reads, Tensor grad_memory, Tensor memory, Tensor params, "
      "Tensor prev_weights, Tensor weights, int read_heads, int write_heads) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pyseq, Autograd, m) {
  m.impl("ntm_address", PYSEQ_AUTOGRAD_KERNEL(pyseq::AddressDerivative));
  m.impl("ntm_write", PYSEQ_AUTOGRAD_KERNEL(pyseq::WriteDerivative));
  m.impl("ntm_step", PYSEQ_AUTOGRAD_KERNEL(pyseq::StepDerivative));
}

// Under autocast: float32, as torch runs the cosine similarity, softmax and powers of the addressing composition
// (csrc/common/autocast.h); the backward ops run below autocast.
namespace {
const pyseq::AutocastOps kAutocastOps{{},
                                      {"ntm_address", "ntm_write", "ntm_step"},
                                      {"ntm_address_backward", "ntm_write_backward", "ntm_step_backward"}};
}
PYSEQ_REGISTER_AUTOCAST(kAutocastOps)
