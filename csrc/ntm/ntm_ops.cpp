// The NTM memory ops registered as torch operators in C++: the schemas, the CPU kernels and the autograd kernels
// (their backwards are ops too, so they stay traceable). The fake kernels are in Python (pyseq/_ops/ntm.py).
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>

#include "../common/autocast.h"
#include "../common/double_backward.h"
#include "../common/float32_compute.h"
#include "../common/ops.h"
#include "ntm.h"
#include "ntm_rows.h"

namespace pyseq {
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

class Address : public torch::autograd::Function<Address> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& memory,
                                                const at::Tensor& key, const at::Tensor& beta,
                                                const at::Tensor& gate, const at::Tensor& shift,
                                                const at::Tensor& gamma, const at::Tensor& prev_weights) {
    static const auto op = find_op<decltype(ntm_address_cpu)>("pyseq::ntm_address");
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor weights = op.call(memory, key, beta, gate, shift, gamma, prev_weights);
    ctx->save_for_backward({memory, key, beta, gate, shift, gamma, prev_weights});
    return {weights};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::autograd::variable_list s = ctx->get_saved_variables();
    if (backward_builds_graph()) {
      return differentiable_vjp(grads, s, [](const auto& in) {
        return torch::autograd::variable_list{address_composite(in[0], in[1], in[2], in[3], in[4], in[5], in[6])};
      });
    }
    static const auto op = find_op<NtmAddressBackwardOp>("pyseq::ntm_address_backward");
    auto [dm, dk, dbeta, dgate, dshift, dgamma, dprev] =
        op.call(grads[0].contiguous(), s[0], s[1], s[2], s[3], s[4], s[5], s[6]);
    return {dm, dk, dbeta, dgate, dshift, dgamma, dprev};
  }
};

class Write : public torch::autograd::Function<Write> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& memory,
                                                const at::Tensor& weights, const at::Tensor& erase,
                                                const at::Tensor& add) {
    static const auto op = find_op<decltype(ntm_write_cpu)>("pyseq::ntm_write");
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor out = op.call(memory, weights, erase, add);
    ctx->save_for_backward({memory, weights, erase, add});
    return {out};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::autograd::variable_list s = ctx->get_saved_variables();
    if (backward_builds_graph()) {
      return differentiable_vjp(grads, s, [](const auto& in) {
        return torch::autograd::variable_list{write_composite(in[0], in[1], in[2], in[3])};
      });
    }
    static const auto op = find_op<NtmWriteBackwardOp>("pyseq::ntm_write_backward");
    auto [dm, dw, de, da] = op.call(grads[0].contiguous(), s[0], s[1], s[2], s[3]);
    return {dm, dw, de, da};
  }
};

at::Tensor address_autograd(const at::Tensor& memory, const at::Tensor& key, const at::Tensor& beta,
                            const at::Tensor& gate, const at::Tensor& shift, const at::Tensor& gamma,
                            const at::Tensor& prev_weights) {
  if (!records_autograd(memory, key, beta, gate, shift, gamma, prev_weights)) {
    static const auto op = find_op<decltype(ntm_address_cpu)>("pyseq::ntm_address");
    at::AutoDispatchBelowADInplaceOrView guard;
    return op.call(memory, key, beta, gate, shift, gamma, prev_weights);
  }
  if (inside_functorch_transform()) return address_composite(memory, key, beta, gate, shift, gamma, prev_weights);
  return Address::apply(memory, key, beta, gate, shift, gamma, prev_weights)[0];
}

at::Tensor write_autograd(const at::Tensor& memory, const at::Tensor& weights, const at::Tensor& erase,
                          const at::Tensor& add) {
  if (!records_autograd(memory, weights, erase, add)) {
    static const auto op = find_op<decltype(ntm_write_cpu)>("pyseq::ntm_write");
    at::AutoDispatchBelowADInplaceOrView guard;
    return op.call(memory, weights, erase, add);
  }
  if (inside_functorch_transform()) return write_composite(memory, weights, erase, add);
  return Write::apply(memory, weights, erase, add)[0];
}

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
}

TORCH_LIBRARY_IMPL(pyseq, CPU, m) {
  m.impl("ntm_address", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::ntm_address_cpu));
  m.impl("ntm_address_backward", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::ntm_address_backward_cpu));
  m.impl("ntm_write", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::ntm_write_cpu));
  m.impl("ntm_write_backward", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::ntm_write_backward_cpu));
}

TORCH_LIBRARY_IMPL(pyseq, Autograd, m) {
  m.impl("ntm_address", &pyseq::address_autograd);
  m.impl("ntm_write", &pyseq::write_autograd);
}

// Under autocast: float32, as torch runs the cosine similarity, softmax and powers of the addressing composition
// (csrc/common/autocast.h); the backward ops run below autocast. Covers the step's ops too (ntm_step.cpp).
namespace {
const pyseq::AutocastOps kAutocastOps{{},
                                      {"ntm_address", "ntm_write", "ntm_step"},
                                      {"ntm_address_backward", "ntm_write_backward", "ntm_step_backward"}};
}
PYSEQ_REGISTER_AUTOCAST(kAutocastOps)
