// Linear-chain CRF on the CPU: forward algorithm (log Z), forward-backward gradient and marginals, path scores.
// Parallel over the batch; the recursions run in the mixed space described in crf_math.h.
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "../common/cpu_dispatch.h"
#include "crf.h"
#include "crf_args.h"
#include "crf_math.h"
#include "crf_rows.h"

namespace pyseq {
namespace {

// The exponentiated transition matrix in the three shifts the recursions use, built once per call.
template <typename T>
struct TransitionTables {
  // Rows are padded to Kp = padded_tags(K) columns of zeros.
  int64_t Kp;
  std::vector<T> col_exp;    // [K, Kp]: exp(transitions[i][j] - col_shift[j])      (forward:  u = p @ col_exp)
  std::vector<T> col_shift;  // [Kp], padding 0
  std::vector<T> row_exp_t;  // [K, Kp]: [j][i] = exp(transitions[i][j] - row_shift[i]) (backward: v = r @ row_exp_t)
  std::vector<T> row_shift;  // [Kp], padding 0
  std::vector<T> all_exp;    // [K, Kp]: exp(transitions[i][j] - all_shift)        (pairwise marginals)
  T all_shift;

  TransitionTables(const T* trans, int64_t K)
      : Kp(padded_tags<T>(K)),
        col_exp(K * Kp),
        col_shift(Kp),
        row_exp_t(K * Kp),
        row_shift(Kp),
        all_exp(K * Kp) {
    all_shift = finite_shift(max_of(trans, K * K));
    for (int64_t i = 0; i < K; ++i) row_shift[i] = finite_shift(max_of(trans + i * K, K));
    for (int64_t j = 0; j < K; ++j) {
      T m = neg_inf<T>();
      for (int64_t i = 0; i < K; ++i) m = std::max(m, trans[i * K + j]);
      col_shift[j] = finite_shift(m);
    }
    for (int64_t i = 0; i < K; ++i) {
      for (int64_t j = 0; j < K; ++j) {
        const T x = trans[i * K + j];
        col_exp[i * Kp + j] = std::exp(x - col_shift[j]);
        row_exp_t[j * Kp + i] = std::exp(x - row_shift[i]);
        all_exp[i * Kp + j] = std::exp(x - all_shift);
      }
    }
  }
};

// Forward algorithm over one sequence of length L >= 1. em: step t at em + t * st.
//
// The log forward variables are kept relative to a running shift: alpha[t][j] + shift[t] is log of the summed scores
// of the prefixes of length t + 1 ending in tag j. alpha stays within the range of one step's scores, and the shift
// (which grows with t, to thousands for long sequences) is summed in double, so that float32 keeps its precision for
// the differences that matter (marginals are exp(alpha + beta - log Z)).
//
// Every per-step vector has Kp = padded_tags(K) entries, the padding being -inf in log space and 0 in probability
// space, so that each loop runs over whole vectors. alpha: [L, Kp]; e_pad, p, u: [Kp] scratch (e_pad's padding -inf).
template <typename T>
PYSEQ_ALWAYS_INLINE void forward_sequence_impl(const T* em, int64_t st, int64_t L, int64_t K, int64_t Kp,
                                               const T* __restrict__ start, const T* __restrict__ trans,
                                               const T* __restrict__ col_exp, const T* __restrict__ col_shift,
                                               T* __restrict__ alpha, double* __restrict__ shift,
                                               T* __restrict__ e_pad, T* __restrict__ p, T* __restrict__ u) {
  for (int64_t j = 0; j < Kp; ++j) alpha[j] = j < K ? start[j] + em[j] : neg_inf<T>();
  shift[0] = 0;
  for (int64_t t = 1; t < L; ++t) {
    const T* __restrict__ prev = alpha + (t - 1) * Kp;
    T* __restrict__ cur = alpha + t * Kp;
    const T m = max_of(prev, Kp);
    if (m == neg_inf<T>()) {
      std::fill(cur, cur + Kp, neg_inf<T>());
      shift[t] = shift[t - 1];
      continue;
    }
    shift[t] = shift[t - 1] + m;
    if (t + kPrefetchSteps < L) prefetch_row(em + (t + kPrefetchSteps) * st);
    std::copy(em + t * st, em + t * st + K, e_pad);
    for (int64_t i = 0; i < Kp; ++i) p[i] = exp_or_zero(prev[i] - m);
    vector_matrix_product(p, col_exp, K, Kp, u);
    for (int64_t j = 0; j < Kp; ++j) {
      cur[j] = col_shift[j] + log_positive(u[j] > CrfLimits<T>::tiny ? u[j] : T(1)) + e_pad[j];
    }
    for (int64_t j = 0; j < K; ++j) {
      if (!(u[j] > CrfLimits<T>::tiny)) cur[j] = log_sum_exp_plus(prev, trans + j, K, K) - m + e_pad[j];
    }
  }
}

PYSEQ_CPU_CLONES void forward_sequence(const float* em, int64_t st, int64_t L, int64_t K, int64_t Kp,
                                       const float* start, const float* trans, const float* col_exp,
                                       const float* col_shift, float* alpha, double* shift, float* e_pad, float* p,
                                       float* u) {
  forward_sequence_impl(em, st, L, K, Kp, start, trans, col_exp, col_shift, alpha, shift, e_pad, p, u);
}
void forward_sequence(const double* em, int64_t st, int64_t L, int64_t K, int64_t Kp, const double* start,
                      const double* trans, const double* col_exp, const double* col_shift, double* alpha,
                      double* shift, double* e_pad, double* p, double* u) {
  forward_sequence_impl(em, st, L, K, Kp, start, trans, col_exp, col_shift, alpha, shift, e_pad, p, u);
}

// Accumulators of one chunk of the batch for the backward: transition, start and end gradients.
template <typename T>
struct GradientSums {
  std::vector<T> pair_scaled;  // [K, Kp], to be multiplied by all_exp at the end
  std::vector<T> pair_exact;   // [K, K], steps done exactly in log space
  std::vector<T> start, end;   // [K]
  explicit GradientSums(int64_t K) : pair_scaled(K * padded_tags<T>(K)), pair_exact(K * K), start(K), end(K) {}
};

// Scratch vectors of the backward recursion, [Kp] each; e_pad's padding is -inf.
template <typename T>
struct BackwardScratch {
  std::vector<T> beta, beta_prev, e_pad, w, r, p, v, node;
  explicit BackwardScratch(int64_t K)
      : beta(padded_tags<T>(K)),
        beta_prev(padded_tags<T>(K)),
        e_pad(padded_tags<T>(K), neg_inf<T>()),
        w(padded_tags<T>(K)),
        r(padded_tags<T>(K)),
        p(padded_tags<T>(K)),
        v(padded_tags<T>(K)),
        node(padded_tags<T>(K)) {}
};

// Backward recursion over one sequence of length L >= 1 with an allowed path (log_z_rel finite), from the forward
// variables (alpha [L, Kp], shift) of forward_sequence; log Z = shift[L - 1] + log_z_rel. Beta is kept relative to
// its own running shift in double, like alpha, and padded like it (the padding of beta itself never matters: it
// only meets -inf emissions). Writes g * P(y_t = j) into out (step t at out + t * st) and, when `pairwise`, adds g
// times the pairwise marginals summed over steps, and the first and last node marginals, to sums.
template <typename T>
PYSEQ_ALWAYS_INLINE void backward_sequence_impl(const T* em, int64_t st, int64_t L, int64_t K, T g, T log_z_rel,
                                                const T* __restrict__ end, const T* __restrict__ trans,
                                                const TransitionTables<T>& tables, const T* __restrict__ alpha,
                                                const double* __restrict__ shift, T* out, bool pairwise,
                                                GradientSums<T>& sums, BackwardScratch<T>& scratch) {
  T* __restrict__ beta = scratch.beta.data();
  T* __restrict__ beta_prev = scratch.beta_prev.data();
  T* __restrict__ e_pad = scratch.e_pad.data();
  T* __restrict__ w = scratch.w.data();
  T* __restrict__ r = scratch.r.data();
  T* __restrict__ p = scratch.p.data();
  T* __restrict__ v = scratch.v.data();
  T* __restrict__ node = scratch.node.data();
  const T* __restrict__ row_exp_t = tables.row_exp_t.data();
  const T* __restrict__ row_shift = tables.row_shift.data();
  T* __restrict__ pair = sums.pair_scaled.data();
  const int64_t Kp = tables.Kp;
  const double log_z = shift[L - 1] + static_cast<double>(log_z_rel);
  double beta_shift = 0;  // beta[j] + beta_shift is the log backward variable of step t
  std::copy(end, end + K, beta);
  std::fill(beta + K, beta + Kp, neg_inf<T>());
  for (int64_t t = L - 1;; --t) {
    const T* __restrict__ a = alpha + t * Kp;
    const T node_offset = static_cast<T>(shift[t] + beta_shift - log_z);
    for (int64_t j = 0; j < Kp; ++j) node[j] = g * exp_or_zero(a[j] + beta[j] + node_offset);
    std::copy(node, node + K, out + t * st);
    if (pairwise && t == L - 1) {
      for (int64_t j = 0; j < K; ++j) sums.end[j] += node[j];
    }
    if (t == 0) {
      if (pairwise) {
        for (int64_t j = 0; j < K; ++j) sums.start[j] += node[j];
      }
      return;
    }
    if (t >= kPrefetchSteps) prefetch_row(em + (t - kPrefetchSteps) * st);
    std::copy(em + t * st, em + t * st + K, e_pad);
    for (int64_t j = 0; j < Kp; ++j) w[j] = e_pad[j] + beta[j];
    const T mw = max_of(w, Kp);
    if (mw == neg_inf<T>()) {  // nothing after step t is reachable: no pairwise mass, beta of t - 1 is -inf
      std::fill(beta, beta + Kp, neg_inf<T>());
      continue;
    }
    for (int64_t j = 0; j < Kp; ++j) r[j] = exp_or_zero(w[j] - mw);
    const T* __restrict__ prev = alpha + (t - 1) * Kp;
    const T m = max_of(prev, Kp);
    if (pairwise && m != neg_inf<T>()) {
      // P(y_{t-1} = i, y_t = j) = exp(prev[i] + trans[i][j] + w[j] + pair_offset)
      //                         = exp(m + mw + all_shift + pair_offset) * p[i] * r[j] * all_exp[i][j]
      const T pair_offset = static_cast<T>(shift[t - 1] + beta_shift - log_z);
      const T scale_log = m + mw + tables.all_shift + pair_offset;
      if (scale_log > CrfLimits<T>::big_shift) {
        T* __restrict__ exact = sums.pair_exact.data();
        for (int64_t i = 0; i < K; ++i) {
          for (int64_t j = 0; j < K; ++j) {
            exact[i * K + j] += g * exp_or_zero(prev[i] + trans[i * K + j] + w[j] + pair_offset);
          }
        }
      } else {
        const T scale = g * exp_or_zero(scale_log);
        for (int64_t i = 0; i < Kp; ++i) p[i] = scale * exp_or_zero(prev[i] - m);
        for (int64_t i = 0; i < K; ++i) {
          const T pi = p[i];
          if (pi == T(0)) continue;
          T* __restrict__ row = pair + i * Kp;
          for (int64_t j = 0; j < Kp; ++j) row[j] += pi * r[j];
        }
      }
    }
    // beta_{t-1}[i] = log sum_j exp(trans[i][j] + w[j]), relative to beta_shift + mw
    vector_matrix_product(r, row_exp_t, K, Kp, v);
    for (int64_t i = 0; i < Kp; ++i) {
      beta_prev[i] = row_shift[i] + log_positive(v[i] > CrfLimits<T>::tiny ? v[i] : T(1));
    }
    for (int64_t i = 0; i < K; ++i) {
      if (!(v[i] > CrfLimits<T>::tiny)) beta_prev[i] = log_sum_exp_plus(w, trans + i * K, 1, K) - mw;
    }
    beta_shift += mw;
    std::swap(beta, beta_prev);
  }
}

PYSEQ_CPU_CLONES void backward_sequence(const float* em, int64_t st, int64_t L, int64_t K, float g, float log_z_rel,
                                        const float* end, const float* trans, const TransitionTables<float>& tables,
                                        const float* alpha, const double* shift, float* node, bool pairwise,
                                        GradientSums<float>& sums, BackwardScratch<float>& scratch) {
  backward_sequence_impl(em, st, L, K, g, log_z_rel, end, trans, tables, alpha, shift, node, pairwise, sums, scratch);
}
void backward_sequence(const double* em, int64_t st, int64_t L, int64_t K, double g, double log_z_rel,
                       const double* end, const double* trans, const TransitionTables<double>& tables,
                       const double* alpha, const double* shift, double* node, bool pairwise,
                       GradientSums<double>& sums, BackwardScratch<double>& scratch) {
  backward_sequence_impl(em, st, L, K, g, log_z_rel, end, trans, tables, alpha, shift, node, pairwise, sums, scratch);
}

// The batch is split into a fixed number of chunks, one per thread, so that per-chunk sums are added in the same
// order on every run (deterministic gradients).
// padded_tags for the dtype of emissions.
int64_t padded_tags_of(const at::Tensor& emissions, int64_t K) {
  return emissions.scalar_type() == at::kDouble ? padded_tags<double>(K) : padded_tags<float>(K);
}

int64_t chunk_count(int64_t B) { return std::max<int64_t>(1, std::min<int64_t>(B, at::get_num_threads())); }

// Runs body(b0, b1, chunk) over the chunks of [0, B) in parallel.
template <typename F>
void for_each_chunk(int64_t B, const F& body) {
  const int64_t chunks = chunk_count(B);
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) body(c * B / chunks, (c + 1) * B / chunks, c);
  });
}

