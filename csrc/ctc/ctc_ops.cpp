// The CTC ops registered as torch operators in C++: the loss with its autograd kernel (registered here rather than in
// Python for the reason given in csrc/crf/crf_ops.cpp: the Python custom-op wrapper's per-call cost, forward and
// backward), greedy decoding and forced alignment (not differentiable). The fake kernels stay in Python
// (pyseq/_ops/ctc.py). Beam search returns Python objects and stays a pybind11 function (csrc/bindings.cpp).
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>

#include "../common/autocast.h"
#include "../common/float32_compute.h"
#include "../common/ops.h"
#include "ctc.h"

namespace pyseq {
namespace {

std::tuple<at::Tensor, at::Tensor> loss_cpu(const at::Tensor& log_probs, const at::Tensor& targets,
                                            const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                            int64_t blank) {
  std::vector<at::Tensor> out = ctc_loss_forward_cpu(log_probs, targets, input_lengths, target_lengths, blank);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor> greedy_decode_cpu(const at::Tensor& log_probs, const at::Tensor& input_lengths,
                                                     int64_t blank) {
  std::vector<at::Tensor> out = ctc_greedy_decode_cpu(log_probs, input_lengths, blank);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor> forced_align_cpu(const at::Tensor& log_probs, const at::Tensor& targets,
                                                    const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                                    int64_t blank) {
  std::vector<at::Tensor> out = ctc_forced_align_cpu(log_probs, targets, input_lengths, target_lengths, blank);
  return {out[0], out[1]};
}

class Loss : public torch::autograd::Function<Loss> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& log_probs,
                                                const at::Tensor& targets, const at::Tensor& input_lengths,
                                                const at::Tensor& target_lengths, int64_t blank) {
    static const auto op = find_op<decltype(loss_cpu)>("pyseq::ctc_loss");
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [nll, log_alpha] = op.call(log_probs, targets, input_lengths, target_lengths, blank);
    ctx->save_for_backward({log_probs, targets, input_lengths, target_lengths, nll, log_alpha});
    ctx->saved_data["blank"] = blank;
    ctx->mark_non_differentiable({log_alpha});
    ctx->set_materialize_grads(false);
    return {nll, log_alpha};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    if (!grads[0].defined()) return torch::autograd::variable_list(5);
    static const auto op = find_op<decltype(ctc_loss_backward_cpu)>("pyseq::ctc_loss_backward");
    const torch::autograd::variable_list s = ctx->get_saved_variables();
    at::Tensor grad =
        op.call(grads[0].contiguous(), s[0], s[1], s[2], s[3], s[4], s[5], ctx->saved_data["blank"].toInt());
    return {grad, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> loss_autograd(const at::Tensor& log_probs, const at::Tensor& targets,
                                                 const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                                 int64_t blank) {
  torch::autograd::variable_list out = Loss::apply(log_probs, targets, input_lengths, target_lengths, blank);
  return {out[0], out[1]};
}

}  // namespace
}  // namespace pyseq

TORCH_LIBRARY_FRAGMENT(pyseq, m) {
  m.def(
      "ctc_loss(Tensor log_probs, Tensor targets, Tensor input_lengths, Tensor target_lengths, int blank) "
      "-> (Tensor, Tensor)");
  m.def(
      "ctc_loss_backward(Tensor grad_nll, Tensor log_probs, Tensor targets, Tensor input_lengths, "
      "Tensor target_lengths, Tensor nll, Tensor log_alpha, int blank) -> Tensor");
  m.def("ctc_greedy_decode(Tensor log_probs, Tensor input_lengths, int blank) -> (Tensor, Tensor)");
  m.def(
      "ctc_forced_align(Tensor log_probs, Tensor targets, Tensor input_lengths, Tensor target_lengths, int blank) "
      "-> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pyseq, CPU, m) {
  m.impl("ctc_loss", PYSEQ_FLOAT32_RESULTS(pyseq::loss_cpu));
  m.impl("ctc_loss_backward", PYSEQ_FLOAT32_RESULTS(pyseq::ctc_loss_backward_cpu));
  m.impl("ctc_greedy_decode", PYSEQ_FLOAT32_RESULTS(pyseq::greedy_decode_cpu));
  m.impl("ctc_forced_align", PYSEQ_FLOAT32_RESULTS(pyseq::forced_align_cpu));
}

TORCH_LIBRARY_IMPL(pyseq, Autograd, m) {
  m.impl("ctc_loss", &pyseq::loss_autograd);
  // Decoding and alignment are not differentiable: results that never require grad (see csrc/crf/crf_ops.cpp).
  m.impl("ctc_greedy_decode", torch::CppFunction::makeFallthrough());
  m.impl("ctc_forced_align", torch::CppFunction::makeFallthrough());
}

// Under autocast: float32, as torch's CTC loss (csrc/common/autocast.h); the backward ops run below autocast.
namespace {
const pyseq::AutocastOps kAutocastOps{
    {}, {"ctc_loss", "ctc_greedy_decode", "ctc_forced_align"}, {"ctc_loss_backward"}};
}
PYSEQ_REGISTER_AUTOCAST(kAutocastOps)
