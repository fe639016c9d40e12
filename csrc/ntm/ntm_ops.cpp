// The NTM memory ops registered as torch operators in C++: the schemas, the CPU kernels and the autograd kernels
// (their backwards are ops too, so they stay traceable). The fake kernels are in Python (pyseq/_ops/ntm.py).
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>

#include "../common/float32_compute.h"
#include "../common/ops.h"
#include "ntm.h"

namespace pyseq {
namespace {

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
    static const auto op = find_op<NtmAddressBackwardOp>("pyseq::ntm_address_backward");
    const torch::autograd::variable_list s = ctx->get_saved_variables();
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
    static const auto op = find_op<NtmWriteBackwardOp>("pyseq::ntm_write_backward");
    const torch::autograd::variable_list s = ctx->get_saved_variables();
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
  return Address::apply(memory, key, beta, gate, shift, gamma, prev_weights)[0];
}

at::Tensor write_autograd(const at::Tensor& memory, const at::Tensor& weights, const at::Tensor& erase,
                          const at::Tensor& add) {
  if (!records_autograd(memory, weights, erase, add)) {
    static const auto op = find_op<decltype(ntm_write_cpu)>("pyseq::ntm_write");
    at::AutoDispatchBelowADInplaceOrView guard;
    return op.call(memory, weights, erase, add);
  }
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