// Backward recursion of every sequence with an allowed path and a nonzero gradient; shared by the gradient of log Z
// (pairwise on) and the marginals (g = 1, pairwise off). alpha: [B, T, Kp], shift: [B, T] from log_partition_forward.
// Each chunk accumulates into sums allocated by its own thread (sums written by two threads side by side in memory
// cost more than a third of the backward in false sharing), then hands them over in sums[chunk].
template <typename T>
void log_partition_backward(const CrfArgs& a, const T* em, const T* g, const T* end, const T* trans,
                            const TransitionTables<T>& tables, const T* alpha, const double* shift, T* node,
                            bool pairwise, std::vector<GradientSums<T>>& sums) {
  const int64_t K = a.K, T_max = a.T;
  for_each_chunk(a.B, [&](int64_t b0, int64_t b1, int64_t c) {
    BackwardScratch<T> scratch(K);
    GradientSums<T> local(pairwise ? K : 0);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t L = a.lengths[b];
      if (L == 0 || g[b] == T(0)) continue;
      const T* alpha_b = alpha + b * T_max * tables.Kp;
      const T log_z_rel = log_sum_exp_plus(alpha_b + (L - 1) * tables.Kp, end, 1, K);
      if (log_z_rel == neg_inf<T>()) continue;
      backward_sequence(em + b * a.stride_b, a.stride_t, L, K, g[b], log_z_rel, end, trans, tables, alpha_b,
                        shift + b * T_max, node + b * a.stride_b, pairwise, local, scratch);
    }
    sums[c] = std::move(local);
  });
}

