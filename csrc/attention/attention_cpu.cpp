// Attention on the CPU. The additive scores are computed one (query, key) pair at a time from the two projected rows,
// A tanh terms in L1, never the [B, Tq, Tk, A] tensor; the backward recomputes them. Softmax, masking and its
// backward run row by row in place; the products with the values (and, for dot attention, the scores) are batched
// GEMMs through ATen.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <numeric>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../common/checks.h"
#include "../common/cpu_dispatch.h"
#include "../common/float32_compute.h"
#include "../common/parallel.h"
#include "../common/vec.h"
#include "attention_args.h"
#include "attention_math.h"

namespace pyseq {
namespace {

// row[j] <- softmax_j(scale * row[j]) over the keys the mask row m allows (m == nullptr: all); 0 elsewhere, and 0
// everywhere when no key is allowed.
template <typename T>
PYSEQ_ALWAYS_INLINE void masked_softmax_row_impl(T* __restrict__ row, int64_t Tk, const bool* m, int64_t sj, T scale) {
  T top = neg_inf<T>();
  bool nan = false;  // the maximum skips NaN: an attended NaN score makes the row NaN, as torch's softmax does
  for (int64_t j = 0; j < Tk; ++j) {
    row[j] = (m == nullptr || m[j * sj]) ? row[j] * scale : neg_inf<T>();
    top = row[j] > top ? row[j] : top;
    nan |= row[j] != row[j];
  }
  if (nan || top == neg_inf<T>()) {
    std::fill(row, row + Tk, nan ? std::numeric_limits<T>::quiet_NaN() : T(0));
    return;
  }
  T total = 0;
  for (int64_t j = 0; j < Tk; ++j) {
    row[j] = exp_or_zero(row[j] - top);
    total += row[j];
  }
  const T inv = T(1) / total;
  for (int64_t j = 0; j < Tk; ++j) row[j] *= inv;
}

// grad[j] <- scale * w[j] * (grad[j] - sum_k w[k] grad[k]): the softmax backward, in place (0 where w is 0).
template <typename T>
PYSEQ_ALWAYS_INLINE void softmax_backward_row_impl(const T* __restrict__ w, T* __restrict__ grad, int64_t Tk, T scale) {
  const T inner = dot(w, grad, Tk);
  for (int64_t j = 0; j < Tk; ++j) grad[j] = scale * w[j] * (grad[j] - inner);
}

template <typename T>
PYSEQ_ALWAYS_INLINE void exp2x_row_impl(const T* __restrict__ x, T* __restrict__ out, T* maxabs, int64_t A) {
  T lane[8] = {};  // max |x| over 8 lanes, so that the loop vectorizes (see max_of)
  int64_t a = 0;
  for (; a + 8 <= A; a += 8) {
    for (int l = 0; l < 8; ++l) {
      const T ax = x[a + l] < T(0) ? -x[a + l] : x[a + l];
      lane[l] = ax > lane[l] ? ax : lane[l];
    }
  }
  for (; a < A; ++a) {
    const T ax = x[a] < T(0) ? -x[a] : x[a];
    lane[0] = ax > lane[0] ? ax : lane[0];
  }
  T m = lane[0];
  for (int l = 1; l < 8; ++l) m = lane[l] > m ? lane[l] : m;
  bool nan = false;
  for (a = 0; a < A; ++a) nan |= x[a] != x[a];
  // NaN input: never the fast path (NaN compares false), and the exact one propagates it.
  *maxabs = nan ? std::numeric_limits<T>::quiet_NaN() : m;
  for (a = 0; a < A; ++a) {
    // Only used when |x| <= kFastTanhRange; the clamp keeps the others finite.
    const T c = x[a] > T(kFastTanhRange) ? T(kFastTanhRange) : x[a];
    out[a] = exp_or_zero(T(2) * (c < -T(kFastTanhRange) ? -T(kFastTanhRange) : c));
  }
}

PYSEQ_CPU_CLONES void exp2x_row(const float* x, float* out, float* maxabs, int64_t A) {
  exp2x_row_impl(x, out, maxabs, A);
}
void exp2x_row(const double* x, double* out, double* maxabs, int64_t A) { exp2x_row_impl(x, out, maxabs, A); }

// exp(2 x) and max |x| of each row of x [rows, A] (see additive_reciprocal): the factors of the fast tanh terms. They
// cost (Tq + Tk) A exponentials against Tq Tk A for the direct terms, so they pay when every query meets several
// keys and every key several queries, or when the key factors come cached from an earlier call (a decoding loop).
template <typename T>
class TanhFactors {
 public:
  // None: every term takes the direct path.
  explicit TanhFactors(int64_t A) : A_(A) {}
  // Computed from x.
  TanhFactors(const T* x, int64_t rows, int64_t A) : A_(A), exp2x_storage_(rows * A), maxabs_storage_(rows) {
    at::parallel_for(0, rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, A)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) exp2x_row(x + r * A, &exp2x_storage_[r * A], &maxabs_storage_[r], A);
    });
    exp2x_ = exp2x_storage_.data();
    maxabs_ = maxabs_storage_.data();
  }
  // Given: exp2x [rows, A] and maxabs [rows] computed earlier for the same x.
  TanhFactors(const T* exp2x, const T* maxabs, int64_t A) : A_(A), exp2x_(exp2x), maxabs_(maxabs) {}
  TanhFactors(const TanhFactors&) = delete;
  TanhFactors& operator=(const TanhFactors&) = delete;

  bool fast(int64_t query_row, const TanhFactors& keys, int64_t key_row) const {
    return maxabs_ != nullptr && keys.maxabs_ != nullptr &&
           maxabs_[query_row] + keys.maxabs_[key_row] <= T(kFastTanhRange);
  }
  const T* row(int64_t r) const { return exp2x_ + r * A_; }

 private:
  int64_t A_;
  std::vector<T> exp2x_storage_, maxabs_storage_;
  const T* exp2x_ = nullptr;
  const T* maxabs_ = nullptr;
};

