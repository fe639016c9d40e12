// Attention on the CPU. The additive scores are computed one (query, key) pair at a time from the two projected rows,
// A tanh terms in L1, never the [B, Tq, Tk, A] tensor; the backward recomputes them. Softmax, masking and its
// backward run row by row in place; the products with the values (and, for dot attention, the scores) are batched
// GEMMs through ATen.
#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

#include "../common/checks.h"
#include "../common/cpu_dispatch.h"
#include "../common/vec.h"
#include "attention.h"
#include "attention_math.h"

namespace pyseq {
namespace {

// Mask rows: element (b, i, j) at p[b * sb + i * si + j * sj]; p == nullptr attends everywhere.
struct Mask {
  const bool* p = nullptr;
  int64_t sb = 0, si = 0, sj = 0;
  const bool* row(int64_t b, int64_t i) const { return p ? p + b * sb + i * si : nullptr; }
};

// queries: [B, Tq, *], keys: [B, Tk, *], value: [B, Tk, Dv], all of one floating dtype on the CPU; mask: undefined or
// bool [B, Tk] / [B, Tq, Tk].
Mask check_attention(const at::Tensor& queries, const char* q_name, const at::Tensor& keys, const char* k_name,
                     const at::Tensor& value, const at::Tensor& mask) {
  check_dim(queries, q_name, 3, "(batch, query_len, features)");
  check_dim(keys, k_name, 3, "(batch, key_len, features)");
  check_dim(value, "value", 3, "(batch, key_len, value_size)");
  check_floating(queries, q_name);
  TORCH_CHECK(queries.device().is_cpu(), q_name, " must be on the CPU, got ", queries.device());
  check_like(keys, k_name, queries, q_name);
  check_like(value, "value", queries, q_name);
  const int64_t B = queries.size(0), Tq = queries.size(1), Tk = keys.size(1);
  TORCH_CHECK_VALUE(keys.size(0) == B && value.size(0) == B, "batch sizes differ: ", q_name, " has ", B, ", ", k_name,
                    " ", keys.size(0), ", value ", value.size(0));
  TORCH_CHECK_VALUE(value.size(1) == Tk, "value must have one row per key: ", k_name, " has ", Tk,
                    " keys, value has ", value.size(1));
  TORCH_CHECK_VALUE(Tk >= 1, k_name, " must hold at least one key, got key_len = 0");
  Mask m;
  if (!mask.defined()) return m;
  TORCH_CHECK_TYPE(mask.scalar_type() == at::kBool, "mask must be bool (True = attend), got ", mask.scalar_type());
  TORCH_CHECK(mask.device().is_cpu(), "mask must be on the CPU, got ", mask.device());
  if (mask.dim() == 2) {
    TORCH_CHECK_VALUE(mask.size(0) == B && mask.size(1) == Tk, "mask must have shape [", B, ", ", Tk, "] or [", B,
                      ", ", Tq, ", ", Tk, "], got ", shape_str(mask.sizes()));
    m = {mask.data_ptr<bool>(), mask.stride(0), 0, mask.stride(1)};
  } else {
    TORCH_CHECK_VALUE(mask.dim() == 3 && mask.size(0) == B && mask.size(1) == Tq && mask.size(2) == Tk,
                      "mask must have shape [", B, ", ", Tk, "] or [", B, ", ", Tq, ", ", Tk, "], got ",
                      shape_str(mask.sizes()));
    m = {mask.data_ptr<bool>(), mask.stride(0), mask.stride(1), mask.stride(2)};
  }
  return m;
}

// row[j] <- softmax_j(scale * row[j]) over the keys the mask row m allows (m == nullptr: all); 0 elsewhere, and 0
// everywhere when no key is allowed.
template <typename T>
PYSEQ_ALWAYS_INLINE void masked_softmax_row_impl(T* __restrict__ row, int64_t Tk, const bool* m, int64_t sj, T scale) {
  T top = neg_inf<T>();
  for (int64_t j = 0; j < Tk; ++j) {
    row[j] = (m == nullptr || m[j * sj]) ? row[j] * scale : neg_inf<T>();
    top = row[j] > top ? row[j] : top;
  }
  if (top == neg_inf<T>()) {
    std::fill(row, row + Tk, T(0));
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
// keys and every key several queries; `enabled` false leaves every term on the direct path (one decoder step).
template <typename T>
struct TanhFactors {
  std::vector<T> exp2x;   // [rows, A]
  std::vector<T> maxabs;  // [rows]
  int64_t A;
  TanhFactors(const T* x, int64_t rows, int64_t A_, bool enabled)
      : exp2x(enabled ? rows * A_ : 0), maxabs(enabled ? rows : 0), A(A_) {
    if (!enabled) return;
    at::parallel_for(0, rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, A)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) exp2x_row(x + r * A, exp2x.data() + r * A, &maxabs[r], A);
    });
  }
  bool fast(int64_t query_row, const TanhFactors& keys, int64_t key_row) const {
    return !maxabs.empty() && maxabs[query_row] + keys.maxabs[key_row] <= T(kFastTanhRange);
  }
  const T* row(int64_t r) const { return exp2x.data() + r * A; }
};

// Whether the tanh factors pay at these lengths (see TanhFactors).
bool use_tanh_factors(int64_t Tq, int64_t Tk) { return std::min(Tq, Tk) >= 4; }

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
  for (int64_t j = 0; j < Tk; ++j) {
    if (m != nullptr && !m[j * sj]) continue;
    if (eq.fast(q_row, ek, k_row0 + j)) {
      // v . tanh = sum(v) - 2 sum_a v_a r_a
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

// Rows (b, i) of the [B, Tq, Tk] weights, in parallel: body(b, i).
template <typename F>
void for_each_row(int64_t B, int64_t Tq, int64_t cost_per_row, const F& body) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, cost_per_row));
  at::parallel_for(0, B * Tq, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) body(r / Tq, r % Tq);
  });
}

