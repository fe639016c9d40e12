// The CTC ops registered as torch operators in C++: the schemas, the front functions that call them (ctc_ops.h), the
// loss's autograd (registered here rather than in Python for the reason given in csrc/crf/crf_ops.cpp: the Python
// custom-op wrapper's per-call cost, forward and backward) and the autocast policy. Greedy decoding and forced
// alignment are not differentiable. The fake kernels stay in Python (pyseq/_ops/ctc.py). Beam search returns Python
// objects and stays a pybind11 function (csrc/bindings.cpp).
#include "ctc_ops.h"

#include <torch/library.h>

#include <array>
#include <tuple>

#include "../common/autocast.h"
#include "../common/autograd_kernel.h"
#include "../common/ops.h"

namespace pyseq {

std::tuple<at::Tensor, at::Tensor> ctc_loss(const at::Tensor& log_probs, const at::Tensor& targets,
                                            const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                            int64_t blank) {
  PYSEQ_CALL_OP(ctc_loss, log_probs, targets, input_lengths, target_lengths, blank);
}

at::Tensor ctc_loss_backward(const at::Tensor& grad_nll, const at::Tensor& log_probs, const at::Tensor& targets,
                             const at::Tensor& input_lengths, const at::Tensor& target_lengths, const at::Tensor& nll,
                             const at::Tensor& log_alpha, int64_t blank) {
  PYSEQ_CALL_OP(ctc_loss_backward, grad_nll, log_probs, targets, input_lengths, target_lengths, nll, log_alpha, blank);
}

std::tuple<at::Tensor, at::Tensor> ctc_greedy_decode(const at::Tensor& log_probs, const at::Tensor& input_lengths,
                                                     int64_t blank) {
  PYSEQ_CALL_OP(ctc_greedy_decode, log_probs, input_lengths, blank);
}

std::tuple<at::Tensor, at::Tensor> ctc_forced_align(const at::Tensor& log_probs, const at::Tensor& targets,
                                                    const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                                    int64_t blank) {
  PYSEQ_CALL_OP(ctc_forced_align, log_probs, targets, input_lengths, target_lengths, blank);
}

namespace {

// The loss as differentiable ATen ops, for backward with create_graph (csrc/common/double_backward.h): the forward
// variables over the extended label sequence (blank, l_1, blank, ..., l_S, blank) of every sequence at once, step by
// step, with kCompositeLogZero for impossible states. Arguments as the op's; returns nll [N], +inf as the kernels' where
// no alignment exists.
at::Tensor loss_composite(const at::Tensor& log_probs, const at::Tensor& targets, const at::Tensor& input_lengths,
                          const at::Tensor& target_lengths, int64_t blank) {
  const at::Tensor lp = composite_compute_type(log_probs).clamp_min(kCompositeLogZero);  // [T, N, C]
  const int64_t T = lp.size(0), N = lp.size(1);
  const at::Tensor in_len = input_lengths.to(at::kLong).to(lp.device());
  const at::Tensor tg_len = target_lengths.to(at::kLong).to(lp.device());
  // [N, S]: one row of labels per sequence (from the padded or the concatenated form), blanks past its length
  at::Tensor padded = targets.to(at::kLong).to(lp.device());
  const int64_t S = padded.dim() == 2 ? padded.size(1) : (N > 0 ? tg_len.max().item<int64_t>() : 0);
  const at::Tensor label = at::arange(S, tg_len.options()).unsqueeze(0);
  const at::Tensor inside = label < tg_len.unsqueeze(1);
  if (padded.dim() == 1) {
    const at::Tensor index = (tg_len.cumsum(0) - tg_len).unsqueeze(1) + label;
    padded = padded.numel() > 0 ? padded.index({index.clamp_max(padded.numel() - 1)}) : at::zeros_like(index);
  }
  padded = at::where(inside, padded, blank);
  const int64_t L = 2 * S + 1;
  // [N, L]: blank, l_1, blank, ..., l_S, blank
  const at::Tensor ext = at::constant_pad_nd(at::stack({at::full_like(padded, blank), padded}, 2).reshape({N, 2 * S}),
                                             {0, 1}, blank);
  const at::Tensor position = at::arange(L, tg_len.options()).unsqueeze(0);  // [1, L]
  const at::Tensor valid = position < (2 * tg_len + 1).unsqueeze(1);         // [N, L]
  at::Tensor skip = at::zeros({N, L}, valid.options());                     // s - 2 -> s allowed
  if (L > 2) {
    const at::Tensor differs = ext.narrow(1, 2, L - 2) != ext.narrow(1, 0, L - 2);
    skip.narrow(1, 2, L - 2).copy_(differs & (position.narrow(1, 2, L - 2) % 2 == 1));
  }
  const double zero = kCompositeLogZero;
  const auto emit = [&](int64_t t) { return at::where(valid, lp.select(0, t).gather(1, ext), zero); };
  // Before the first frame only the empty prefix, at position 0, has probability 1.
  at::Tensor alpha = at::where(position < 1, 0.0, at::full({N, L}, zero, lp.options()));
  if (T > 0) alpha = at::where((in_len > 0).unsqueeze(1), at::where(position < 2, emit(0), zero), alpha);
  for (int64_t t = 1; t < T; ++t) {
    const at::Tensor stay = alpha;
    const at::Tensor step = at::constant_pad_nd(alpha.narrow(1, 0, L - 1), {1, 0}, zero);
    const at::Tensor jump = L > 2 ? at::where(skip, at::constant_pad_nd(alpha.narrow(1, 0, L - 2), {2, 0}, zero), zero)
                                  : at::full_like(alpha, zero);
    const at::Tensor next = at::logsumexp(at::stack({stay, step, jump}), 0) + emit(t);
    alpha = at::where((in_len > t).unsqueeze(1), next, alpha);
  }
  const at::Tensor last = (2 * tg_len).unsqueeze(1), before = (2 * tg_len - 1).clamp_min(0).unsqueeze(1);
  const at::Tensor end_blank = alpha.gather(1, last).squeeze(1);
  const at::Tensor end_label = at::where(tg_len > 0, alpha.gather(1, before).squeeze(1), zero);
  return -impossible_as_neginf(at::logsumexp(at::stack({end_blank, end_label}), 0));
}

// The loss's derivative (csrc/common/autograd_kernel.h): with respect to the log-probs only.
struct LossDerivative {
  static constexpr auto forward = &ctc_loss;
  static constexpr std::array<size_t, 1> kDifferentiable{0};