// Whether computing the factors pays at these lengths (see TanhFactors).
bool use_tanh_factors(int64_t Tq, int64_t Tk) { return std::min(Tq, Tk) >= 4; }

// The factors of the queries and of the keys for one call: the keys' from the cache when given (key_exp2x [B, Tk, A],
// key_maxabs [B, Tk]), else computed when they pay; the queries' whenever the keys have them.
template <typename T>
struct CallFactors {
  std::unique_ptr<TanhFactors<T>> queries, keys;
  CallFactors(const T* q, const T* k, int64_t B, int64_t Tq, int64_t Tk, int64_t A, const at::Tensor& key_exp2x,
              const at::Tensor& key_maxabs) {
    if (key_exp2x.defined()) {
      keys = std::make_unique<TanhFactors<T>>(key_exp2x.data_ptr<T>(), key_maxabs.data_ptr<T>(), A);
    } else if (use_tanh_factors(Tq, Tk)) {
      keys = std::make_unique<TanhFactors<T>>(k, B * Tk, A);
    } else {
      keys = std::make_unique<TanhFactors<T>>(A);
    }
    const bool with_keys = key_exp2x.defined() || use_tanh_factors(Tq, Tk);
    queries = with_keys ? std::make_unique<TanhFactors<T>>(q, B * Tq, A) : std::make_unique<TanhFactors<T>>(A);
  }
};

// sum_a v[a] / (fq[a] fk[a] + 1): the factored terms' weighted sum. The division is the term's most expensive
// operation (one vector division per 16 terms, at a throughput of one per ~10 cycles); with AVX-512 it is replaced
// by the 14-bit reciprocal estimate refined by one Newton step (relative error ~1e-8, below float32 rounding:
// the argument is >= 1, so no zero, denormal or infinity reaches it).
#ifdef PYSEQ_HAVE_TARGETS
#define PYSEQ_HAVE_AVX512_RECIPROCAL 1
#include <immintrin.h>
// For `count` (1 to 4) key rows fk[0..count) at once, sharing the loads of v and fq: out[c] = sum_a v[a] /
// (fq[a] fk[c][a] + 1).
PYSEQ_TARGET_AVX512 void weighted_reciprocal_sums_avx512(const float* __restrict__ v, const float* __restrict__ fq,
                                                         const float* const* fk, int count, int64_t A, float* out) {
  const __m512 one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f);
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  int64_t a = 0;
  for (; a + 16 <= A; a += 16) {
    const __m512 va = _mm512_loadu_ps(v + a), qa = _mm512_loadu_ps(fq + a);
    for (int c = 0; c < 4; ++c) {
      if (c >= count) break;
      const __m512 e = _mm512_fmadd_ps(qa, _mm512_loadu_ps(fk[c] + a), one);
      __m512 r = _mm512_rcp14_ps(e);
      r = _mm512_mul_ps(r, _mm512_fnmadd_ps(e, r, two));  // r (2 - e r)
      acc[c] = _mm512_fmadd_ps(va, r, acc[c]);
    }
  }
  for (int c = 0; c < count; ++c) {
    float total = _mm512_reduce_add_ps(acc[c]);
    for (int64_t b = a; b < A; ++b) total += v[b] / (fq[b] * fk[c][b] + 1.0f);
    out[c] = total;
  }
}
#endif

