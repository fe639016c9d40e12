// The CRF ops registered as torch operators in C++: the schemas, the front functions that call them (crf_ops.h),
// the autograd of the differentiable ones (log-likelihood, log partition, path score) and the autocast policy.
//
// A Python wrapper (torch.library.custom_op) costs ~40 us per call when warm and ~170 us right after other
// Python-heavy work (measured), for the forward and again for the backward: 10-25% of a whole CRF training step at the
// standard sizes. Registered here, eager calls go straight from the dispatcher to the kernel; the fake (meta) kernels
// stay in Python (pyseq/_ops/crf.py), so torch.compile traces them like any other op.
#include "crf_ops.h"

#include <torch/library.h>

#include <array>
#include <limits>
#include <tuple>

#include "../common/autocast.h"
#include "../common/autograd_kernel.h"
#include "../common/ops.h"

namespace pyseq {

using Forward = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Gradients = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Forward crf_log_partition(const at::Tensor& emissions, const at::Tensor& lengths, const at::Tensor& start,
                          const at::Tensor& end, const at::Tensor& transitions) {
  PYSEQ_CALL_OP(crf_log_partition, emissions, lengths, start, end, transitions);
}

Gradients crf_log_partition_backward(const at::Tensor& grad_log_z, const at::Tensor& emissions,
                                     const at::Tensor& lengths, const at::Tensor& start, const at::Tensor& end,
                                     const at::Tensor& transitions, const at::Tensor& log_alpha,
                                     const at::Tensor& alpha_shift) {
  PYSEQ_CALL_OP(crf_log_partition_backward, grad_log_z, emissions, lengths, start, end, transitions, log_alpha,
                alpha_shift);
}

at::Tensor crf_marginals(const at::Tensor& emissions, const at::Tensor& lengths, const at::Tensor& start,
                         const at::Tensor& end, const at::Tensor& transitions) {
  PYSEQ_CALL_OP(crf_marginals, emissions, lengths, start, end, transitions);
}

at::Tensor crf_path_score(const at::Tensor& emissions, const at::Tensor& tags, const at::Tensor& lengths,
                          const at::Tensor& start, const at::Tensor& end, const at::Tensor& transitions) {
  PYSEQ_CALL_OP(crf_path_score, emissions, tags, lengths, start, end, transitions);
}

Gradients crf_path_score_backward(const at::Tensor& grad_score, const at::Tensor& emissions, const at::Tensor& tags,
                                  const at::Tensor& lengths) {
  PYSEQ_CALL_OP(crf_path_score_backward, grad_score, emissions, tags, lengths);
}

Forward crf_log_likelihood(const at::Tensor& emissions, const at::Tensor& tags, const at::Tensor& lengths,
                           const at::Tensor& start, const at::Tensor& end, const at::Tensor& transitions) {
  PYSEQ_CALL_OP(crf_log_likelihood, emissions, tags, lengths, start, end, transitions);
}

Gradients crf_log_likelihood_backward(const at::Tensor& grad_llh, const at::Tensor& emissions, const at::Tensor& tags,
                                      const at::Tensor& lengths, const at::Tensor& start, const at::Tensor& end,
                                      const at::Tensor& transitions, const at::Tensor& llh, const at::Tensor& log_alpha,
                                      const at::Tensor& alpha_shift) {
  PYSEQ_CALL_OP(crf_log_likelihood_backward, grad_llh, emissions, tags, lengths, start, end, transitions, llh,
                log_alpha, alpha_shift);
}

std::tuple<at::Tensor, at::Tensor> crf_viterbi(const at::Tensor& emissions, const at::Tensor& lengths,
                                               const at::Tensor& start, const at::Tensor& end,
                                               const at::Tensor& transitions, int64_t nbest) {
  PYSEQ_CALL_OP(crf_viterbi, emissions, lengths, start, end, transitions, nbest);
}

namespace {

// The CRF's scores as differentiable ATen ops, for backward with create_graph (csrc/common/double_backward.h).
// Arguments as the ops'; -inf scores (constraints) stand as kCompositeLogZero, which changes no finite result.

// lengths [B] int64, from lengths or a prefix mask [B, T].
at::Tensor lengths_of(const at::Tensor& lengths) {
  return lengths.dim() == 2 ? lengths.to(at::kLong).sum(1) : lengths.to(at::kLong);
}

at::Tensor finite_scores(const at::Tensor& scores) {
  return composite_compute_type(scores).clamp_min(kCompositeLogZero);
}

// log Z [B] by the forward algorithm, step by step; 0 for a sequence of length 0, -inf where no path is allowed.
at::Tensor log_partition_composite(const at::Tensor& emissions, const at::Tensor& lengths, const at::Tensor& start,
                                   const at::Tensor& end, const at::Tensor& transitions) {
  const at::Tensor em = finite_scores(emissions), len = lengths_of(lengths).to(em.device());
  const int64_t T = em.size(1);
  if (T == 0) return at::zeros({em.size(0)}, em.options());
  const at::Tensor trans = finite_scores(transitions).unsqueeze(0);
  at::Tensor alpha = finite_scores(start) + em.select(1, 0);  // [B, K]
  for (int64_t t = 1; t < T; ++t) {
    const at::Tensor next = at::logsumexp(alpha.unsqueeze(2) + trans, 1) + em.select(1, t);
    alpha = at::where((len > t).unsqueeze(1), next, alpha);
  }
  return at::where(len > 0, impossible_as_neginf(at::logsumexp(alpha + finite_scores(end), 1)), 0);
}

// The score [B] of the tag paths (tags past each length ignored), -inf for a forbidden one.
at::Tensor path_score_composite(const at::Tensor& emissions, const at::Tensor& tags, const at::Tensor& lengths,
                                const at::Tensor& start, const at::Tensor& end, const at::Tensor& transitions) {
  const at::Tensor em = finite_scores(emissions), len = lengths_of(lengths).to(em.device());
  const int64_t B = em.size(0), T = em.size(1), K = em.size(2);
  if (T == 0) return at::zeros({B}, em.options());
  const at::Tensor on = at::arange(T, len.options()).unsqueeze(0) < len.unsqueeze(1);  // [B, T]
  const at::Tensor y = at::where(on, tags.to(at::kLong), 0);
  at::Tensor score = at::where(on, em.gather(2, y.unsqueeze(2)).squeeze(2), 0).sum(1);
  if (T > 1) {
    const at::Tensor pair = y.narrow(1, 0, T - 1) * K + y.narrow(1, 1, T - 1);
    const at::Tensor moves = finite_scores(transitions).reshape(-1).index_select(0, pair.reshape(-1)).view({B, T - 1});
    score = score + at::where(on.narrow(1, 1, T - 1), moves, 0).sum(1);
  }
  const at::Tensor last = y.gather(1, (len - 1).clamp_min(0).unsqueeze(1)).squeeze(1);
  const at::Tensor ends = finite_scores(start).index_select(0, y.select(1, 0)) + finite_scores(end).index_select(0, last);
  return impossible_as_neginf(score + at::where(len > 0, ends, 0));
}

// The log-likelihood [B] of the tag paths: -inf where the path is forbidden or no path is allowed.
at::Tensor log_likelihood_composite(const at::Tensor& emissions, const at::Tensor& tags, const at::Tensor& lengths,
                                    const at::Tensor& start, const at::Tensor& end, const at::Tensor& transitions) {
  const at::Tensor score = path_score_composite(emissions, tags, lengths, start, end, transitions);
  const at::Tensor log_z = log_partition_composite(emissions, lengths, start, end, transitions);
  return at::where(score.isneginf() | log_z.isneginf(), -std::numeric_limits<double>::infinity(), score - log_z);
}

// The derivatives (csrc/common/autograd_kernel.h): with respect to the emissions and the start, end and transition
// scores; the lengths and tags are not differentiable, nor are the forward variables kept for the backward.
struct LogPartitionDerivative {
  static constexpr auto forward = &crf_log_partition;
  static constexpr std::array<size_t, 4> kDifferentiable{0, 2, 3, 4};