// Forward recursion of every sequence: alpha [B, T, Kp] (relative, -inf past each length and in the padding), shift
// [B, T] (0 past each length) and log Z [B].
template <typename T>
void log_partition_forward(const CrfArgs& a, const T* em, const T* start, const T* end, const T* trans,
                           const TransitionTables<T>& tables, T* alpha, double* shift, T* log_z) {
  const int64_t K = a.K, Kp = tables.Kp, T_max = a.T;
  for_each_chunk(a.B, [&](int64_t b0, int64_t b1, int64_t) {
    std::vector<T> e_pad(Kp, neg_inf<T>()), p(Kp), u(Kp);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t L = a.lengths[b];
      T* alpha_b = alpha + b * T_max * Kp;
      double* shift_b = shift + b * T_max;
      std::fill(alpha_b + L * Kp, alpha_b + T_max * Kp, neg_inf<T>());
      std::fill(shift_b + L, shift_b + T_max, 0.0);
      if (L == 0) {
        log_z[b] = 0;
        continue;
      }
      forward_sequence(em + b * a.stride_b, a.stride_t, L, K, Kp, start, trans, tables.col_exp.data(),
                       tables.col_shift.data(), alpha_b, shift_b, e_pad.data(), p.data(), u.data());
      log_z[b] = static_cast<T>(shift_b[L - 1] + log_sum_exp_plus(alpha_b + (L - 1) * Kp, end, 1, K));
    }
  });
}