// Scores of one query row against every key (keys: pk [Tk, A] with factors ek), into row [Tk]: v . tanh(q + k_j).
// q_row: this row's index in eq. Masked keys are skipped (the softmax gives them 0). h: [A] scratch.
template <typename T>
PYSEQ_ALWAYS_INLINE void additive_scores_row_impl(const T* __restrict__ q, const T* __restrict__ pk,
                                                  const T* __restrict__ v, T sum_v, const TanhFactors<T>& eq,
                                                  int64_t q_row, const TanhFactors<T>& ek, int64_t k_row0, int64_t Tk,
                                                  int64_t A, const bool* m, int64_t sj, T* __restrict__ row,
                                                  T* __restrict__ h) {
  using V = Block<T>;
  const T* __restrict__ fq = eq.row(q_row);
  // With AVX-512, factored keys are scored four at a time (pending holds the ones not scored yet).
  [[maybe_unused]] const bool avx512 = use_avx512_helpers();
  [[maybe_unused]] int64_t pending[4];
  [[maybe_unused]] int count = 0;
  [[maybe_unused]] const auto flush = [&] {
#ifdef PYSEQ_HAVE_AVX512_RECIPROCAL
    if constexpr (std::is_same_v<T, float>) {
      const float* fk[4];
      float sums[4];
      for (int c = 0; c < count; ++c) fk[c] = ek.row(k_row0 + pending[c]);
      weighted_reciprocal_sums_avx512(v, fq, fk, count, A, sums);
      for (int c = 0; c < count; ++c) row[pending[c]] = sum_v - T(2) * sums[c];
    }
#endif
    count = 0;
  };
  for (int64_t j = 0; j < Tk; ++j) {
    if (m != nullptr && !m[j * sj]) continue;
    if (eq.fast(q_row, ek, k_row0 + j)) {
      // v . tanh = sum(v) - 2 sum_a v_a r_a
      if (std::is_same_v<T, float> && avx512) {
        pending[count++] = j;
        if (count == 4) flush();
        continue;
      }
      const T* __restrict__ fk = ek.row(k_row0 + j);
      typename V::Vec acc0{}, acc1{};
      int64_t a = 0;
      for (; a + 2 * V::lanes <= A; a += 2 * V::lanes) {
        acc0 += V::load(v + a) / (V::load(fq + a) * V::load(fk + a) + T(1));
        acc1 += V::load(v + a + V::lanes) / (V::load(fq + a + V::lanes) * V::load(fk + a + V::lanes) + T(1));
      }
      T weighted = V::sum(acc0 + acc1);
      for (; a < A; ++a) weighted += v[a] * additive_reciprocal(fq[a], fk[a]);
      row[j] = sum_v - T(2) * weighted;
    } else if constexpr (std::is_same_v<T, float>) {
      // tanh and the dot product in one pass over vectors
      const T* __restrict__ k = pk + j * A;
      typename V::Vec acc0{}, acc1{};
      int64_t a = 0;
      for (; a + 2 * V::lanes <= A; a += 2 * V::lanes) {
        acc0 += V::load(v + a) * tanh_rational_of(V::load(q + a) + V::load(k + a));
        acc1 += V::load(v + a + V::lanes) * tanh_rational_of(V::load(q + a + V::lanes) + V::load(k + a + V::lanes));
      }
      T total = V::sum(acc0 + acc1);
      for (; a < A; ++a) total += v[a] * additive_term(q[a], k[a]);
      row[j] = total;
    } else {
      const T* __restrict__ k = pk + j * A;
      for (int64_t a = 0; a < A; ++a) h[a] = additive_term(q[a], k[a]);
      row[j] = dot(v, h, A);
    }
  }
  if (count > 0) flush();
}

