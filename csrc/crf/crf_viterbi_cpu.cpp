// CRF decoding on the CPU: Viterbi (a max-plus product per step, vectorized over the target tag) and list Viterbi for
// the k best paths; backpointers and traceback per sequence, parallel over the batch.
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

// Viterbi over the sequences [b0, b1) of one chunk, advancing together one step at a time (as in the forward
// recursion of crf_cpu.cpp). Writes each sequence's best path into paths + b * path_stride and its score into
// scores[b * nbest] (-inf, path untouched, when every path is forbidden). trans_padded: [K, Kp] with -inf padding.
template <typename T>
PYSEQ_ALWAYS_INLINE void viterbi_chunk_impl(const CrfArgs& a, const T* em, int64_t Kp, const T* __restrict__ start,
                                            const T* __restrict__ end, const T* __restrict__ trans_padded,
                                            int64_t b0, int64_t b1, int64_t* paths, int64_t path_stride, T* scores,
                                            int64_t score_stride) {
  const int64_t K = a.K, T_max = a.T, n = b1 - b0;
  std::vector<T> delta(n * Kp, neg_inf<T>()), best(Kp);
  std::vector<int32_t> backpointers(n * T_max * Kp);
  StagedEmissions<T> staged(em, a.stride_b, a.stride_t, K, Kp, b0, n);
  int64_t steps = 0;
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t L = a.lengths[b];
    if (L == 0) continue;
    const T* e = em + b * a.stride_b;
    for (int64_t j = 0; j < K; ++j) delta[(b - b0) * Kp + j] = start[j] + e[j];
    if (L > 1) staged.stage(b, 1);
    steps = std::max(steps, L);
  }
  for (int64_t t = 1; t < steps; ++t) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t L = a.lengths[b];
      if (t >= L) continue;
      T* __restrict__ d = delta.data() + (b - b0) * Kp;
      max_plus_product(d, trans_padded, K, Kp, best.data(), backpointers.data() + ((b - b0) * T_max + t) * Kp);
      const T* __restrict__ e = staged.row(b);
      for (int64_t j = 0; j < Kp; ++j) d[j] = best[j] + e[j];
      if (t + 1 < L) staged.stage(b, t + 1);
    }
  }
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t L = a.lengths[b];
    if (L == 0) continue;
    const T* d = delta.data() + (b - b0) * Kp;
    int64_t last = 0;
    T score = neg_inf<T>();
    for (int64_t j = 0; j < K; ++j) {
      const T v = d[j] + end[j];
      if (v > score) {
        score = v;
        last = j;
      }
    }
    // A sequence that read a NaN score gets score NaN, and the path that the comparisons, which skip NaN, found.
    scores[b * score_stride] = a.nan[b] ? std::numeric_limits<T>::quiet_NaN() : score;
    if (!(score > neg_inf<T>()) && !a.nan[b]) continue;
    int64_t* path = paths + b * path_stride;
    const int32_t* bp = backpointers.data() + (b - b0) * T_max * Kp;
    path[L - 1] = last;
    for (int64_t t = L - 1; t > 0; --t) path[t - 1] = bp[t * Kp + path[t]];
  }
}

PYSEQ_CPU_CLONES void viterbi_chunk(const CrfArgs& a, const float* em, int64_t Kp, const float* start, const float* end,
                                    const float* trans_padded, int64_t b0, int64_t b1, int64_t* paths,
                                    int64_t path_stride, float* scores, int64_t score_stride) {
  viterbi_chunk_impl(a, em, Kp, start, end, trans_padded, b0, b1, paths, path_stride, scores, score_stride);
}
void viterbi_chunk(const CrfArgs& a, const double* em, int64_t Kp, const double* start, const double* end,
                   const double* trans_padded, int64_t b0, int64_t b1, int64_t* paths, int64_t path_stride,
                   double* scores, int64_t score_stride) {
  viterbi_chunk_impl(a, em, Kp, start, end, trans_padded, b0, b1, paths, path_stride, scores, score_stride);
}

// A partial path in list Viterbi: its score and where it came from (tag and rank at the previous step).
template <typename T>
struct Candidate {
  T score;
  int32_t tag, rank;
};

// Best first; ties go to the lower previous tag, then the lower rank.
template <typename T>
bool ranks_before(const Candidate<T>& a, const Candidate<T>& b) {
  if (a.score != b.score) return a.score > b.score;
  return a.tag != b.tag ? a.tag < b.tag : a.rank < b.rank;
}

// Keeps the `keep` best of `pool` (sorted) and drops the rest.
template <typename T>
void keep_best(std::vector<Candidate<T>>& pool, int64_t keep) {
  const auto middle = pool.begin() + std::min<int64_t>(keep, pool.size());
  std::partial_sort(pool.begin(), middle, pool.end(), ranks_before<T>);
  pool.erase(middle, pool.end());
}