// Adds the chunk sums of log_partition_backward to the start, end and transition gradients [K], [K], [K, K].
template <typename T>
void add_partition_sums(const std::vector<GradientSums<T>>& sums, const TransitionTables<T>& tables, int64_t K,
                        T* grad_start, T* grad_end, T* grad_trans) {
  for (const GradientSums<T>& s : sums) {
    for (int64_t j = 0; j < K; ++j) {
      grad_start[j] += s.start[j];
      grad_end[j] += s.end[j];
    }
    for (int64_t i = 0; i < K; ++i) {
      for (int64_t j = 0; j < K; ++j) {
        const int64_t ij = i * tables.Kp + j;
        grad_trans[i * K + j] += s.pair_scaled[ij] * tables.all_exp[ij] + s.pair_exact[i * K + j];
      }
    }
  }
}

// Scores of the tag paths y [B, T] into out [B].
template <typename T>
void path_scores(const CrfArgs& a, const T* em, const int64_t* y, const T* start, const T* end, const T* trans,
                 T* out) {
  at::parallel_for(0, a.B, 64, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t L = a.lengths[b];
      const int64_t* path = y + b * a.T;
      const T* em_b = em + b * a.stride_b;
      if (L == 0) {
        out[b] = 0;
        continue;
      }
      T total = start[path[0]] + em_b[path[0]];
      for (int64_t t = 1; t < L; ++t) total += trans[path[t - 1] * a.K + path[t]] + em_b[t * a.stride_t + path[t]];
      out[b] = total + end[path[L - 1]];
    }
  });
}