  static void save(AutogradContext* ctx, const std::tuple<at::Tensor, at::Tensor>& results, const at::Tensor& log_probs,
                   const at::Tensor& targets, const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                   int64_t blank) {
    const auto& [nll, log_alpha] = results;
    ctx->save_for_backward({log_probs, targets, input_lengths, target_lengths, nll, log_alpha});
    ctx->saved_data["blank"] = blank;
    ctx->mark_non_differentiable({log_alpha});
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const variable_list s = ctx->get_saved_variables();
    return {
        ctc_loss_backward(grads[0].contiguous(), s[0], s[1], s[2], s[3], s[4], s[5], ctx->saved_data["blank"].toInt())};
  }

  static variable_list backward_composite(AutogradContext* ctx, const variable_list& grads) {
    const variable_list s = ctx->get_saved_variables();
    const int64_t blank = ctx->saved_data["blank"].toInt();
    return differentiable_vjp({grads[0]}, {s[0]}, [&](const auto& in) {
      return variable_list{loss_composite(in[0], s[1], s[2], s[3], blank)};
    });
  }

  static std::tuple<at::Tensor, at::Tensor> composite(const at::Tensor& log_probs, const at::Tensor& targets,
                                                      const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                                      int64_t blank) {
    return {loss_composite(log_probs, targets, input_lengths, target_lengths, blank),
            at::empty({0}, log_probs.options())};
  }
};

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

TORCH_LIBRARY_IMPL(pyseq, Autograd, m) {
  m.impl("ctc_loss", PYSEQ_AUTOGRAD_KERNEL(pyseq::LossDerivative));
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