  static void save(AutogradContext* ctx, const Forward& results, const at::Tensor& emissions, const at::Tensor& lengths,
                   const at::Tensor& start, const at::Tensor& end, const at::Tensor& transitions) {
    const auto& [log_z, log_alpha, alpha_shift] = results;
    ctx->save_for_backward({emissions, lengths, start, end, transitions, log_alpha, alpha_shift});
    ctx->mark_non_differentiable({log_alpha, alpha_shift});
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const variable_list s = ctx->get_saved_variables();
    auto [g_em, g_start, g_end, g_trans] =
        crf_log_partition_backward(grads[0].contiguous(), s[0], s[1], s[2], s[3], s[4], s[5], s[6]);
    return {g_em, g_start, g_end, g_trans};
  }

  static variable_list backward_composite(AutogradContext* ctx, const variable_list& grads) {
    const variable_list s = ctx->get_saved_variables();
    return differentiable_vjp({grads[0]}, {s[0], s[2], s[3], s[4]}, [&](const auto& in) {
      return variable_list{log_partition_composite(in[0], s[1], in[1], in[2], in[3])};
    });
  }

  static Forward composite(const at::Tensor& emissions, const at::Tensor& lengths, const at::Tensor& start,
                           const at::Tensor& end, const at::Tensor& transitions) {
    const at::Tensor none = at::empty({0}, emissions.options());
    return {log_partition_composite(emissions, lengths, start, end, transitions), none, none};
  }
};

struct PathScoreDerivative {
  static constexpr auto forward = &crf_path_score;
  static constexpr std::array<size_t, 4> kDifferentiable{0, 3, 4, 5};