// Adds g[b] at every (step, tag), start, end and transition the path of sequence b uses.
template <typename T>
void add_path_gradients(const CrfArgs& a, const T* g, const int64_t* y, T* grad_em, T* grad_start, T* grad_end,
                        T* grad_trans) {
  for (int64_t b = 0; b < a.B; ++b) {
    const int64_t L = a.lengths[b];
    if (L == 0 || g[b] == T(0)) continue;
    const int64_t* path = y + b * a.T;
    T* ge = grad_em + b * a.stride_b;
    grad_start[path[0]] += g[b];
    ge[path[0]] += g[b];
    for (int64_t t = 1; t < L; ++t) {
      grad_trans[path[t - 1] * a.K + path[t]] += g[b];
      ge[t * a.stride_t + path[t]] += g[b];
    }
    grad_end[path[L - 1]] += g[b];
  }
}

}  // namespace

at::Tensor crf_mask_lengths_cpu(const at::Tensor& mask) {
  check_dim(mask, "mask", 2, "(batch, seq_length)");
  TORCH_CHECK_TYPE(mask.scalar_type() == at::kBool || mask.scalar_type() == at::kByte,
                   "mask must be bool or uint8, got ", mask.scalar_type());
  TORCH_CHECK(mask.device().is_cpu(), "mask must be on the CPU, got ", mask.device());
  const int64_t B = mask.size(0), T = mask.size(1);
  const at::Tensor m = mask.to(at::kByte);
  const auto acc = m.accessor<uint8_t, 2>();
  at::Tensor lengths = at::empty({B}, at::kLong);
  int64_t* out = lengths.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    int64_t L = 0;
    while (L < T && acc[b][L]) ++L;
    for (int64_t t = L; t < T; ++t) {
      TORCH_CHECK_VALUE(!acc[b][t], "mask must be a prefix in each sequence (ones for the steps that exist, then "
                        "zeros for padding), but sequence ", b, " has a one at step ", t, " after a zero at step ", L);
    }
    out[b] = L;
  }
  return lengths;
}