// Backward of one query row: given d score / d row (ds [Tk]), adds to dq [A], dpk [Tk, A] and dv [A].
template <typename T>
PYSEQ_ALWAYS_INLINE void additive_backward_row_impl(const T* __restrict__ q, const T* __restrict__ pk,
                                                    const T* __restrict__ v, const TanhFactors<T>& eq, int64_t q_row,
                                                    const TanhFactors<T>& ek, int64_t k_row0,
                                                    const T* __restrict__ ds, int64_t Tk, int64_t A,
                                                    T* __restrict__ dq, T* __restrict__ dpk, T* __restrict__ dv) {
  const T* __restrict__ fq = eq.row(q_row);
  for (int64_t j = 0; j < Tk; ++j) {
    const T d = ds[j];
    if (d == T(0)) continue;  // masked keys, and rows with no gradient
    T* __restrict__ dk = dpk + j * A;
    if (eq.fast(q_row, ek, k_row0 + j)) {
      // h = 1 - 2 r, 1 - h^2 = 4 r (1 - r)
      const T* __restrict__ fk = ek.row(k_row0 + j);
      for (int64_t a = 0; a < A; ++a) {
        const T r = additive_reciprocal(fq[a], fk[a]);
        const T g = T(4) * d * v[a] * r * (T(1) - r);
        dq[a] += g;
        dk[a] += g;
        dv[a] += d * (T(1) - T(2) * r);
      }
    } else {
      const T* __restrict__ k = pk + j * A;
      for (int64_t a = 0; a < A; ++a) {
        const T h = additive_term(q[a], k[a]);
        const T g = d * additive_slope(v[a], h);
        dq[a] += g;
        dk[a] += g;
        dv[a] += d * h;
      }
    }
  }
}

PYSEQ_CPU_CLONES void masked_softmax_row(float* row, int64_t Tk, const bool* m, int64_t sj, float scale) {
  masked_softmax_row_impl(row, Tk, m, sj, scale);
}
void masked_softmax_row(double* row, int64_t Tk, const bool* m, int64_t sj, double scale) {
  masked_softmax_row_impl(row, Tk, m, sj, scale);
}
PYSEQ_CPU_CLONES void softmax_backward_row(const float* w, float* grad, int64_t Tk, float scale) {
  softmax_backward_row_impl(w, grad, Tk, scale);
}
void softmax_backward_row(const double* w, double* grad, int64_t Tk, double scale) {
  softmax_backward_row_impl(w, grad, Tk, scale);
}
PYSEQ_CPU_CLONES void additive_scores_row(const float* q, const float* pk, const float* v, float sum_v,
                                          const TanhFactors<float>& eq, int64_t q_row, const TanhFactors<float>& ek,
                                          int64_t k_row0, int64_t Tk, int64_t A, const bool* m, int64_t sj, float* row,
                                          float* h) {
  additive_scores_row_impl(q, pk, v, sum_v, eq, q_row, ek, k_row0, Tk, A, m, sj, row, h);
}
void additive_scores_row(const double* q, const double* pk, const double* v, double sum_v,
                         const TanhFactors<double>& eq, int64_t q_row, const TanhFactors<double>& ek, int64_t k_row0,
                         int64_t Tk, int64_t A, const bool* m, int64_t sj, double* row, double* h) {
  additive_scores_row_impl(q, pk, v, sum_v, eq, q_row, ek, k_row0, Tk, A, m, sj, row, h);
}
PYSEQ_CPU_CLONES void additive_backward_row(const float* q, const float* pk, const float* v,
                                            const TanhFactors<float>& eq, int64_t q_row, const TanhFactors<float>& ek,
                                            int64_t k_row0, const float* ds, int64_t Tk, int64_t A, float* dq,
                                            float* dpk, float* dv) {
  additive_backward_row_impl(q, pk, v, eq, q_row, ek, k_row0, ds, Tk, A, dq, dpk, dv);
}
void additive_backward_row(const double* q, const double* pk, const double* v, const TanhFactors<double>& eq,
                           int64_t q_row, const TanhFactors<double>& ek, int64_t k_row0, const double* ds, int64_t Tk,
                           int64_t A, double* dq, double* dpk, double* dv) {
  additive_backward_row_impl(q, pk, v, eq, q_row, ek, k_row0, ds, Tk, A, dq, dpk, dv);
}

