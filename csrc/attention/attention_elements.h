// Attention as the work of one score, one softmax element or one gradient element: __host__ __device__ functions that
// a CUDA thread runs (csrc/attention/attention_cuda.cu; make cuda-emulate runs them on the CPU, thread by thread).
// Torch-free, so that nvcc compiles it without torch headers. The per-term math is
// attention_math.h's, as in the CPU kernels.
//
// The additive scores are computed one (query, key) pair per thread, the A-long tanh reduction in registers: no
// [B, Tq, Tk, A] tensor. Each gradient element is one thread's sum over the keys (query gradients) or the queries
// (key gradients), in a fixed order: deterministic, no atomics.
#pragma once

#include <cstdint>

#include "attention_math.h"

namespace pyseq {

// A bool mask: element (b, i, j) at p[b * sb + i * si + j * sj] (si = 0 for a [B, Tk] mask); p == nullptr attends
// everywhere.
struct MaskView {
  const bool* p = nullptr;
  int64_t sb = 0, si = 0, sj = 0;
  PYSEQ_HD const bool* row(int64_t b, int64_t i) const { return p ? p + b * sb + i * si : nullptr; }
  PYSEQ_HD bool attends(int64_t b, int64_t i, int64_t j) const { return p == nullptr || p[b * sb + i * si + j * sj]; }
};

// One call of additive attention. Every pointer is on the kernels' device, contiguous.
template <typename T>
struct AdditiveArgs {
  int64_t B, Tq, Tk, A;
  const T* q;     // [B, Tq, A] query_proj
  const T* k;     // [B, Tk, A] key_proj
  const T* v;     // [A]
  MaskView mask;
  T* scores;      // [B, Tq, Tk] forward: the scores (0 where masked), softmaxed in place afterwards
  // Backward only:
  const T* ds;    // [B, Tq, Tk] d loss / d scores
  T* dq;          // [B, Tq, A]
  T* dk;          // [B, Tk, A]
  T* dv_part;     // [B, Tq, A]: each query row's share of the v gradient (summed over rows afterwards)
};

// The score of query i and key j of batch entry b: v . tanh(q_i + k_j).
template <typename T>
PYSEQ_HD void additive_score(const AdditiveArgs<T>& a, int64_t b, int64_t i, int64_t j) {
  T total = T(0);
  if (a.mask.attends(b, i, j)) {
    const T* q = a.q + (b * a.Tq + i) * a.A;
    const T* k = a.k + (b * a.Tk + j) * a.A;
    for (int64_t c = 0; c < a.A; ++c) total += a.v[c] * additive_term(q[c], k[c]);
  }
  a.scores[(b * a.Tq + i) * a.Tk + j] = total;
}

// Feature c of query i's gradient, and its share of v's: sums over the keys with a nonzero score gradient.
template <typename T>
PYSEQ_HD void additive_query_gradient(const AdditiveArgs<T>& a, int64_t b, int64_t i, int64_t c) {
  const int64_t row = b * a.Tq + i;
  const T q = a.q[row * a.A + c], v = a.v[c];
  const T* ds = a.ds + row * a.Tk;
  T dq = T(0), dv = T(0);
  for (int64_t j = 0; j < a.Tk; ++j) {
    const T d = ds[j];
    if (d == T(0)) continue;  // masked keys, and rows with no gradient
    const T h = additive_term(q, a.k[(b * a.Tk + j) * a.A + c]);
    dq += d * additive_slope(v, h);
    dv += d * h;
  }
  a.dq[row * a.A + c] = dq;
  a.dv_part[row * a.A + c] = dv;
}

// Feature c of key j's gradient: a sum over the queries.
template <typename T>
PYSEQ_HD void additive_key_gradient(const AdditiveArgs<T>& a, int64_t b, int64_t j, int64_t c) {
  const T k = a.k[(b * a.Tk + j) * a.A + c], v = a.v[c];
  T dk = T(0);
  for (int64_t i = 0; i < a.Tq; ++i) {
    const T d = a.ds[(b * a.Tq + i) * a.Tk + j];
    if (d == T(0)) continue;
    dk += d * additive_slope(v, additive_term(a.q[(b * a.Tq + i) * a.A + c], k));
  }
  a.dk[(b * a.Tk + j) * a.A + c] = dk;
}

// The masked softmax of a row of scores, in three passes over its elements (a CUDA warp's lanes take the elements,
// the maximum and the sum are warp reductions): softmax_input, then (unless the row is NaN or fully masked)
// softmax_exp, then softmax_normalize; a NaN row is NaN everywhere (as torch's softmax), a fully masked one 0.

// Element j scaled, or -inf where masked; returns it.
template <typename T>
PYSEQ_HD T softmax_input(T* row, int64_t j, bool attends, T scale) {
  const T x = attends ? row[j] * scale : neg_inf<T>();
  row[j] = x;
  return x;
}

// exp(x_j - top); returns it.
template <typename T>
PYSEQ_HD T softmax_exp(T* row, int64_t j, T top) {
  const T e = exp_or_zero(row[j] - top);
  row[j] = e;
  return e;
}

// The value of every element of a row that is NaN or fully masked.
template <typename T>
PYSEQ_HD T softmax_degenerate(bool nan) {
  return nan ? std::numeric_limits<T>::quiet_NaN() : T(0);
}

// The softmax backward of element j: scale * w_j * (g_j - sum_k w_k g_k), in place; inner = sum_k w_k g_k.
template <typename T>
PYSEQ_HD void softmax_backward_element(const T* w, T* grad, int64_t j, T inner, T scale) {
  grad[j] = scale * w[j] * (grad[j] - inner);
}

}  // namespace pyseq
