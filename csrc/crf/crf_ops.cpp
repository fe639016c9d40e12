// The CRF ops registered as torch operators in C++: the schemas, a CPU kernel each, and the autograd kernels of the
// differentiable ones (log-likelihood, log partition, path score), once for every device.
//
// A Python wrapper (torch.library.custom_op) costs ~40 us per call when warm and ~170 us right after other
// Python-heavy work (measured), for the forward and again for the backward: 10-25% of a whole CRF training step at the
// standard sizes. Registered here, eager calls go straight from the dispatcher to the kernel; the fake (meta) kernels
// stay in Python (pyseq/_ops/crf.py), so torch.compile traces them like any other op.
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>

#include "../common/autocast.h"
#include "../common/double_backward.h"
#include "../common/float32_compute.h"
#include "../common/ops.h"
#include "../common/checks.h"
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

Forward log_partition_cpu(const at::Tensor& emissions, const at::Tensor& lengths, const at::Tensor& start,
                          const at::Tensor& end, const at::Tensor& transitions) {
  std::vector<at::Tensor> out = crf_log_partition_cpu(emissions, lengths, start, end, transitions);
  return {out[0], out[1], out[2]};
}

Gradients log_partition_backward_cpu(const at::Tensor& grad_log_z, const at::Tensor& emissions,
                                     const at::Tensor& lengths, const at::Tensor& start, const at::Tensor& end,
                                     const at::Tensor& transitions, const at::Tensor& log_alpha,
                                     const at::Tensor& alpha_shift) {
  std::vector<at::Tensor> g = crf_log_partition_backward_cpu(grad_log_z, emissions, lengths, start, end, transitions,
                                                             log_alpha, alpha_shift);
  return {g[0], g[1], g[2], g[3]};
}

Gradients path_score_backward_cpu(const at::Tensor& grad_score, const at::Tensor& emissions, const at::Tensor& tags,
                                  const at::Tensor& lengths) {
  check_dim(emissions, "emissions", 3, "(batch, seq_length, num_tags)");
  std::vector<at::Tensor> g = crf_path_score_backward_cpu(grad_score, emissions, tags, lengths, emissions.size(2));
  return {g[0], g[1], g[2], g[3]};
}

std::tuple<at::Tensor, at::Tensor> viterbi_cpu(const at::Tensor& emissions, const at::Tensor& lengths,
                                               const at::Tensor& start, const at::Tensor& end,
                                               const at::Tensor& transitions, int64_t nbest) {
  std::vector<at::Tensor> out = crf_viterbi_cpu(emissions, lengths, start, end, transitions, nbest);
  return {out[0], out[1]};
}

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

class LogPartition : public torch::autograd::Function<LogPartition> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& emissions,
                                                const at::Tensor& lengths, const at::Tensor& start,
                                                const at::Tensor& end, const at::Tensor& transitions) {
    static const auto op = find_op<decltype(log_partition_cpu)>("pyseq::crf_log_partition");
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [log_z, log_alpha, alpha_shift] = op.call(emissions, lengths, start, end, transitions);
    ctx->save_for_backward({emissions, lengths, start, end, transitions, log_alpha, alpha_shift});
    ctx->mark_non_differentiable({log_alpha, alpha_shift});
    ctx->set_materialize_grads(false);
    return {log_z, log_alpha, alpha_shift};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    if (!grads[0].defined()) return torch::autograd::variable_list(5);
    const torch::autograd::variable_list s = ctx->get_saved_variables();
    if (backward_builds_graph()) {
      return differentiable_vjp({grads[0]}, {s[0], at::Tensor(), s[2], s[3], s[4]}, [&](const auto& in) {
        return torch::autograd::variable_list{log_partition_composite(in[0], s[1], in[2], in[3], in[4])};
      });
    }
    static const auto op = find_op<decltype(log_partition_backward_cpu)>("pyseq::crf_log_partition_backward");
    auto [g_em, g_start, g_end, g_trans] = op.call(grads[0].contiguous(), s[0], s[1], s[2], s[3], s[4], s[5], s[6]);
    return {g_em, at::Tensor(), g_start, g_end, g_trans};
  }
};

