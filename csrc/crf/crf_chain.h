// The CRF dynamic programs as the work of one tag of one step: __host__ __device__ functions that a CUDA thread runs
// (csrc/crf/crf_cuda.cu: one block per sequence, the tags across its threads, time as the loop, the phases of a step
// separated by barriers; make cuda-emulate runs them on the CPU, thread by thread). Torch-free, so that nvcc compiles it without torch headers.
//
// The recursions are the CPU kernel's (crf_cpu.cpp, crf_math.h): the previous step's vector shifted by its maximum
// and exponentiated, a product with the exponentiated transition matrix, and an exact log-space recomputation of every
// entry where that product underflows, so that -inf constraints are honoured exactly. Per-sequence sums (pairwise
// marginals, start and end marginals) go to per-sequence slices, added over the batch afterwards in a fixed order:
// every element is written by one thread, so results are deterministic.
#pragma once

#include <cstdint>

#include "crf_math.h"

namespace pyseq {

// One batch of the log partition, log-likelihood and marginals. Every pointer is on the kernels' device.
template <typename T>
struct CrfChainArgs {
  int64_t B, T_max, K, Kp;          // Kp = padded_tags<T>(K): the row length of alpha (the CPU kernel's layout)
  const T* em;                      // step t of sequence b at em + b * stride_b + t * stride_t, tags contiguous
  int64_t stride_b, stride_t;
  const int64_t* lengths;           // [B]
  const uint8_t* nan;               // [B]: the sequence reads a NaN score (its results are NaN)
  const T *start, *end, *trans;     // [K], [K], [K, K]
  const T *col_exp, *col_shift;     // [K, K] exp(trans[i][j] - col_shift[j]); [K] column maxima (finite_shift)
  const T *row_exp, *row_shift;     // [K, K] exp(trans[i][j] - row_shift[i]); [K] row maxima (finite_shift)
  const T* all_exp;                 // [K, K] exp(trans - all_shift)
  const T* all_shift;               // [1] the maximum transition score (finite_shift)
  T* alpha;                         // [T_max, B, Kp] log forward variables relative to shift; -inf padding
  double* shift;                    // [T_max, B]
  // Backward only:
  const T* g;                       // [B] the gradient of each sequence's log Z
  T* node;                          // [B, T_max, K] out: g * P(y_t = k), plus the path's indicators (log-likelihood)
  T* pair;                          // [B, K, K] pairwise sums, zero on entry; nullptr: node marginals only
  T *start_sum, *end_sum;           // [B, K] each, zero on entry (with pair)
  const int64_t* tags;              // [B, T_max] the tag paths of the log-likelihood, or nullptr
  const T* g_path;                  // [B] the gradient of each path score (with tags)
};

// A block's shared vectors for one sequence: [K] each.
template <typename T>
struct CrfScratch {
  T *p, *r, *w, *beta;
};

template <typename T>
PYSEQ_HD T* crf_alpha_row(const CrfChainArgs<T>& a, int64_t b, int64_t t) {
  return a.alpha + (t * a.B + b) * a.Kp;
}
template <typename T>
PYSEQ_HD const T* crf_emissions(const CrfChainArgs<T>& a, int64_t b, int64_t t) {
  return a.em + b * a.stride_b + t * a.stride_t;
}

// ---- forward -----------------------------------------------------------------------------------------------------

// Alpha of tag j in [0, Kp) at step 0 of sequence b (its length >= 1).
template <typename T>
PYSEQ_HD void crf_alpha_first(const CrfChainArgs<T>& a, int64_t b, int64_t j) {
  crf_alpha_row(a, b, 0)[j] = j < a.K ? a.start[j] + crf_emissions(a, b, 0)[j] : neg_inf<T>();
}

// Element i of the rows past sequence b's length, over [0, (T_max - L) * Kp): alpha -inf, shift 0.
template <typename T>
PYSEQ_HD void crf_alpha_padding(const CrfChainArgs<T>& a, int64_t b, int64_t i) {
  const int64_t t = a.lengths[b] + i / a.Kp, j = i % a.Kp;
  crf_alpha_row(a, b, t)[j] = neg_inf<T>();
  if (j == 0) a.shift[t * a.B + b] = 0;
}

// The shift of step t (one thread): that of step t - 1 plus the maximum m of its alpha row (unless -inf).
template <typename T>
PYSEQ_HD void crf_shift_step(const CrfChainArgs<T>& a, int64_t b, int64_t t, T m) {
  a.shift[t * a.B + b] = t == 0 ? 0.0 : a.shift[(t - 1) * a.B + b] + (m == neg_inf<T>() ? 0.0 : static_cast<double>(m));
}

// p[i] = exp(alpha[t - 1][i] - m) for tag i < K, m the maximum of that row.
template <typename T>
PYSEQ_HD void crf_forward_exp(const CrfChainArgs<T>& a, int64_t b, int64_t t, int64_t i, T m, T* p) {
  p[i] = exp_or_zero(crf_alpha_row(a, b, t - 1)[i] - m);
}

// Alpha of tag j in [0, Kp) at step t >= 1 (relative to the new shift, shift[t - 1] + m); m = -inf: nothing reaches
// step t.
template <typename T>
PYSEQ_HD void crf_alpha_tag(const CrfChainArgs<T>& a, int64_t b, int64_t t, int64_t j, T m, const T* p) {
  T* cur = crf_alpha_row(a, b, t);
  if (j >= a.K || m == neg_inf<T>()) {
    cur[j] = neg_inf<T>();
    return;
  }
  const T e = crf_emissions(a, b, t)[j];
  T u = T(0);
  for (int64_t i = 0; i < a.K; ++i) u += p[i] * a.col_exp[i * a.K + j];
  cur[j] = u > CrfLimits<T>::tiny
               ? a.col_shift[j] + log_positive(u) + e
               : log_sum_exp_plus(crf_alpha_row(a, b, t - 1), a.trans + j, a.K, a.K) - m + e;
}

// log Z of sequence b once its forward recursion is complete.
template <typename T>
PYSEQ_HD T crf_log_z(const CrfChainArgs<T>& a, int64_t b) {
  const int64_t L = a.lengths[b];
  if (L == 0) return T(0);
  if (a.nan[b]) return std::numeric_limits<T>::quiet_NaN();
  return static_cast<T>(a.shift[(L - 1) * a.B + b] + log_sum_exp_plus(crf_alpha_row(a, b, L - 1), a.end, 1, a.K));
}

// The score of sequence b's tag path (-inf through a forbidden tag or transition).
template <typename T>
PYSEQ_HD T crf_path_score(const CrfChainArgs<T>& a, int64_t b) {
  const int64_t L = a.lengths[b];
  if (L == 0) return T(0);
  const int64_t* y = a.tags + b * a.T_max;
  T total = a.start[y[0]] + crf_emissions(a, b, 0)[y[0]];
  for (int64_t t = 1; t < L; ++t) total += a.trans[y[t - 1] * a.K + y[t]] + crf_emissions(a, b, t)[y[t]];
  return total + a.end[y[L - 1]];
}

// log P(tags | emissions) from the path score and log Z: a forbidden path gives -inf, not NaN.
template <typename T>
PYSEQ_HD T crf_log_likelihood(const CrfChainArgs<T>& a, int64_t b, T score, T log_z) {
  return score == neg_inf<T>() && !a.nan[b] ? score : score - log_z;
}

// ---- backward ----------------------------------------------------------------------------------------------------

// How the backward treats sequence b: Run its recursion; Zero (no steps, no allowed path, or a zero gradient: its
// node rows are 0); Nan (it read a NaN score: its node rows and every per-sequence sum are NaN). log_z: for Run.
struct CrfBackwardPlan {
  enum Kind { Run, Zero, Nan } kind;
  double log_z;
};
template <typename T>
PYSEQ_HD CrfBackwardPlan crf_backward_plan(const CrfChainArgs<T>& a, int64_t b) {
  const int64_t L = a.lengths[b];
  if (L == 0) return {CrfBackwardPlan::Zero, 0};
  if (a.nan[b]) return {CrfBackwardPlan::Nan, 0};
  const T log_z_rel = log_sum_exp_plus(crf_alpha_row(a, b, L - 1), a.end, 1, a.K);
  if (a.g[b] == T(0) || log_z_rel == neg_inf<T>()) return {CrfBackwardPlan::Zero, 0};
  return {CrfBackwardPlan::Run, a.shift[(L - 1) * a.B + b] + static_cast<double>(log_z_rel)};
}

// Element i of the node rows of sequence b that the recursion does not write, over [0, T_max * K): steps within the
// length get `inside` (0, or NaN for a Nan plan; a Run plan writes them itself), padding steps 0. With pairwise sums,
// a Nan plan also makes the sequence's sums NaN.
template <typename T>
PYSEQ_HD void crf_node_fill(const CrfChainArgs<T>& a, int64_t b, int64_t i, CrfBackwardPlan::Kind kind) {
  const int64_t t = i / a.K, L = a.lengths[b];
  const T nan = std::numeric_limits<T>::quiet_NaN();
  if (t >= L || kind != CrfBackwardPlan::Run) {
    a.node[b * a.T_max * a.K + i] = t < L && kind == CrfBackwardPlan::Nan ? nan : T(0);
  }
  if (a.pair && kind == CrfBackwardPlan::Nan) {
    for (int64_t k = i; k < a.K * a.K; k += a.T_max * a.K) a.pair[b * a.K * a.K + k] = nan;
    if (i < a.K) a.start_sum[b * a.K + i] = a.end_sum[b * a.K + i] = nan;
  }
}

// beta of tag j at the last step (the end scores).
template <typename T>
PYSEQ_HD void crf_beta_last(const CrfChainArgs<T>& a, int64_t j, T* beta) {
  beta[j] = a.end[j];
}

// Step t of tag j < K: its node marginal g * P(y_t = j) (with the start and end sums at the ends of the sequence),
// and w[j] = emission + beta for the step before. beta_shift: beta's shift so far.
template <typename T>
PYSEQ_HD void crf_node_tag(const CrfChainArgs<T>& a, int64_t b, int64_t t, int64_t j, double beta_shift,
                           double log_z, const T* beta, T* w) {
  const int64_t L = a.lengths[b];
  const T offset = static_cast<T>(a.shift[t * a.B + b] + beta_shift - log_z);
  const T node = a.g[b] * exp_or_zero(crf_alpha_row(a, b, t)[j] + beta[j] + offset);
  a.node[(b * a.T_max + t) * a.K + j] = node;
  if (a.pair && t == L - 1) a.end_sum[b * a.K + j] += node;
  if (a.pair && t == 0) a.start_sum[b * a.K + j] += node;
  w[j] = crf_emissions(a, b, t)[j] + beta[j];
}

// r[j] = exp(w[j] - mw) and p[j] = exp(alpha[t - 1][j] - m) (0 when m = -inf), for tag j < K at step t >= 1.
template <typename T>
PYSEQ_HD void crf_backward_exp(const CrfChainArgs<T>& a, int64_t b, int64_t t, int64_t j, T m, T mw,
                               const CrfScratch<T>& s) {
  s.r[j] = exp_or_zero(s.w[j] - mw);
  s.p[j] = m == neg_inf<T>() ? T(0) : exp_or_zero(crf_alpha_row(a, b, t - 1)[j] - m);
}

// Step t >= 1 of tag j < K, after crf_backward_exp (mw > -inf): column j of the pairwise marginals of (t - 1, t) added
// to the sequence's sums (with pair), and beta of tag j for step t - 1 (relative to beta_shift + mw).
template <typename T>
PYSEQ_HD void crf_pair_and_beta(const CrfChainArgs<T>& a, int64_t b, int64_t t, int64_t j, T m, T mw,
                                double beta_shift, double log_z, const CrfScratch<T>& s) {
  const int64_t K = a.K;
  const T* prev = crf_alpha_row(a, b, t - 1);
  if (a.pair && m != neg_inf<T>()) {
    // P(y_{t-1} = i, y_t = j) = exp(prev[i] + trans[i][j] + w[j] + offset)
    //                         = exp(m + mw + all_shift + offset) * p[i] * r[j] * all_exp[i][j]
    const T offset = static_cast<T>(a.shift[(t - 1) * a.B + b] + beta_shift - log_z);
    const T scale_log = m + mw + *a.all_shift + offset;
    T* column = a.pair + b * K * K + j;
    if (scale_log > CrfLimits<T>::big_shift) {
      for (int64_t i = 0; i < K; ++i) {
        column[i * K] += a.g[b] * exp_or_zero(prev[i] + a.trans[i * K + j] + s.w[j] + offset);
      }
    } else {
      const T scale = a.g[b] * exp_or_zero(scale_log) * s.r[j];
      for (int64_t i = 0; i < K; ++i) column[i * K] += scale * s.p[i] * a.all_exp[i * K + j];
    }
  }
  // beta_{t-1}[j] = log sum_k exp(trans[j][k] + w[k]), relative to beta_shift + mw
  T v = T(0);
  for (int64_t k = 0; k < K; ++k) v += s.r[k] * a.row_exp[j * K + k];
  s.beta[j] = v > CrfLimits<T>::tiny ? a.row_shift[j] + log_positive(v)
                                     : log_sum_exp_plus(s.w, a.trans + j * K, 1, K) - mw;
}

// The log-likelihood's path term of sequence b: g_path at every (step, tag), transition, start and end its tag path
// uses (one thread per sequence, after the recursion).
template <typename T>
PYSEQ_HD void crf_path_gradient(const CrfChainArgs<T>& a, int64_t b) {
  const int64_t L = a.lengths[b], K = a.K;
  const T g = a.g_path[b];
  if (L == 0 || g == T(0)) return;
  const int64_t* y = a.tags + b * a.T_max;
  T* node = a.node + b * a.T_max * K;
  a.start_sum[b * K + y[0]] += g;
  node[y[0]] += g;
  for (int64_t t = 1; t < L; ++t) {
    a.pair[b * K * K + y[t - 1] * K + y[t]] += g;
    node[t * K + y[t]] += g;
  }
  a.end_sum[b * K + y[L - 1]] += g;
}

// ---- Viterbi -----------------------------------------------------------------------------------------------------

template <typename T>
struct CrfViterbiArgs {
  int64_t B, T_max, K;
  const T* em;
  int64_t stride_b, stride_t;
  const int64_t* lengths;  // [B]
  const uint8_t* nan;      // [B]
  const T *start, *end, *trans;
  T* delta;                // [B, 2, K] two rolling rows of the best partial-path scores
  int32_t* back;           // [B, T_max, K] back-pointers
  int64_t* paths;          // [B, T_max] out, -1 on entry
  T* scores;               // [B] out
};

// Step t of tag j: the best previous tag (the lower one on ties, as on the CPU) and the new score.
template <typename T>
PYSEQ_HD void crf_viterbi_tag(const CrfViterbiArgs<T>& a, int64_t b, int64_t t, int64_t j) {
  const T* e = a.em + b * a.stride_b + t * a.stride_t;
  T* cur = a.delta + (2 * b + (t & 1)) * a.K;
  if (t == 0) {
    cur[j] = a.start[j] + e[j];
    return;
  }
  const T* prev = a.delta + (2 * b + ((t + 1) & 1)) * a.K;
  T best = neg_inf<T>();
  int32_t arg = 0;
  for (int64_t i = 0; i < a.K; ++i) {
    const T v = prev[i] + a.trans[i * a.K + j];
    if (v > best) best = v, arg = static_cast<int32_t>(i);
  }
  cur[j] = best + e[j];
  a.back[(b * a.T_max + t) * a.K + j] = arg;
}

// After the last step of sequence b: its score (0 for an empty sequence, NaN when it read a NaN score) and its path,
// unless every path is forbidden.
template <typename T>
PYSEQ_HD void crf_viterbi_backtrack(const CrfViterbiArgs<T>& a, int64_t b) {
  const int64_t L = a.lengths[b];
  if (L == 0) {
    a.scores[b] = T(0);
    return;
  }
  const T* d = a.delta + (2 * b + ((L - 1) & 1)) * a.K;
  int64_t last = 0;
  T score = neg_inf<T>();
  for (int64_t j = 0; j < a.K; ++j) {
    const T v = d[j] + a.end[j];
    if (v > score) score = v, last = j;
  }
  a.scores[b] = a.nan[b] ? std::numeric_limits<T>::quiet_NaN() : score;
  if (!(score > neg_inf<T>()) && !a.nan[b]) return;
  int64_t* path = a.paths + b * a.T_max;
  path[L - 1] = last;
  for (int64_t t = L - 1; t > 0; --t) path[t - 1] = a.back[(b * a.T_max + t) * a.K + path[t]];
}

}  // namespace pyseq
