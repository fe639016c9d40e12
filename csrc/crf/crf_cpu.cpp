// Linear-chain CRF on the CPU: forward algorithm (log Z), forward-backward gradient and marginals, path scores.
// Parallel over the batch; the recursions run in the mixed space described in crf_math.h.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "../common/cpu_dispatch.h"
#include "../common/float32_compute.h"
#include "crf_args.h"
#include "crf_math.h"
#include "crf_rows.h"

namespace pyseq {
namespace {

// The exponentiated transition matrix in the three shifts the recursions use, built once per call.
template <typename T>
struct TransitionTables {
  // Rows are padded to Kp = padded_tags(K) columns: ones in col_exp and row_exp_t (so that the padding of a product
  // is never below CrfLimits::tiny and the exact-recompute check runs over whole vectors), zeros in all_exp.
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
    std::fill(col_exp.begin(), col_exp.end(), T(1));
    std::fill(row_exp_t.begin(), row_exp_t.end(), T(1));
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

// Whether any of x[0, n) is at or below CrfLimits::tiny (or NaN): a branch-free reduction that vectorizes.
template <typename T>
PYSEQ_ALWAYS_INLINE bool any_tiny(const T* __restrict__ x, int64_t n) {
  int32_t found = 0;
  for (int64_t j = 0; j < n; ++j) found |= x[j] > CrfLimits<T>::tiny ? 0 : 1;
  return found != 0;
}

// Accumulators of one chunk of the batch for the backward: transition, start and end gradients.
template <typename T>
struct GradientSums {
  std::vector<T> pair_scaled;  // [K, Kp], to be multiplied by all_exp at the end
  std::vector<T> pair_exact;   // [K, K], steps done exactly in log space
  std::vector<T> start, end;   // [K]
  explicit GradientSums(int64_t K) : pair_scaled(K * padded_tags<T>(K)), pair_exact(K * K), start(K), end(K) {}
};

// What the recursions of one call read and write.
//
// The log forward variables are kept relative to a running shift: alpha[b][t][j] + shift[b][t] is the log of the
// summed scores of the prefixes of length t + 1 of sequence b ending in tag j. alpha stays within the range of one
// step's scores, and the shift (which grows with t, to thousands for long sequences) is summed in double, so that
// float32 keeps its precision for the differences that matter (marginals are exp(alpha + beta - log Z)).
//
// Every per-step vector has Kp = padded_tags(K) entries, the padding being -inf in log space and 0 in probability
// space, so that each loop runs over whole vectors.
template <typename T>
struct Problem {
  const T* em;  // step t of sequence b at em + b * stride_b + t * stride_t
  int64_t stride_b, stride_t;
  const int64_t* lengths;
  const uint8_t* nan;  // [B], see CrfArgs
  int64_t B, K, Kp, T_max;
  const T *start, *end, *trans;
  const TransitionTables<T>* tables;
  // Time-major, so that the sequences of a chunk, which advance together, read and write adjacent rows.
  T* alpha;       // [T_max, B, Kp]
  double* shift;  // [T_max, B]