// d loss / d scores, in place of grad (the gradient with respect to the weights): adds grad_weights when defined,
// then the softmax backward times `scale`.
at::Tensor score_gradient(const at::Tensor& grad_context, const at::Tensor& grad_weights, const at::Tensor& value,
                          const at::Tensor& weights, double scale) {
  at::Tensor grad = at::bmm(grad_context, value.transpose(1, 2));  // [B, Tq, Tk]
  if (grad_weights.defined()) grad.add_(grad_weights);
  const int64_t B = grad.size(0), Tq = grad.size(1), Tk = grad.size(2);
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "attention_score_gradient", [&] {
    const at::Tensor w = weights.contiguous();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    scalar_t* gp = grad.data_ptr<scalar_t>();
    for_each_row(B, Tq, 4 * Tk, [&](int64_t b, int64_t i) {
      const int64_t offset = (b * Tq + i) * Tk;
      softmax_backward_row(wp + offset, gp + offset, Tk, static_cast<scalar_t>(scale));
    });
  });
  return grad;
}

void check_backward_inputs(const at::Tensor& grad_context, const at::Tensor& grad_weights, const at::Tensor& weights,
                           int64_t B, int64_t Tq, int64_t Tk, int64_t Dv) {
  check_shape(grad_context, "grad_context", {B, Tq, Dv});
  check_shape(weights, "weights", {B, Tq, Tk});
  if (grad_weights.defined()) check_shape(grad_weights, "grad_weights", {B, Tq, Tk});
}

}  // namespace

std::vector<at::Tensor> additive_attention_forward_cpu(const at::Tensor& query_proj, const at::Tensor& key_proj,
                                                       const at::Tensor& v, const at::Tensor& value,
                                                       const at::Tensor& mask) {
  const Mask m = check_attention(query_proj, "query_proj", key_proj, "key_proj", value, mask);
  const int64_t B = query_proj.size(0), Tq = query_proj.size(1), Tk = key_proj.size(1), A = query_proj.size(2);
  TORCH_CHECK_VALUE(key_proj.size(2) == A, "query_proj and key_proj must have the same attention size, got ", A,
                    " and ", key_proj.size(2));
  check_dim(v, "v", 1, "(attn_size,)");
  TORCH_CHECK_VALUE(v.size(0) == A, "v must have attn_size = ", A, " entries, got ", v.size(0));
  check_like(v, "v", query_proj, "query_proj");
  at::Tensor weights = at::empty({B, Tq, Tk}, query_proj.options());
  AT_DISPATCH_FLOATING_TYPES(query_proj.scalar_type(), "additive_attention_forward_cpu", [&] {
    using T = scalar_t;
    const at::Tensor q = query_proj.contiguous(), k = key_proj.contiguous(), vc = v.contiguous();
    const T *qp = q.data_ptr<T>(), *kp = k.data_ptr<T>(), *vp = vc.data_ptr<T>();
    T* wp = weights.data_ptr<T>();
    const bool factors = use_tanh_factors(Tq, Tk);
    const TanhFactors<T> eq(qp, B * Tq, A, factors), ek(kp, B * Tk, A, factors);
    const T sum_v = std::accumulate(vp, vp + A, T(0));
    for_each_row(B, Tq, 8 * Tk * A, [&](int64_t b, int64_t i) {
      std::vector<T> h(A);
      T* row = wp + (b * Tq + i) * Tk;
      const bool* mrow = m.row(b, i);
      additive_scores_row(qp + (b * Tq + i) * A, kp + b * Tk * A, vp, sum_v, eq, b * Tq + i, ek, b * Tk, Tk, A, mrow,
                          m.sj, row, h.data());
      masked_softmax_row(row, Tk, mrow, m.sj, T(1));
    });
  });
  return {at::bmm(weights, value), weights};
}