// Rows (b, i) of the [B, Tq, Tk] weights, in parallel: body(r0, r1) over ranges of row indices r = b Tq + i.
template <typename F>
void for_each_row(int64_t B, int64_t Tq, int64_t cost_per_row, const F& body) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, cost_per_row));
  at::parallel_for(0, B * Tq, grain, body);
}

// d loss / d scores: the gradient with respect to the weights (through the context, plus grad_weights when defined,
// added by the GEMM itself), then the softmax backward times `scale`, in place.
at::Tensor score_gradient(const at::Tensor& grad_context, const at::Tensor& grad_weights, const at::Tensor& value,
                          const at::Tensor& weights, double scale) {
  at::Tensor grad = grad_weights.defined() ? at::baddbmm(grad_weights, grad_context, value.transpose(1, 2))
                                           : at::bmm(grad_context, value.transpose(1, 2));  // [B, Tq, Tk]
  const int64_t B = grad.size(0), Tq = grad.size(1), Tk = grad.size(2);
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "attention_score_gradient", [&] {
    const at::Tensor w = weights.contiguous();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    scalar_t* gp = grad.data_ptr<scalar_t>();
    for_each_row(B, Tq, 4 * Tk, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) softmax_backward_row(wp + r * Tk, gp + r * Tk, Tk, static_cast<scalar_t>(scale));
    });
  });
  return grad;
}

using Optional = std::optional<at::Tensor>;

std::tuple<at::Tensor, at::Tensor> additive_attention_cpu(const at::Tensor& query_proj, const at::Tensor& key_proj,
                                                          const at::Tensor& v, const at::Tensor& value,
                                                          const Optional& mask, const Optional& key_exp2x,
                                                          const Optional& key_maxabs) {
  const MaskView m =
      check_attention(query_proj, "query_proj", key_proj, "key_proj", value, mask.value_or(at::Tensor()));
  check_additive(query_proj, key_proj, v);
  const int64_t B = query_proj.size(0), Tq = query_proj.size(1), Tk = key_proj.size(1), A = query_proj.size(2);
  const auto [ke, km] =
      check_key_factors(key_exp2x.value_or(at::Tensor()), key_maxabs.value_or(at::Tensor()), key_proj);
  at::Tensor weights = at::empty({B, Tq, Tk}, query_proj.options());
  AT_DISPATCH_FLOATING_TYPES(query_proj.scalar_type(), "additive_attention_cpu", [&] {
    using T = scalar_t;
    const at::Tensor q = query_proj.contiguous(), k = key_proj.contiguous(), vc = v.contiguous();
    const T *qp = q.data_ptr<T>(), *kp = k.data_ptr<T>(), *vp = vc.data_ptr<T>();
    T* wp = weights.data_ptr<T>();
    const CallFactors<T> factors(qp, kp, B, Tq, Tk, A, ke, km);
    const TanhFactors<T>&eq = *factors.queries, &ek = *factors.keys;
    const T sum_v = std::accumulate(vp, vp + A, T(0));
    for_each_row(B, Tq, 8 * Tk * A, [&](int64_t r0, int64_t r1) {
      std::vector<T> h(A);
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / Tq;
        const bool* mrow = m.row(b, r % Tq);
        additive_scores_row(qp + r * A, kp + b * Tk * A, vp, sum_v, eq, r, ek, b * Tk, Tk, A, mrow, m.sj, wp + r * Tk,
                            h.data());
        masked_softmax_row(wp + r * Tk, Tk, mrow, m.sj, T(1));
      }
    });
  });
  return {at::bmm(weights, value), weights};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> additive_attention_backward_cpu(
    const at::Tensor& grad_context, const Optional& grad_weights_given, const at::Tensor& query_proj,
    const at::Tensor& key_proj, const at::Tensor& v, const at::Tensor& value, const at::Tensor& weights,
    const Optional& key_exp2x, const Optional& key_maxabs) {
  const at::Tensor grad_weights = grad_weights_given.value_or(at::Tensor());
  check_attention(query_proj, "query_proj", key_proj, "key_proj", value, at::Tensor());
  const auto [ke, km] =
      check_key_factors(key_exp2x.value_or(at::Tensor()), key_maxabs.value_or(at::Tensor()), key_proj);
  const int64_t B = query_proj.size(0), Tq = query_proj.size(1), Tk = key_proj.size(1), A = query_proj.size(2);
  check_backward_inputs(grad_context, grad_weights, weights, B, Tq, Tk, value.size(2));
  const at::Tensor ds = score_gradient(grad_context, grad_weights, value, weights, 1.0);
  at::Tensor grad_q = at::zeros({B, Tq, A}, query_proj.options());
  at::Tensor grad_k = at::zeros({B, Tk, A}, key_proj.options());
  at::Tensor grad_v = at::zeros_like(v);
  AT_DISPATCH_FLOATING_TYPES(query_proj.scalar_type(), "additive_attention_backward_cpu", [&] {
    using T = scalar_t;
    const at::Tensor q = query_proj.contiguous(), k = key_proj.contiguous(), vc = v.contiguous();
    const T *qp = q.data_ptr<T>(), *kp = k.data_ptr<T>(), *vp = vc.data_ptr<T>(), *dsp = ds.data_ptr<T>();
    T *gq = grad_q.data_ptr<T>(), *gk = grad_k.data_ptr<T>();
    const CallFactors<T> factors(qp, kp, B, Tq, Tk, A, ke, km);
    const TanhFactors<T>&eq = *factors.queries, &ek = *factors.keys;
    // Parallel over the batch (the key gradients of one batch entry collect every query's terms); each chunk sums
    // its v gradient apart, and the chunks are added in order (deterministic).
    std::vector<std::vector<T>> dv(chunk_count(B));
    for_each_chunk(B, [&](int64_t b0, int64_t b1, int64_t c) {
      std::vector<T> local(A, T(0));
      for (int64_t b = b0; b < b1; ++b) {
        for (int64_t i = 0; i < Tq; ++i) {
          const int64_t row = b * Tq + i;
          additive_backward_row(qp + row * A, kp + b * Tk * A, vp, eq, row, ek, b * Tk, dsp + row * Tk, Tk, A,
                                gq + row * A, gk + b * Tk * A, local.data());
        }
      }
      dv[c] = std::move(local);
    });
    T* gv = grad_v.data_ptr<T>();
    for (const std::vector<T>& part : dv) {
      for (int64_t a = 0; a < A; ++a) gv[a] += part[a];
    }
  });
  return {grad_q, grad_k, grad_v, at::bmm(weights.transpose(1, 2), grad_context)};
}