  T* alpha_row(int64_t b, int64_t t) const { return alpha + (t * B + b) * Kp; }
  double& shift_at(int64_t b, int64_t t) const { return shift[t * B + b]; }
};

// Per-step scratch vectors, [Kp] each.
template <typename T>
struct StepScratch {
  std::vector<T> p, u, w, r, node;
  explicit StepScratch(int64_t Kp) : p(Kp), u(Kp), w(Kp), r(Kp), node(Kp) {}
};

// One step of the forward recursion: cur from prev (rows [Kp] of alpha) and the step's emissions e_pad [Kp]. Returns
// the shift of cur given the shift of prev.
template <typename T>
PYSEQ_ALWAYS_INLINE double forward_step(const Problem<T>& P, const T* __restrict__ e_pad, const T* __restrict__ prev,
                                        T* __restrict__ cur, double prev_shift, StepScratch<T>& s) {
  const int64_t K = P.K, Kp = P.Kp;
  const T m = max_of(prev, Kp);
  if (m == neg_inf<T>()) {
    std::fill(cur, cur + Kp, neg_inf<T>());
    return prev_shift;
  }
  T* __restrict__ p = s.p.data();
  T* __restrict__ u = s.u.data();
  const T* __restrict__ col_shift = P.tables->col_shift.data();
  for (int64_t i = 0; i < Kp; ++i) p[i] = exp_or_zero(prev[i] - m);
  vector_matrix_product(p, P.tables->col_exp.data(), K, Kp, u);
  for (int64_t j = 0; j < Kp; ++j) {
    cur[j] = col_shift[j] + log_positive(u[j] > CrfLimits<T>::tiny ? u[j] : T(1)) + e_pad[j];
  }
  if (any_tiny(u, Kp)) {
    for (int64_t j = 0; j < K; ++j) {
      if (!(u[j] > CrfLimits<T>::tiny)) cur[j] = log_sum_exp_plus(prev, P.trans + j, K, K) - m + e_pad[j];
    }
  }
  return prev_shift + m;
}

// Forward recursion of sequences [b0, b1): fills their alpha and shift rows (-inf and 0 past each length) and
// log_z. The sequences advance together, one step of each in turn: their independent dependency chains overlap in
// the core, and a time-major batch is read in memory order.
template <typename T>
PYSEQ_ALWAYS_INLINE void forward_chunk_impl(const Problem<T>& P, int64_t b0, int64_t b1, T* log_z) {
  const int64_t K = P.K, Kp = P.Kp;
  StepScratch<T> scratch(Kp);
  StagedEmissions<T> staged(P.em, P.stride_b, P.stride_t, P.K, P.Kp, b0, b1 - b0);
  int64_t steps = 0;
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t L = P.lengths[b];
    if (L > 1) staged.stage(b, 1);
    for (int64_t t = L; t < P.T_max; ++t) {
      std::fill(P.alpha_row(b, t), P.alpha_row(b, t) + Kp, neg_inf<T>());
      P.shift_at(b, t) = 0;
    }
    if (L == 0) continue;
    const T* e = P.em + b * P.stride_b;
    T* first = P.alpha_row(b, 0);
    for (int64_t j = 0; j < Kp; ++j) first[j] = j < K ? P.start[j] + e[j] : neg_inf<T>();
    P.shift_at(b, 0) = 0;
    steps = std::max(steps, L);
  }
  for (int64_t t = 1; t < steps; ++t) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t L = P.lengths[b];
      if (t >= L) continue;
      P.shift_at(b, t) = forward_step(P, staged.row(b), P.alpha_row(b, t - 1), P.alpha_row(b, t),
                                      P.shift_at(b, t - 1), scratch);
      if (t + 1 < L) staged.stage(b, t + 1);
    }
  }
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t L = P.lengths[b];
    log_z[b] = L == 0     ? T(0)
               : P.nan[b] ? std::numeric_limits<T>::quiet_NaN()
                          : static_cast<T>(P.shift_at(b, L - 1) + log_sum_exp_plus(P.alpha_row(b, L - 1), P.end, 1, K));
  }
}

PYSEQ_CPU_CLONES void forward_chunk(const Problem<float>& P, int64_t b0, int64_t b1, float* log_z) {
  forward_chunk_impl(P, b0, b1, log_z);
}
void forward_chunk(const Problem<double>& P, int64_t b0, int64_t b1, double* log_z) {
  forward_chunk_impl(P, b0, b1, log_z);
}

// State of one sequence in the backward recursion: beta [Kp] (relative to beta_shift, padded like alpha; its padding
// never matters, it only meets -inf emissions), log Z and the gradient scale g.
template <typename T>
struct BackwardState {
  T* beta;
  double beta_shift, log_z;
  T g;
};