  static void save(AutogradContext* ctx, const at::Tensor& score, const at::Tensor& emissions, const at::Tensor& tags,
                   const at::Tensor& lengths, const at::Tensor& start, const at::Tensor& end,
                   const at::Tensor& transitions) {
    ctx->save_for_backward({emissions, tags, lengths, start, end, transitions});
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const variable_list s = ctx->get_saved_variables();
    auto [g_em, g_start, g_end, g_trans] = crf_path_score_backward(grads[0].contiguous(), s[0], s[1], s[2]);
    return {g_em, g_start, g_end, g_trans};
  }

  static variable_list backward_composite(AutogradContext* ctx, const variable_list& grads) {
    const variable_list s = ctx->get_saved_variables();
    return differentiable_vjp({grads[0]}, {s[0], s[3], s[4], s[5]}, [&](const auto& in) {
      return variable_list{path_score_composite(in[0], s[1], s[2], in[1], in[2], in[3])};
    });
  }

  static at::Tensor composite(const at::Tensor& emissions, const at::Tensor& tags, const at::Tensor& lengths,
                              const at::Tensor& start, const at::Tensor& end, const at::Tensor& transitions) {
    return path_score_composite(emissions, tags, lengths, start, end, transitions);
  }
};

struct LogLikelihoodDerivative {
  static constexpr auto forward = &crf_log_likelihood;
  static constexpr std::array<size_t, 4> kDifferentiable{0, 3, 4, 5};

  static void save(AutogradContext* ctx, const Forward& results, const at::Tensor& emissions, const at::Tensor& tags,
                   const at::Tensor& lengths, const at::Tensor& start, const at::Tensor& end,
                   const at::Tensor& transitions) {
    const auto& [llh, log_alpha, alpha_shift] = results;
    ctx->save_for_backward({emissions, tags, lengths, start, end, transitions, llh, log_alpha, alpha_shift});
    ctx->mark_non_differentiable({log_alpha, alpha_shift});
  }

  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    const variable_list s = ctx->get_saved_variables();
    auto [g_em, g_start, g_end, g_trans] =
        crf_log_likelihood_backward(grads[0].contiguous(), s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8]);
    return {g_em, g_start, g_end, g_trans};
  }