std::vector<at::Tensor> additive_attention_backward_cpu(const at::Tensor& grad_context, const at::Tensor& grad_weights,
                                                        const at::Tensor& query_proj, const at::Tensor& key_proj,
                                                        const at::Tensor& v, const at::Tensor& value,
                                                        const at::Tensor& weights) {
  check_attention(query_proj, "query_proj", key_proj, "key_proj", value, at::Tensor());
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
    const bool factors = use_tanh_factors(Tq, Tk);
    const TanhFactors<T> eq(qp, B * Tq, A, factors), ek(kp, B * Tk, A, factors);
    // Parallel over the batch (the key gradients of one batch entry collect every query's terms); each chunk sums
    // its v gradient apart, and the chunks are added in order (deterministic).
    const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(B, at::get_num_threads()));
    std::vector<std::vector<T>> dv(chunks);
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        std::vector<T> local(A, T(0));
        for (int64_t b = c * B / chunks; b < (c + 1) * B / chunks; ++b) {
          for (int64_t i = 0; i < Tq; ++i) {
            const int64_t row = b * Tq + i;
            additive_backward_row(qp + row * A, kp + b * Tk * A, vp, eq, row, ek, b * Tk, dsp + row * Tk, Tk, A,
                                  gq + row * A, gk + b * Tk * A, local.data());
          }
        }
        dv[c] = std::move(local);
      }
    });
    T* gv = grad_v.data_ptr<T>();
    for (const std::vector<T>& part : dv) {
      for (int64_t a = 0; a < A; ++a) gv[a] += part[a];
    }
  });
  return {grad_q, grad_k, grad_v, at::bmm(weights.transpose(1, 2), grad_context)};
}

std::vector<at::Tensor> dot_attention_forward_cpu(const at::Tensor& query, const at::Tensor& key,
                                                  const at::Tensor& value, const at::Tensor& mask, double scale) {
  const Mask m = check_attention(query, "query", key, "key", value, mask);
  const int64_t B = query.size(0), Tq = query.size(1), Tk = key.size(1);
  TORCH_CHECK_VALUE(key.size(2) == query.size(2), "query and key must have the same feature size, got ",
                    query.size(2), " and ", key.size(2));
  at::Tensor weights = at::bmm(query, key.transpose(1, 2));  // [B, Tq, Tk], contiguous
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "dot_attention_forward_cpu", [&] {
    scalar_t* wp = weights.data_ptr<scalar_t>();
    for_each_row(B, Tq, 4 * Tk, [&](int64_t b, int64_t i) {
      masked_softmax_row(wp + (b * Tq + i) * Tk, Tk, m.row(b, i), m.sj, static_cast<scalar_t>(scale));
    });
  });
  return {at::bmm(weights, value), weights};
}

std::vector<at::Tensor> dot_attention_backward_cpu(const at::Tensor& grad_context, const at::Tensor& grad_weights,
                                                   const at::Tensor& query, const at::Tensor& key,
                                                   const at::Tensor& value, const at::Tensor& weights, double scale) {
  check_attention(query, "query", key, "key", value, at::Tensor());
  check_backward_inputs(grad_context, grad_weights, weights, query.size(0), query.size(1), key.size(1),
                        value.size(2));
  const at::Tensor ds = score_gradient(grad_context, grad_weights, value, weights, scale);
  return {at::bmm(ds, key), at::bmm(ds.transpose(1, 2), query), at::bmm(weights.transpose(1, 2), grad_context)};
}

}  // namespace pyseq