// One step t of the backward recursion of one sequence, with the step's emissions e_pad [Kp]: writes g * P(y_t = j)
// into out [K]; with `pairwise`, adds g times the pairwise marginals of (t - 1, t), and at the ends the node
// marginals, to sums; then (t > 0) turns beta of step t into beta of step t - 1.
template <typename T>
PYSEQ_ALWAYS_INLINE void backward_step(const Problem<T>& P, int64_t b, int64_t t, int64_t L, const T* __restrict__ e_pad,
                                       BackwardState<T>& st, T* out, bool pairwise, GradientSums<T>& sums,
                                       StepScratch<T>& s) {
  const int64_t K = P.K, Kp = P.Kp;
  const TransitionTables<T>& tables = *P.tables;
  T* __restrict__ beta = st.beta;
  T* __restrict__ node = s.node.data();
  const T* __restrict__ a = P.alpha_row(b, t);
  const T node_offset = static_cast<T>(P.shift_at(b, t) + st.beta_shift - st.log_z);
  for (int64_t j = 0; j < Kp; ++j) node[j] = st.g * exp_or_zero(a[j] + beta[j] + node_offset);
  for (int64_t j = 0; j < K; ++j) out[j] = node[j];
  if (pairwise && t == L - 1) {
    for (int64_t j = 0; j < K; ++j) sums.end[j] += node[j];
  }
  if (t == 0) {
    if (pairwise) {
      for (int64_t j = 0; j < K; ++j) sums.start[j] += node[j];
    }
    return;
  }
  T* __restrict__ w = s.w.data();
  T* __restrict__ r = s.r.data();
  T* __restrict__ p = s.p.data();
  T* __restrict__ v = s.u.data();
  for (int64_t j = 0; j < Kp; ++j) w[j] = e_pad[j] + beta[j];
  const T mw = max_of(w, Kp);
  if (mw == neg_inf<T>()) {  // nothing after step t is reachable: no pairwise mass, beta of t - 1 is -inf
    std::fill(beta, beta + Kp, neg_inf<T>());
    return;
  }
  for (int64_t j = 0; j < Kp; ++j) r[j] = exp_or_zero(w[j] - mw);
  const T* __restrict__ prev = P.alpha_row(b, t - 1);
  const T m = max_of(prev, Kp);
  if (pairwise && m != neg_inf<T>()) {
    // P(y_{t-1} = i, y_t = j) = exp(prev[i] + trans[i][j] + w[j] + pair_offset)
    //                         = exp(m + mw + all_shift + pair_offset) * p[i] * r[j] * all_exp[i][j]
    const T pair_offset = static_cast<T>(P.shift_at(b, t - 1) + st.beta_shift - st.log_z);
    const T scale_log = m + mw + tables.all_shift + pair_offset;
    if (scale_log > CrfLimits<T>::big_shift) {
      T* __restrict__ exact = sums.pair_exact.data();
      for (int64_t i = 0; i < K; ++i) {
        for (int64_t j = 0; j < K; ++j) {
          exact[i * K + j] += st.g * exp_or_zero(prev[i] + P.trans[i * K + j] + w[j] + pair_offset);
        }
      }
    } else {
      const T scale = st.g * exp_or_zero(scale_log);
      T* __restrict__ pair = sums.pair_scaled.data();
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
  vector_matrix_product(r, tables.row_exp_t.data(), K, Kp, v);
  const T* __restrict__ row_shift = tables.row_shift.data();
  for (int64_t i = 0; i < Kp; ++i) beta[i] = row_shift[i] + log_positive(v[i] > CrfLimits<T>::tiny ? v[i] : T(1));
  if (any_tiny(v, Kp)) {
    for (int64_t i = 0; i < K; ++i) {
      if (!(v[i] > CrfLimits<T>::tiny)) beta[i] = log_sum_exp_plus(w, P.trans + i * K, 1, K) - mw;
    }
  }
  st.beta_shift += mw;
}

// Makes every entry of sums NaN (a sequence that read a NaN score contributes NaN to every transition gradient).
template <typename T>
void poison(GradientSums<T>& sums) {
  for (std::vector<T>* v : {&sums.pair_exact, &sums.start, &sums.end}) {
    std::fill(v->begin(), v->end(), std::numeric_limits<T>::quiet_NaN());
  }
}

// Backward recursion of the sequences [b0, b1) that have an allowed path and a nonzero g, advancing together like
// forward_chunk. node: [B, T, K] contiguous output, every element written (0 where the recursion does not reach,
// NaN for the steps of a sequence that read a NaN score). Sequence b adds its sums to sums[chunk_of[b - b0]].
template <typename T>
PYSEQ_ALWAYS_INLINE void backward_chunk_impl(const Problem<T>& P, int64_t b0, int64_t b1, const T* g, T* node,
                                             bool pairwise, GradientSums<T>* sums, const int64_t* chunk_of) {
  const int64_t K = P.K, Kp = P.Kp;
  StepScratch<T> scratch(Kp);
  StagedEmissions<T> staged(P.em, P.stride_b, P.stride_t, P.K, P.Kp, b0, b1 - b0);
  std::vector<T> betas((b1 - b0) * Kp);
  std::vector<BackwardState<T>> states(b1 - b0);
  std::vector<int64_t> active;  // sequences with something to do, and their lengths
  int64_t steps = 0;
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t L = P.lengths[b];
    const T log_z_rel = L == 0 ? T(0) : log_sum_exp_plus(P.alpha_row(b, L - 1), P.end, 1, K);
    const bool nan = L > 0 && P.nan[b];
    const bool skip = nan || L == 0 || g[b] == T(0) || log_z_rel == neg_inf<T>();
    // node is not zero-initialized: the steps this recursion does not reach are written here.
    T* node_b = node + b * P.T_max * K;
    if (skip) std::fill(node_b, node_b + L * K, nan ? std::numeric_limits<T>::quiet_NaN() : T(0));
    std::fill(node_b + L * K, node_b + P.T_max * K, T(0));
    if (nan && pairwise) poison(sums[chunk_of[b - b0]]);
    if (skip) continue;
    BackwardState<T>& st = states[b - b0];
    st = {betas.data() + (b - b0) * Kp, 0.0, P.shift_at(b, L - 1) + static_cast<double>(log_z_rel), g[b]};
    for (int64_t j = 0; j < Kp; ++j) st.beta[j] = j < K ? P.end[j] : neg_inf<T>();
    staged.stage(b, L - 1);
    active.push_back(b);
    steps = std::max(steps, L);
  }
  for (int64_t t = steps - 1; t >= 0; --t) {
    for (const int64_t b : active) {
      const int64_t L = P.lengths[b];
      if (t >= L) continue;
      backward_step(P, b, t, L, staged.row(b), states[b - b0], node + (b * P.T_max + t) * K, pairwise,
                    sums[chunk_of[b - b0]], scratch);
      if (t > 0) staged.stage(b, t - 1);
    }
  }
}

PYSEQ_CPU_CLONES void backward_chunk(const Problem<float>& P, int64_t b0, int64_t b1, const float* g, float* node,
                                     bool pairwise, GradientSums<float>* sums, const int64_t* chunk_of) {
  backward_chunk_impl(P, b0, b1, g, node, pairwise, sums, chunk_of);
}
void backward_chunk(const Problem<double>& P, int64_t b0, int64_t b1, const double* g, double* node, bool pairwise,
                    GradientSums<double>* sums, const int64_t* chunk_of) {
  backward_chunk_impl(P, b0, b1, g, node, pairwise, sums, chunk_of);
}

template <typename T>
Problem<T> make_problem(const CrfArgs& a, const T* start, const T* end, const T* trans,
                        const TransitionTables<T>& tables, T* alpha, double* shift) {
  return {a.emissions.data_ptr<T>(), a.stride_b, a.stride_t, a.lengths.data(), a.nan.data(), a.B, a.K, tables.Kp, a.T,
          start, end, trans, &tables, alpha, shift};
}

// Forward recursion of every sequence: P.alpha, P.shift and log_z [B].
template <typename T>
void log_partition_forward(const CrfArgs& a, const Problem<T>& P, T* log_z) {
  at::parallel_for(0, a.B, 1, [&](int64_t b0, int64_t b1) { forward_chunk(P, b0, b1, log_z); });
}

// Backward recursion of every sequence with an allowed path and a nonzero gradient g [B]; shared by the gradient of
// log Z (pairwise on) and the marginals (g = 1, pairwise off). The sequences of a thread's chunks advance together;
// each chunk accumulates into sums allocated by the thread that runs it (sums written by two threads side by side
// in memory cost more than a third of the backward in false sharing), then hands them over in sums[chunk].
template <typename T>
void log_partition_backward(const CrfArgs& a, const Problem<T>& P, const T* g, T* node, bool pairwise,
                            std::vector<GradientSums<T>>& sums) {
  for_each_chunk_range(a.B, [&](int64_t c0, int64_t c1) {
    const int64_t b0 = chunk_begin(c0, a.B), b1 = chunk_begin(c1, a.B);
    std::vector<GradientSums<T>> local(c1 - c0, GradientSums<T>(pairwise ? a.K : 0));
    std::vector<int64_t> chunk_of(b1 - b0);
    for (int64_t c = c0; c < c1; ++c) {
      std::fill(chunk_of.begin() + (chunk_begin(c, a.B) - b0), chunk_of.begin() + (chunk_begin(c + 1, a.B) - b0),
                c - c0);
    }
    backward_chunk(P, b0, b1, g, node, pairwise, local.data(), chunk_of.data());
    for (int64_t c = c0; c < c1; ++c) sums[c] = std::move(local[c - c0]);
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

// Adds g[b] at every (step, tag) of grad_em (contiguous [B, T, K]), start, end and transition the path of sequence b
// uses.
template <typename T>
void add_path_gradients(const CrfArgs& a, const T* g, const int64_t* y, T* grad_em, T* grad_start, T* grad_end,
                        T* grad_trans) {
  for (int64_t b = 0; b < a.B; ++b) {
    const int64_t L = a.lengths[b];
    if (L == 0 || g[b] == T(0)) continue;
    const int64_t* path = y + b * a.T;
    T* ge = grad_em + b * a.T * a.K;  // contiguous [B, T, K]
    grad_start[path[0]] += g[b];
    ge[path[0]] += g[b];
    for (int64_t t = 1; t < L; ++t) {
      grad_trans[path[t - 1] * a.K + path[t]] += g[b];
      ge[t * a.K + path[t]] += g[b];
    }
    grad_end[path[L - 1]] += g[b];
  }
}

using Forward = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Gradients = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Forward crf_log_partition_cpu(const at::Tensor& emissions, const at::Tensor& lengths, const at::Tensor& start,
                              const at::Tensor& end, const at::Tensor& transitions) {
  const CrfArgs a = check_crf_args(emissions, lengths, start, end, transitions);
  at::Tensor log_z = at::empty({a.B}, emissions.options());
  at::Tensor alpha = at::empty({a.T, a.B, padded_tags_of(emissions, a.K)}, emissions.options());
  at::Tensor shift = at::empty({a.T, a.B}, emissions.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(emissions.scalar_type(), "crf_log_partition_cpu", [&] {
    using T = scalar_t;
    const at::Tensor s = start.contiguous(), e = end.contiguous(), tr = transitions.contiguous();
    const TransitionTables<T> tables(tr.data_ptr<T>(), a.K);
    const Problem<T> P = make_problem(a, s.data_ptr<T>(), e.data_ptr<T>(), tr.data_ptr<T>(), tables,
                                      alpha.data_ptr<T>(), shift.data_ptr<double>());
    log_partition_forward(a, P, log_z.data_ptr<T>());
  });
  return {log_z, alpha, shift};
}

Gradients crf_log_partition_backward_cpu(const at::Tensor& grad_log_z, const at::Tensor& emissions,
                                         const at::Tensor& lengths, const at::Tensor& start, const at::Tensor& end,
                                         const at::Tensor& transitions, const at::Tensor& log_alpha,
                                         const at::Tensor& alpha_shift) {
  const CrfArgs a = check_crf_args(emissions, lengths, start, end, transitions);
  check_saved(a, emissions, grad_log_z, "grad_log_z", log_alpha, alpha_shift);
  at::Tensor grad_em = at::empty({a.B, a.T, a.K}, emissions.options());
  at::Tensor grad_start = at::zeros({a.K}, emissions.options()), grad_end = at::zeros({a.K}, emissions.options());
  at::Tensor grad_trans = at::zeros({a.K, a.K}, emissions.options());
  AT_DISPATCH_FLOATING_TYPES(emissions.scalar_type(), "crf_log_partition_backward_cpu", [&] {
    using T = scalar_t;
    const at::Tensor s = start.contiguous(), e = end.contiguous(), tr = transitions.contiguous();
    const at::Tensor g = grad_log_z.contiguous(), al = log_alpha.contiguous(), sh = alpha_shift.contiguous();
    const TransitionTables<T> tables(tr.data_ptr<T>(), a.K);
    const Problem<T> P = make_problem(a, s.data_ptr<T>(), e.data_ptr<T>(), tr.data_ptr<T>(), tables,
                                      al.data_ptr<T>(), sh.data_ptr<double>());
    std::vector<GradientSums<T>> sums(chunk_count(a.B), GradientSums<T>(0));
    log_partition_backward(a, P, g.data_ptr<T>(), grad_em.data_ptr<T>(), true, sums);
    add_partition_sums(sums, tables, a.K, grad_start.data_ptr<T>(), grad_end.data_ptr<T>(), grad_trans.data_ptr<T>());
  });
  return {grad_em, grad_start, grad_end, grad_trans};
}

at::Tensor crf_marginals_cpu(const at::Tensor& emissions, const at::Tensor& lengths, const at::Tensor& start,
                             const at::Tensor& end, const at::Tensor& transitions) {
  const CrfArgs a = check_crf_args(emissions, lengths, start, end, transitions);
  at::Tensor marginals = at::empty({a.B, a.T, a.K}, emissions.options());
  AT_DISPATCH_FLOATING_TYPES(emissions.scalar_type(), "crf_marginals_cpu", [&] {
    using T = scalar_t;
    const at::Tensor s = start.contiguous(), e = end.contiguous(), tr = transitions.contiguous();
    const TransitionTables<T> tables(tr.data_ptr<T>(), a.K);
    std::vector<T> alpha(a.B * a.T * tables.Kp), log_z(a.B), ones(a.B, T(1));
    std::vector<double> shift(a.B * a.T);
    const Problem<T> P =
        make_problem(a, s.data_ptr<T>(), e.data_ptr<T>(), tr.data_ptr<T>(), tables, alpha.data(), shift.data());
    log_partition_forward(a, P, log_z.data());
    std::vector<GradientSums<T>> unused(chunk_count(a.B), GradientSums<T>(0));
    log_partition_backward(a, P, ones.data(), marginals.data_ptr<T>(), false, unused);
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

Gradients crf_path_score_backward_cpu(const at::Tensor& grad_score, const at::Tensor& emissions, const at::Tensor& tags,
                                      const at::Tensor& lengths) {
  const CrfArgs a = check_crf_emissions(emissions, lengths);
  check_shape(grad_score, "grad_score", {a.B});
  check_like(grad_score, "grad_score", emissions, "emissions");
  const at::Tensor y = check_tags(tags, a);
  at::Tensor grad_em = at::zeros({a.B, a.T, a.K}, emissions.options());
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

Forward crf_log_likelihood_cpu(const at::Tensor& emissions, const at::Tensor& tags, const at::Tensor& lengths,
                               const at::Tensor& start, const at::Tensor& end, const at::Tensor& transitions) {
  const CrfArgs a = check_crf_args(emissions, lengths, start, end, transitions);
  const at::Tensor y = check_tags(tags, a);
  at::Tensor llh = at::empty({a.B}, emissions.options());
  at::Tensor alpha = at::empty({a.T, a.B, padded_tags_of(emissions, a.K)}, emissions.options());
  at::Tensor shift = at::empty({a.T, a.B}, emissions.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(emissions.scalar_type(), "crf_log_likelihood_cpu", [&] {
    using T = scalar_t;
    const at::Tensor s = start.contiguous(), e = end.contiguous(), tr = transitions.contiguous();
    const TransitionTables<T> tables(tr.data_ptr<T>(), a.K);
    std::vector<T> log_z(a.B);
    const Problem<T> P = make_problem(a, s.data_ptr<T>(), e.data_ptr<T>(), tr.data_ptr<T>(), tables,
                                      alpha.data_ptr<T>(), shift.data_ptr<double>());
    log_partition_forward(a, P, log_z.data());
    T* out = llh.data_ptr<T>();
    path_scores(a, a.emissions.data_ptr<T>(), y.data_ptr<int64_t>(), s.data_ptr<T>(), e.data_ptr<T>(),
                tr.data_ptr<T>(), out);
    // A forbidden path has score -inf (and log Z may be -inf too): its log-likelihood is -inf, not NaN.
    for (int64_t b = 0; b < a.B; ++b) out[b] = out[b] == neg_inf<T>() && !a.nan[b] ? out[b] : out[b] - log_z[b];
  });
  return {llh, alpha, shift};
}

Gradients crf_log_likelihood_backward_cpu(const at::Tensor& grad_llh, const at::Tensor& emissions,
                                          const at::Tensor& tags, const at::Tensor& lengths, const at::Tensor& start,
                                          const at::Tensor& end, const at::Tensor& transitions, const at::Tensor& llh,
                                          const at::Tensor& log_alpha, const at::Tensor& alpha_shift) {
  const CrfArgs a = check_crf_args(emissions, lengths, start, end, transitions);
  const at::Tensor y = check_tags(tags, a);
  check_saved(a, emissions, grad_llh, "grad_llh", log_alpha, alpha_shift);
  check_shape(llh, "llh", {a.B});
  at::Tensor grad_em = at::empty({a.B, a.T, a.K}, emissions.options());
  at::Tensor grad_start = at::zeros({a.K}, emissions.options()), grad_end = at::zeros({a.K}, emissions.options());
  at::Tensor grad_trans = at::zeros({a.K, a.K}, emissions.options());
  AT_DISPATCH_FLOATING_TYPES(emissions.scalar_type(), "crf_log_likelihood_backward_cpu", [&] {
    using T = scalar_t;
    const at::Tensor s = start.contiguous(), e = end.contiguous(), tr = transitions.contiguous();
    const at::Tensor g = grad_llh.contiguous(), ll = llh.contiguous();
    const at::Tensor al = log_alpha.contiguous(), sh = alpha_shift.contiguous();
    const TransitionTables<T> tables(tr.data_ptr<T>(), a.K);
    const Problem<T> P = make_problem(a, s.data_ptr<T>(), e.data_ptr<T>(), tr.data_ptr<T>(), tables,
                                      al.data_ptr<T>(), sh.data_ptr<double>());
    // d llh = d score - d log Z; a sequence whose log-likelihood is -inf (forbidden path) gets no gradient.
    std::vector<T> g_path(a.B), g_partition(a.B);
    for (int64_t b = 0; b < a.B; ++b) {
      const bool forbidden = ll.data_ptr<T>()[b] == neg_inf<T>();
      g_path[b] = forbidden ? T(0) : g.data_ptr<T>()[b];
      g_partition[b] = -g_path[b];
    }
    std::vector<GradientSums<T>> sums(chunk_count(a.B), GradientSums<T>(0));
    log_partition_backward(a, P, g_partition.data(), grad_em.data_ptr<T>(), true, sums);
    add_partition_sums(sums, tables, a.K, grad_start.data_ptr<T>(), grad_end.data_ptr<T>(), grad_trans.data_ptr<T>());
    add_path_gradients(a, g_path.data(), y.data_ptr<int64_t>(), grad_em.data_ptr<T>(), grad_start.data_ptr<T>(),
                       grad_end.data_ptr<T>(), grad_trans.data_ptr<T>());
  });
  return {grad_em, grad_start, grad_end, grad_trans};
}

}  // namespace
}  // namespace pyseq

TORCH_LIBRARY_IMPL(pyseq, CPU, m) {
  m.impl("crf_log_likelihood", PYSEQ_FLOAT32_RESULTS(pyseq::crf_log_likelihood_cpu));
  m.impl("crf_log_likelihood_backward", PYSEQ_FLOAT32_RESULTS(pyseq::crf_log_likelihood_backward_cpu));
  m.impl("crf_log_partition", PYSEQ_FLOAT32_RESULTS(pyseq::crf_log_partition_cpu));
  m.impl("crf_log_partition_backward", PYSEQ_FLOAT32_RESULTS(pyseq::crf_log_partition_backward_cpu));
  m.impl("crf_path_score", PYSEQ_FLOAT32_RESULTS(pyseq::crf_path_score_cpu));
  m.impl("crf_path_score_backward", PYSEQ_FLOAT32_RESULTS(pyseq::crf_path_score_backward_cpu));
  m.impl("crf_marginals", PYSEQ_FLOAT32_RESULTS(pyseq::crf_marginals_cpu));
}