std::vector<at::Tensor> crf_log_partition_cpu(const at::Tensor& emissions, const at::Tensor& lengths,
                                              const at::Tensor& start, const at::Tensor& end,
                                              const at::Tensor& transitions) {
  const CrfArgs a = check_crf_args(emissions, lengths, start, end, transitions);
  at::Tensor log_z = at::empty({a.B}, emissions.options());
  at::Tensor alpha = at::empty({a.B, a.T, padded_tags_of(emissions, a.K)}, emissions.options());
  at::Tensor shift = at::empty({a.B, a.T}, emissions.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(emissions.scalar_type(), "crf_log_partition_cpu", [&] {
    using T = scalar_t;
    const at::Tensor s = start.contiguous(), e = end.contiguous(), tr = transitions.contiguous();
    const TransitionTables<T> tables(tr.data_ptr<T>(), a.K);
    log_partition_forward(a, a.emissions.data_ptr<T>(), s.data_ptr<T>(), e.data_ptr<T>(), tr.data_ptr<T>(), tables,
                          alpha.data_ptr<T>(), shift.data_ptr<double>(), log_z.data_ptr<T>());
  });
  return {log_z, alpha, shift};
}

std::vector<at::Tensor> crf_log_partition_backward_cpu(const at::Tensor& grad_log_z, const at::Tensor& emissions,
                                                       const at::Tensor& lengths, const at::Tensor& start,
                                                       const at::Tensor& end, const at::Tensor& transitions,
                                                       const at::Tensor& log_alpha, const at::Tensor& alpha_shift) {
  const CrfArgs a = check_crf_args(emissions, lengths, start, end, transitions);
  check_shape(grad_log_z, "grad_log_z", {a.B});
  check_like(grad_log_z, "grad_log_z", emissions, "emissions");
  check_shape(log_alpha, "log_alpha", {a.B, a.T, padded_tags_of(emissions, a.K)});
  check_like(log_alpha, "log_alpha", emissions, "emissions");
  check_shape(alpha_shift, "alpha_shift", {a.B, a.T});
  TORCH_CHECK_TYPE(alpha_shift.scalar_type() == at::kDouble, "alpha_shift must be float64, got ",
                   alpha_shift.scalar_type());
  at::Tensor grad_em = at::zeros_like(a.emissions);
  at::Tensor grad_start = at::zeros_like(start), grad_end = at::zeros_like(end);
  at::Tensor grad_trans = at::zeros_like(transitions);
  AT_DISPATCH_FLOATING_TYPES(emissions.scalar_type(), "crf_log_partition_backward_cpu", [&] {
    using T = scalar_t;
    const at::Tensor e = end.contiguous(), tr = transitions.contiguous(), g = grad_log_z.contiguous();
    const at::Tensor al = log_alpha.contiguous(), sh = alpha_shift.contiguous();
    const int64_t K = a.K;
    const TransitionTables<T> tables(tr.data_ptr<T>(), K);
    std::vector<GradientSums<T>> sums(chunk_count(a.B), GradientSums<T>(0));
    log_partition_backward(a, a.emissions.data_ptr<T>(), g.data_ptr<T>(), e.data_ptr<T>(), tr.data_ptr<T>(),
                           tables, al.data_ptr<T>(), sh.data_ptr<double>(), grad_em.data_ptr<T>(), true, sums);
    add_partition_sums(sums, tables, K, grad_start.data_ptr<T>(), grad_end.data_ptr<T>(), grad_trans.data_ptr<T>());
  });
  return {grad_em, grad_start, grad_end, grad_trans};
}

at::Tensor crf_marginals_cpu(const at::Tensor& emissions, const at::Tensor& lengths, const at::Tensor& start,
                             const at::Tensor& end, const at::Tensor& transitions) {
  const CrfArgs a = check_crf_args(emissions, lengths, start, end, transitions);
  at::Tensor marginals = at::zeros_like(a.emissions);
  AT_DISPATCH_FLOATING_TYPES(emissions.scalar_type(), "crf_marginals_cpu", [&] {
    using T = scalar_t;
    const at::Tensor s = start.contiguous(), e = end.contiguous(), tr = transitions.contiguous();
    const TransitionTables<T> tables(tr.data_ptr<T>(), a.K);
    std::vector<T> alpha(a.B * a.T * tables.Kp), log_z(a.B), ones(a.B, T(1));
    std::vector<double> shift(a.B * a.T);
    log_partition_forward(a, a.emissions.data_ptr<T>(), s.data_ptr<T>(), e.data_ptr<T>(), tr.data_ptr<T>(), tables,
                          alpha.data(), shift.data(), log_z.data());
    std::vector<GradientSums<T>> unused(chunk_count(a.B), GradientSums<T>(0));
    log_partition_backward(a, a.emissions.data_ptr<T>(), ones.data(), e.data_ptr<T>(), tr.data_ptr<T>(), tables,
                           alpha.data(), shift.data(), marginals.data_ptr<T>(), false, unused);
  });
  return marginals;
}

at::Tensor crf_path_score_cpu(const at::Tensor& emissions, const at::Tensor& tags, const at::Tensor& lengths,
                              const at::Tensor& start, const at::Tensor& end, const at::Tensor& transitions) {
  const CrfArgs a = check_crf_args(emissions, lengths, start, end, transitions);
  const at::Tensor y = check_tags(tags, a);
  at::Tensor score = at::empty({a.B}, emissions.options());
  AT_DISPATCH_FLOATING_TYPES(emissions.scalar_type(), "crf_path_score_cpu", [&] {
    using T = scalar_t;
    const at::Tensor s = start.contiguous(), e = end.contiguous(), tr = transitions.contiguous();
    path_scores(a, a.emissions.data_ptr<T>(), y.data_ptr<int64_t>(), s.data_ptr<T>(), e.data_ptr<T>(),
                tr.data_ptr<T>(), score.data_ptr<T>());
  });
  return score;
}

std::vector<at::Tensor> crf_path_score_backward_cpu(const at::Tensor& grad_score, const at::Tensor& emissions,
                                                    const at::Tensor& tags, const at::Tensor& lengths,
                                                    int64_t num_tags) {
  const CrfArgs a = check_crf_emissions(emissions, lengths);
  TORCH_CHECK_VALUE(a.K == num_tags, "emissions must have num_tags = ", num_tags, " tags, got ", a.K);
  check_shape(grad_score, "grad_score", {a.B});
  check_like(grad_score, "grad_score", emissions, "emissions");
  const at::Tensor y = check_tags(tags, a);
  at::Tensor grad_em = at::zeros_like(a.emissions);
  at::Tensor grad_start = at::zeros({a.K}, emissions.options()), grad_end = at::zeros({a.K}, emissions.options());
  at::Tensor grad_trans = at::zeros({a.K, a.K}, emissions.options());
  AT_DISPATCH_FLOATING_TYPES(emissions.scalar_type(), "crf_path_score_backward_cpu", [&] {
    using T = scalar_t;
    const at::Tensor g = grad_score.contiguous();
    add_path_gradients(a, g.data_ptr<T>(), y.data_ptr<int64_t>(), grad_em.data_ptr<T>(), grad_start.data_ptr<T>(),
                       grad_end.data_ptr<T>(), grad_trans.data_ptr<T>());
  });
  return {grad_em, grad_start, grad_end, grad_trans};
}

std::vector<at::Tensor> crf_log_likelihood_cpu(const at::Tensor& emissions, const at::Tensor& tags,
                                               const at::Tensor& lengths, const at::Tensor& start,
                                               const at::Tensor& end, const at::Tensor& transitions) {
  const CrfArgs a = check_crf_args(emissions, lengths, start, end, transitions);
  const at::Tensor y = check_tags(tags, a);
  at::Tensor llh = at::empty({a.B}, emissions.options());
  at::Tensor alpha = at::empty({a.B, a.T, padded_tags_of(emissions, a.K)}, emissions.options());
  at::Tensor shift = at::empty({a.B, a.T}, emissions.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(emissions.scalar_type(), "crf_log_likelihood_cpu", [&] {
    using T = scalar_t;
    const at::Tensor s = start.contiguous(), e = end.contiguous(), tr = transitions.contiguous();
    const TransitionTables<T> tables(tr.data_ptr<T>(), a.K);
    std::vector<T> log_z(a.B);
    log_partition_forward(a, a.emissions.data_ptr<T>(), s.data_ptr<T>(), e.data_ptr<T>(), tr.data_ptr<T>(), tables,
                          alpha.data_ptr<T>(), shift.data_ptr<double>(), log_z.data());
    T* out = llh.data_ptr<T>();
    path_scores(a, a.emissions.data_ptr<T>(), y.data_ptr<int64_t>(), s.data_ptr<T>(), e.data_ptr<T>(),
                tr.data_ptr<T>(), out);
    // A forbidden path has score -inf (and log Z may be -inf too): its log-likelihood is -inf, not NaN.
    for (int64_t b = 0; b < a.B; ++b) out[b] = out[b] == neg_inf<T>() ? out[b] : out[b] - log_z[b];
  });
  return {llh, alpha, shift};
}

std::vector<at::Tensor> crf_log_likelihood_backward_cpu(const at::Tensor& grad_llh, const at::Tensor& emissions,
                                                        const at::Tensor& tags, const at::Tensor& lengths,
                                                        const at::Tensor& start, const at::Tensor& end,
                                                        const at::Tensor& transitions, const at::Tensor& llh,
                                                        const at::Tensor& log_alpha, const at::Tensor& alpha_shift) {
  const CrfArgs a = check_crf_args(emissions, lengths, start, end, transitions);
  const at::Tensor y = check_tags(tags, a);
  check_shape(grad_llh, "grad_llh", {a.B});
  check_like(grad_llh, "grad_llh", emissions, "emissions");
  check_shape(llh, "llh", {a.B});
  check_shape(log_alpha, "log_alpha", {a.B, a.T, padded_tags_of(emissions, a.K)});
  check_shape(alpha_shift, "alpha_shift", {a.B, a.T});
  at::Tensor grad_em = at::zeros_like(a.emissions);
  at::Tensor grad_start = at::zeros_like(start), grad_end = at::zeros_like(end);
  at::Tensor grad_trans = at::zeros_like(transitions);
  AT_DISPATCH_FLOATING_TYPES(emissions.scalar_type(), "crf_log_likelihood_backward_cpu", [&] {
    using T = scalar_t;
    const at::Tensor e = end.contiguous(), tr = transitions.contiguous(), g = grad_llh.contiguous();
    const at::Tensor ll = llh.contiguous(), al = log_alpha.contiguous(), sh = alpha_shift.contiguous();
    const TransitionTables<T> tables(tr.data_ptr<T>(), a.K);
    // d llh = d score - d log Z; a sequence whose log-likelihood is -inf (forbidden path) gets no gradient.
    std::vector<T> g_path(a.B), g_partition(a.B);
    for (int64_t b = 0; b < a.B; ++b) {
      const bool forbidden = ll.data_ptr<T>()[b] == neg_inf<T>();
      g_path[b] = forbidden ? T(0) : g.data_ptr<T>()[b];
      g_partition[b] = -g_path[b];
    }
    std::vector<GradientSums<T>> sums(chunk_count(a.B), GradientSums<T>(0));
    log_partition_backward(a, a.emissions.data_ptr<T>(), g_partition.data(), e.data_ptr<T>(), tr.data_ptr<T>(),
                           tables, al.data_ptr<T>(), sh.data_ptr<double>(), grad_em.data_ptr<T>(), true, sums);
    add_partition_sums(sums, tables, a.K, grad_start.data_ptr<T>(), grad_end.data_ptr<T>(), grad_trans.data_ptr<T>());
    add_path_gradients(a, g_path.data(), y.data_ptr<int64_t>(), grad_em.data_ptr<T>(), grad_start.data_ptr<T>(),
                       grad_end.data_ptr<T>(), grad_trans.data_ptr<T>());
  });
  return {grad_em, grad_start, grad_end, grad_trans};
}

}  // namespace pyseq