std::tuple<at::Tensor, at::Tensor> dot_attention_cpu(const at::Tensor& query, const at::Tensor& key,
                                                     const at::Tensor& value, const Optional& mask, double scale) {
  const MaskView m = check_attention(query, "query", key, "key", value, mask.value_or(at::Tensor()));
  const int64_t B = query.size(0), Tq = query.size(1), Tk = key.size(1);
  TORCH_CHECK_VALUE(key.size(2) == query.size(2), "query and key must have the same feature size, got ",
                    query.size(2), " and ", key.size(2));
  at::Tensor weights = at::bmm(query, key.transpose(1, 2));  // [B, Tq, Tk], contiguous
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "dot_attention_cpu", [&] {
    scalar_t* wp = weights.data_ptr<scalar_t>();
    for_each_row(B, Tq, 4 * Tk, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        masked_softmax_row(wp + r * Tk, Tk, m.row(r / Tq, r % Tq), m.sj, static_cast<scalar_t>(scale));
      }
    });
  });
  return {at::bmm(weights, value), weights};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dot_attention_backward_cpu(
    const at::Tensor& grad_context, const Optional& grad_weights_given, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& weights, double scale) {
  const at::Tensor grad_weights = grad_weights_given.value_or(at::Tensor());
  check_attention(query, "query", key, "key", value, at::Tensor());
  check_backward_inputs(grad_context, grad_weights, weights, query.size(0), query.size(1), key.size(1),
                        value.size(2));
  const at::Tensor ds = score_gradient(grad_context, grad_weights, value, weights, scale);
  return {at::bmm(ds, key), at::bmm(ds.transpose(1, 2), query), at::bmm(weights.transpose(1, 2), grad_context)};
}

}  // namespace
}  // namespace pyseq

TORCH_LIBRARY_IMPL(pyseq, CPU, m) {
  m.impl("additive_attention", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::additive_attention_cpu));
  m.impl("additive_attention_backward", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::additive_attention_backward_cpu));
  m.impl("dot_attention", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::dot_attention_cpu));
  m.impl("dot_attention_backward", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::dot_attention_backward_cpu));
}
