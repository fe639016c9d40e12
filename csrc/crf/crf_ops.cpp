// The CRF log-likelihood, the training hot path, registered as a torch operator in C++ with its autograd kernel.
//
// The other pyseq ops are wrapped in Python (torch.library.custom_op, pyseq/_ops). That wrapper costs ~40 us per call
// when warm and ~170 us right after other Python-heavy work (measured), for the forward and again for the backward:
// 10-25% of a whole CRF training step at the standard sizes. Registered here, eager calls go straight from the
// dispatcher to the kernel; the fake (meta) kernels stay in Python (pyseq/_ops/crf.py), so torch.compile traces it
// like any other op.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>

#include "crf.h"

namespace pyseq {
namespace {

using Forward = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Gradients = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Forward log_likelihood_cpu(const at::Tensor& emissions, const at::Tensor& tags, const at::Tensor& lengths,
                           const at::Tensor& start, const at::Tensor& end, const at::Tensor& transitions) {
  std::vector<at::Tensor> out = crf_log_likelihood_cpu(emissions, tags, lengths, start, end, transitions);
  return {out[0], out[1], out[2]};
}

Gradients log_likelihood_backward_cpu(const at::Tensor& grad_llh, const at::Tensor& emissions, const at::Tensor& tags,
                                      const at::Tensor& lengths, const at::Tensor& start, const at::Tensor& end,
                                      const at::Tensor& transitions, const at::Tensor& llh,
                                      const at::Tensor& log_alpha, const at::Tensor& alpha_shift) {
  std::vector<at::Tensor> g = crf_log_likelihood_backward_cpu(grad_llh, emissions, tags, lengths, start, end,
                                                              transitions, llh, log_alpha, alpha_shift);
  return {g[0], g[1], g[2], g[3]};
}

class LogLikelihood : public torch::autograd::Function<LogLikelihood> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& emissions,
                                                const at::Tensor& tags, const at::Tensor& lengths,
                                                const at::Tensor& start, const at::Tensor& end,
                                                const at::Tensor& transitions) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("pyseq::crf_log_likelihood", "")
                               .typed<decltype(log_likelihood_cpu)>();
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [llh, log_alpha, alpha_shift] = op.call(emissions, tags, lengths, start, end, transitions);
    ctx->save_for_backward({emissions, tags, lengths, start, end, transitions, llh, log_alpha, alpha_shift});
    ctx->mark_non_differentiable({log_alpha, alpha_shift});
    ctx->set_materialize_grads(false);
    return {llh, log_alpha, alpha_shift};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    if (!grads[0].defined()) return torch::autograd::variable_list(6);
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("pyseq::crf_log_likelihood_backward", "")
                               .typed<decltype(log_likelihood_backward_cpu)>();
    const torch::autograd::variable_list s = ctx->get_saved_variables();
    auto [g_em, g_start, g_end, g_trans] =
        op.call(grads[0].contiguous(), s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8]);
    return {g_em, at::Tensor(), at::Tensor(), g_start, g_end, g_trans};
  }
};

Forward log_likelihood_autograd(const at::Tensor& emissions, const at::Tensor& tags, const at::Tensor& lengths,
                                const at::Tensor& start, const at::Tensor& end, const at::Tensor& transitions) {
  torch::autograd::variable_list out = LogLikelihood::apply(emissions, tags, lengths, start, end, transitions);
  return {out[0], out[1], out[2]};
}

}  // namespace
}  // namespace pyseq

TORCH_LIBRARY_FRAGMENT(pyseq, m) {
  m.def(
      "crf_log_likelihood(Tensor emissions, Tensor tags, Tensor lengths, Tensor start, Tensor end, "
      "Tensor transitions) -> (Tensor, Tensor, Tensor)");
  m.def(
      "crf_log_likelihood_backward(Tensor grad_llh, Tensor emissions, Tensor tags, Tensor lengths, Tensor start, "
      "Tensor end, Tensor transitions, Tensor llh, Tensor log_alpha, Tensor alpha_shift) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pyseq, CPU, m) {
  m.impl("crf_log_likelihood", &pyseq::log_likelihood_cpu);
  m.impl("crf_log_likelihood_backward", &pyseq::log_likelihood_backward_cpu);
}

TORCH_LIBRARY_IMPL(pyseq, Autograd, m) { m.impl("crf_log_likelihood", &pyseq::log_likelihood_autograd); }