  static variable_list backward_composite(AutogradContext* ctx, const variable_list& grads) {
    const variable_list s = ctx->get_saved_variables();
    return differentiable_vjp({grads[0]}, {s[0], s[3], s[4], s[5]}, [&](const auto& in) {
      return variable_list{log_likelihood_composite(in[0], s[1], s[2], in[1], in[2], in[3])};
    });
  }

  static Forward composite(const at::Tensor& emissions, const at::Tensor& tags, const at::Tensor& lengths,
                           const at::Tensor& start, const at::Tensor& end, const at::Tensor& transitions) {
    const at::Tensor none = at::empty({0}, emissions.options());
    return {log_likelihood_composite(emissions, tags, lengths, start, end, transitions), none, none};
  }
};

}  // namespace
}  // namespace pyseq

TORCH_LIBRARY_FRAGMENT(pyseq, m) {
  m.def(
      "crf_log_partition(Tensor emissions, Tensor lengths, Tensor start, Tensor end, Tensor transitions) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "crf_log_partition_backward(Tensor grad_log_z, Tensor emissions, Tensor lengths, Tensor start, Tensor end, "
      "Tensor transitions, Tensor log_alpha, Tensor alpha_shift) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "crf_path_score(Tensor emissions, Tensor tags, Tensor lengths, Tensor start, Tensor end, Tensor transitions) "
      "-> Tensor");
  m.def(
      "crf_path_score_backward(Tensor grad_score, Tensor emissions, Tensor tags, Tensor lengths) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def("crf_marginals(Tensor emissions, Tensor lengths, Tensor start, Tensor end, Tensor transitions) -> Tensor");
  m.def(
      "crf_viterbi(Tensor emissions, Tensor lengths, Tensor start, Tensor end, Tensor transitions, int nbest) "
      "-> (Tensor, Tensor)");
  m.def(
      "crf_log_likelihood(Tensor emissions, Tensor tags, Tensor lengths, Tensor start, Tensor end, "
      "Tensor transitions) -> (Tensor, Tensor, Tensor)");
  m.def(
      "crf_log_likelihood_backward(Tensor grad_llh, Tensor emissions, Tensor tags, Tensor lengths, Tensor start, "
      "Tensor end, Tensor transitions, Tensor llh, Tensor log_alpha, Tensor alpha_shift) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pyseq, Autograd, m) {
  m.impl("crf_log_likelihood", PYSEQ_AUTOGRAD_KERNEL(pyseq::LogLikelihoodDerivative));
  m.impl("crf_log_partition", PYSEQ_AUTOGRAD_KERNEL(pyseq::LogPartitionDerivative));
  m.impl("crf_path_score", PYSEQ_AUTOGRAD_KERNEL(pyseq::PathScoreDerivative));
  // Decoding and posteriors are not differentiable: their results never require grad (as argmax's), so that
  // they run on inputs that do, under torch.compile too (a raising backward would fail its joint graph).
  m.impl("crf_marginals", torch::CppFunction::makeFallthrough());
  m.impl("crf_viterbi", torch::CppFunction::makeFallthrough());
}

// Under autocast: float32, as torch's CTC loss (csrc/common/autocast.h); the backward ops run below autocast.
namespace {
const pyseq::AutocastOps kAutocastOps{
    {},
    {"crf_log_likelihood", "crf_log_partition", "crf_path_score", "crf_marginals", "crf_viterbi"},
    {"crf_log_likelihood_backward", "crf_log_partition_backward", "crf_path_score_backward"}};
}
PYSEQ_REGISTER_AUTOCAST(kAutocastOps)