class PathScore : public torch::autograd::Function<PathScore> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& emissions,
                                                const at::Tensor& tags, const at::Tensor& lengths,
                                                const at::Tensor& start, const at::Tensor& end,
                                                const at::Tensor& transitions) {
    static const auto op = find_op<decltype(crf_path_score_cpu)>("pyseq::crf_path_score");
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor score = op.call(emissions, tags, lengths, start, end, transitions);
    ctx->save_for_backward({emissions, tags, lengths, start, end, transitions});
    ctx->set_materialize_grads(false);
    return {score};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    if (!grads[0].defined()) return torch::autograd::variable_list(6);
    const torch::autograd::variable_list s = ctx->get_saved_variables();
    if (backward_builds_graph()) {
      return differentiable_vjp({grads[0]}, {s[0], at::Tensor(), at::Tensor(), s[3], s[4], s[5]}, [&](const auto& in) {
        return torch::autograd::variable_list{path_score_composite(in[0], s[1], s[2], in[3], in[4], in[5])};
      });
    }
    static const auto op = find_op<decltype(path_score_backward_cpu)>("pyseq::crf_path_score_backward");
    auto [g_em, g_start, g_end, g_trans] = op.call(grads[0].contiguous(), s[0], s[1], s[2]);
    return {g_em, at::Tensor(), at::Tensor(), g_start, g_end, g_trans};
  }
};

class LogLikelihood : public torch::autograd::Function<LogLikelihood> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& emissions,
                                                const at::Tensor& tags, const at::Tensor& lengths,
                                                const at::Tensor& start, const at::Tensor& end,
                                                const at::Tensor& transitions) {
    static const auto op = find_op<decltype(log_likelihood_cpu)>("pyseq::crf_log_likelihood");
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
    const torch::autograd::variable_list s = ctx->get_saved_variables();
    if (backward_builds_graph()) {
      return differentiable_vjp({grads[0]}, {s[0], at::Tensor(), at::Tensor(), s[3], s[4], s[5]}, [&](const auto& in) {
        return torch::autograd::variable_list{log_likelihood_composite(in[0], s[1], s[2], in[3], in[4], in[5])};
      });
    }
    static const auto op = find_op<decltype(log_likelihood_backward_cpu)>("pyseq::crf_log_likelihood_backward");
    auto [g_em, g_start, g_end, g_trans] =
        op.call(grads[0].contiguous(), s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8]);
    return {g_em, at::Tensor(), at::Tensor(), g_start, g_end, g_trans};
  }
};

Forward log_likelihood_autograd(const at::Tensor& emissions, const at::Tensor& tags, const at::Tensor& lengths,
                                const at::Tensor& start, const at::Tensor& end, const at::Tensor& transitions) {
  if (inside_functorch_transform()) {
    const at::Tensor none = at::empty({0}, emissions.options());
    return {log_likelihood_composite(emissions, tags, lengths, start, end, transitions), none, none};
  }
  torch::autograd::variable_list out = LogLikelihood::apply(emissions, tags, lengths, start, end, transitions);
  return {out[0], out[1], out[2]};
}

Forward log_partition_autograd(const at::Tensor& emissions, const at::Tensor& lengths, const at::Tensor& start,
                               const at::Tensor& end, const at::Tensor& transitions) {
  if (inside_functorch_transform()) {
    const at::Tensor none = at::empty({0}, emissions.options());
    return {log_partition_composite(emissions, lengths, start, end, transitions), none, none};
  }
  torch::autograd::variable_list out = LogPartition::apply(emissions, lengths, start, end, transitions);
  return {out[0], out[1], out[2]};
}

at::Tensor path_score_autograd(const at::Tensor& emissions, const at::Tensor& tags, const at::Tensor& lengths,
                               const at::Tensor& start, const at::Tensor& end, const at::Tensor& transitions) {
  if (inside_functorch_transform()) return path_score_composite(emissions, tags, lengths, start, end, transitions);
  return PathScore::apply(emissions, tags, lengths, start, end, transitions)[0];
}

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

TORCH_LIBRARY_IMPL(pyseq, CPU, m) {
  m.impl("crf_log_likelihood", PYSEQ_FLOAT32_RESULTS(pyseq::log_likelihood_cpu));
  m.impl("crf_log_likelihood_backward", PYSEQ_FLOAT32_RESULTS(pyseq::log_likelihood_backward_cpu));
  m.impl("crf_log_partition", PYSEQ_FLOAT32_RESULTS(pyseq::log_partition_cpu));
  m.impl("crf_log_partition_backward", PYSEQ_FLOAT32_RESULTS(pyseq::log_partition_backward_cpu));
  m.impl("crf_path_score", PYSEQ_FLOAT32_RESULTS(pyseq::crf_path_score_cpu));
  m.impl("crf_path_score_backward", PYSEQ_FLOAT32_RESULTS(pyseq::path_score_backward_cpu));
  m.impl("crf_marginals", PYSEQ_FLOAT32_RESULTS(pyseq::crf_marginals_cpu));
  m.impl("crf_viterbi", PYSEQ_FLOAT32_RESULTS(pyseq::viterbi_cpu));
}

TORCH_LIBRARY_IMPL(pyseq, Autograd, m) {
  m.impl("crf_log_likelihood", &pyseq::log_likelihood_autograd);
  m.impl("crf_log_partition", &pyseq::log_partition_autograd);
  m.impl("crf_path_score", &pyseq::path_score_autograd);
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