// The k best distinct paths of one sequence of length L >= 1 (list Viterbi): every (step, tag) keeps its k best
// partial paths with backpointers (previous tag, previous rank). Only paths with a score above -inf are kept. Writes
// paths [k, T_max] and scores [k] for the ranks found.
template <typename T>
void kbest_sequence(const T* em, int64_t st, int64_t L, int64_t K, int64_t k, int64_t T_max, const T* start,
                    const T* end, const T* trans, int64_t* paths, T* scores) {
  std::vector<Candidate<T>> table(L * K * k);  // [L, K, k]: score at (t, j, rank) and its backpointer
  std::vector<int64_t> count(L * K, 0);        // [L, K]: ranks kept at (t, j)
  std::vector<Candidate<T>> pool;
  pool.reserve(K * k);
  for (int64_t j = 0; j < K; ++j) {
    const T v = start[j] + em[j];
    if (v > neg_inf<T>()) {
      table[j * k] = {v, -1, -1};
      count[j] = 1;
    }
  }
  for (int64_t t = 1; t < L; ++t) {
    const T* e = em + t * st;
    for (int64_t j = 0; j < K; ++j) {
      pool.clear();
      for (int64_t i = 0; i < K; ++i) {
        const Candidate<T>* from = &table[((t - 1) * K + i) * k];
        for (int64_t r = 0; r < count[(t - 1) * K + i]; ++r) {
          const T v = from[r].score + trans[i * K + j] + e[j];
          if (v > neg_inf<T>()) pool.push_back({v, static_cast<int32_t>(i), static_cast<int32_t>(r)});
        }
      }
      keep_best(pool, k);
      std::copy(pool.begin(), pool.end(), &table[(t * K + j) * k]);
      count[t * K + j] = pool.size();
    }
  }
  pool.clear();
  for (int64_t j = 0; j < K; ++j) {
    const Candidate<T>* from = &table[((L - 1) * K + j) * k];
    for (int64_t r = 0; r < count[(L - 1) * K + j]; ++r) {
      const T v = from[r].score + end[j];
      if (v > neg_inf<T>()) pool.push_back({v, static_cast<int32_t>(j), static_cast<int32_t>(r)});
    }
  }
  keep_best(pool, k);
  for (size_t n = 0; n < pool.size(); ++n) {
    scores[n] = pool[n].score;
    int64_t* path = paths + n * T_max;
    int64_t tag = pool[n].tag, rank = pool[n].rank;
    for (int64_t t = L - 1; t >= 0; --t) {
      path[t] = tag;
      const Candidate<T>& c = table[(t * K + tag) * k + rank];
      tag = c.tag;
      rank = c.rank;
    }
  }
}

std::tuple<at::Tensor, at::Tensor> crf_viterbi_cpu(const at::Tensor& emissions, const at::Tensor& lengths,
                                                   const at::Tensor& start, const at::Tensor& end,
                                                   const at::Tensor& transitions, int64_t nbest) {
  const CrfArgs a = check_crf_args(emissions, lengths, start, end, transitions);
  TORCH_CHECK_VALUE(nbest >= 1, "nbest must be at least 1, got ", nbest);
  at::Tensor paths = at::full({a.B, nbest, a.T}, -1, at::kLong);
  at::Tensor scores = at::full({a.B, nbest}, -std::numeric_limits<double>::infinity(), emissions.options());
  AT_DISPATCH_FLOATING_TYPES(emissions.scalar_type(), "crf_viterbi_cpu", [&] {
    using T = scalar_t;
    const at::Tensor s = start.contiguous(), e = end.contiguous(), tr = transitions.contiguous();
    const T* em = a.emissions.data_ptr<T>();
    const T *sp = s.data_ptr<T>(), *ep = e.data_ptr<T>(), *tp = tr.data_ptr<T>();
    int64_t* path_p = paths.data_ptr<int64_t>();
    T* score_p = scores.data_ptr<T>();
    const int64_t Kp = padded_tags<T>(a.K);
    std::vector<T> trans_padded(a.K * Kp, neg_inf<T>());
    for (int64_t i = 0; i < a.K; ++i) std::copy(tp + i * a.K, tp + (i + 1) * a.K, trans_padded.data() + i * Kp);
    for (int64_t b = 0; b < a.B; ++b) {
      if (a.lengths[b] == 0) score_p[b * nbest] = 0;  // the one empty path
    }
    if (nbest == 1) {
      at::parallel_for(0, a.B, 1, [&](int64_t b0, int64_t b1) {
        viterbi_chunk(a, em, Kp, sp, ep, trans_padded.data(), b0, b1, path_p, a.T, score_p, 1);
      });
    } else {
      at::parallel_for(0, a.B, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          if (a.lengths[b] == 0) continue;
          kbest_sequence(em + b * a.stride_b, a.stride_t, a.lengths[b], a.K, nbest, a.T, sp, ep, tp,
                         path_p + b * nbest * a.T, score_p + b * nbest);
          if (a.nan[b]) std::fill(score_p + b * nbest, score_p + (b + 1) * nbest, std::numeric_limits<T>::quiet_NaN());
        }
      });
    }
  });
  return {paths, scores};
}

}  // namespace
}  // namespace pyseq

TORCH_LIBRARY_IMPL(pyseq, CPU, m) { m.impl("crf_viterbi", PYSEQ_FLOAT32_RESULTS(pyseq::crf_viterbi_cpu)); }
