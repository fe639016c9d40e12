// NTM memory as the work of one memory row (or one column, or one shift) of one head: __host__ __device__ functions
// that the CPU kernels call in loops (ntm_cpu.cpp: one batch entry per thread) and a CUDA thread runs
// (ntm_cuda.cu: one block per batch entry, the rows across its threads, the heads in turn, the phases of a head
// separated by barriers and block reductions). Torch-free, so that nvcc compiles it without torch headers.
//
// A head's vectors over the N rows live in NtmHeadRows (per-thread buffers on the CPU, global scratch on CUDA); the
// reductions between the phases (maxima, sums) are the caller's, each in a fixed order (lanes on the CPU, a tree on
// CUDA).
// The heads of one batch entry add into its memory gradient in turn, so no two threads write one element.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "../common/math.h"

namespace pyseq {

// The epsilon of the cosine similarity: K(u, v) = u . v / (max(|u|, eps) max(|v|, eps)), as
// torch.nn.functional.cosine_similarity.
constexpr double kNtmCosineEps = 1e-8;

// The number of N-long vectors in NtmHeadRows.
constexpr int64_t kNtmHeadVectors = 11;

// One head's addressing over N rows, forward and backward: [N] each, consecutive in a buffer of kNtmHeadVectors N.
template <typename T>
struct NtmHeadRows {
  T *norm;      // max(|m_i|, eps)
  T *sim;       // K(key, m_i)
  T *wc;        // content weights (unnormalized, then normalized)
  T *wg;        // interpolated weights
  T *ws;        // shifted weights
  T *w;         // (ws / max ws)^gamma, then the weights
  T *dws;       // d loss / d ws
  T *dz;        // d loss / d wc, then d loss / d (beta sim)
  // d loss / d sim_i through sim_i = k . m_i / (|k| |m_i|) (the norms max(|.|, eps), so constant below eps):
  T *scale;     // the coefficient of m_i in d loss / d k, and of k in d loss / d m_i
  T *key_coef;  // minus the coefficient of k in d loss / d k
  T *row_coef;  // minus the coefficient of m_i in d loss / d m_i
  PYSEQ_HD NtmHeadRows(T* base, int64_t N)
      : norm(base), sim(base + N), wc(base + 2 * N), wg(base + 3 * N), ws(base + 4 * N), w(base + 5 * N),
        dws(base + 6 * N), dz(base + 7 * N), scale(base + 8 * N), key_coef(base + 9 * N), row_coef(base + 10 * N) {}
};

// Row j of a circular memory of N rows, for j in [-N, 2N) in one comparison (shifts no wider than the memory), else
// by a remainder.
PYSEQ_HD int64_t ntm_row(int64_t j, int64_t N) {
  if (j < 0) j += N;
  else if (j >= N) j -= N;
  return j >= 0 && j < N ? j : ((j % N) + N) % N;
}

// The addressing of H heads over a batch. Every pointer contiguous, on the kernels' device.
template <typename T>
struct NtmAddressArgs {
  int64_t B, N, M, H, S;
  const T* memory;                 // [B, N, M]
  const T* key;                    // [B, H, M]
  const T *beta, *gate, *gamma;    // [B, H]
  const T* shift;                  // [B, H, S], S odd: index s moves weight by s - (S - 1) / 2 rows, circularly
  const T* prev;                   // [B, H, N]
  T* weights;                      // [B, H, N] forward out; nullptr in the backward (which only recomputes)
  // Backward only:
  const T* grad;                   // [B, H, N] d loss / d weights
  T* d_memory;                     // [B, N, M]: head 0 writes it (adds, with add_memory_gradient), the others add
  T *d_key, *d_shift, *d_prev;     // [B, H, M], [B, H, S], [B, H, N]
  T *d_beta, *d_gate, *d_gamma;    // [B, H]
  bool add_memory_gradient;        // d_memory holds other gradients on entry (ntm_step's)
};

// exp and log of the float kernels: pyseq's polynomial versions, which vectorize (exp is 0 below -87; log takes a
// positive normal number).
PYSEQ_HD float ntm_exp(float x) { return exp_or_zero(x); }
PYSEQ_HD double ntm_exp(double x) { return std::exp(x); }
PYSEQ_HD float ntm_log_of_normal(float x) { return log_f32(x); }
PYSEQ_HD double ntm_log_of_normal(double x) { return std::log(x); }
template <typename T>
PYSEQ_HD bool ntm_is_positive_normal(T x) {  // false for NaN
  return x >= std::numeric_limits<T>::min();
}

// ---- addressing, forward ----------------------------------------------------------------------------------------

// max(|key|, eps) of head bh = b * H + h.
template <typename T>
PYSEQ_HD T ntm_key_norm(const NtmAddressArgs<T>& a, int64_t bh) {
  const T* k = a.key + bh * a.M;
  T kk = 0;
  for (int64_t c = 0; c < a.M; ++c) kk += k[c] * k[c];
  const T norm = std::sqrt(kk);
  return norm > T(kNtmCosineEps) ? norm : T(kNtmCosineEps);
}

// k . m_i and |m_i|^2 (each summed over the features in order).
template <typename T>
struct NtmRowDots {
  T dot, sq;
};

template <typename T>
PYSEQ_HD NtmRowDots<T> ntm_row_dots(const NtmAddressArgs<T>& a, int64_t b, int64_t h, int64_t i) {
  const T* row = a.memory + (b * a.N + i) * a.M;
  const T* k = a.key + (b * a.H + h) * a.M;
  NtmRowDots<T> d{T(0), T(0)};
  for (int64_t c = 0; c < a.M; ++c) {
    d.dot += k[c] * row[c];
    d.sq += row[c] * row[c];
  }
  return d;
}

// Row i's similarity with the sign of the key strength: the row with the largest content logit (beta times the
// similarity) has the largest of these.
template <typename T>
PYSEQ_HD T ntm_signed_similarity(const NtmAddressArgs<T>& a, const NtmHeadRows<T>& v, int64_t bh, int64_t i) {
  return a.beta[bh] >= T(0) ? v.sim[i] : -v.sim[i];
}

// Row i's norm and similarity to the key, from its dots; returns its signed similarity (for the maximum).
template <typename T>
PYSEQ_HD T ntm_similarity(const NtmAddressArgs<T>& a, const NtmHeadRows<T>& v, int64_t bh, int64_t i,
                          NtmRowDots<T> d, T key_norm) {
  const T norm = std::sqrt(d.sq);
  v.norm[i] = norm > T(kNtmCosineEps) ? norm : T(kNtmCosineEps);
  v.sim[i] = d.dot / (key_norm * v.norm[i]);
  return ntm_signed_similarity(a, v, bh, i);
}

// The unnormalized content weight of row i, exp(beta (sim_i - sim_top)), given the largest signed similarity;
// returns it (for the sum). Every exponent is <= 0 and the top row's exactly 0: beta sim_i - max_j beta sim_j would
// be rounded (or fused into one FMA) to exponents of thousands for a key strength of 1e11 in float32.
template <typename T>
PYSEQ_HD T ntm_content(const NtmAddressArgs<T>& a, const NtmHeadRows<T>& v, int64_t bh, int64_t i, T top) {
  const T beta = a.beta[bh];
  return v.wc[i] = ntm_exp(beta * (v.sim[i] - (beta >= T(0) ? top : -top)));
}

// Normalizes content weight i by the sum and interpolates it with the previous weight.
template <typename T>
PYSEQ_HD void ntm_interpolate(const NtmAddressArgs<T>& a, const NtmHeadRows<T>& v, int64_t bh, int64_t i, T total) {
  const T g = a.gate[bh];
  v.wc[i] /= total;
  v.wg[i] = g * v.wc[i] + (T(1) - g) * a.prev[bh * a.N + i];
}

// The circular shift of row i (every wg complete); returns it (for the maximum).
template <typename T>
PYSEQ_HD T ntm_shift(const NtmAddressArgs<T>& a, const NtmHeadRows<T>& v, int64_t bh, int64_t i) {
  const int64_t N = a.N, r = (a.S - 1) / 2;
  const T* sh = a.shift + bh * a.S;
  T acc = 0;
  for (int64_t s = 0; s < a.S; ++s) acc += sh[s] * v.wg[ntm_row(i - s + r, N)];
  return v.ws[i] = acc;
}

// (ws_i / max ws)^gamma: the sharpened weight before normalization, scaled so that it cannot underflow to an all-zero
// row (ws^gamma would, for small ws and a large gamma). In two parts, so that the CPU's loop over the first
// vectorizes: exp(gamma log x) where x is a positive normal number (every row but in corner cases), then std::pow
// for the rest (zero, subnormal, negative or NaN x). ntm_sharpen does both and returns the weight (for the sum).
template <typename T>
PYSEQ_HD void ntm_sharpen_normal(const NtmAddressArgs<T>& a, const NtmHeadRows<T>& v, int64_t bh, int64_t i,
                                 T ws_max) {
  const T x = v.ws[i] / ws_max;
  v.w[i] = ntm_exp(a.gamma[bh] * ntm_log_of_normal(ntm_is_positive_normal(x) ? x : T(1)));
}
template <typename T>
PYSEQ_HD void ntm_sharpen_rest(const NtmAddressArgs<T>& a, const NtmHeadRows<T>& v, int64_t bh, int64_t i,
                               T ws_max) {
  const T x = v.ws[i] / ws_max;
  if (!ntm_is_positive_normal(x)) v.w[i] = std::pow(x, a.gamma[bh]);
}
template <typename T>
PYSEQ_HD T ntm_sharpen(const NtmAddressArgs<T>& a, const NtmHeadRows<T>& v, int64_t bh, int64_t i, T ws_max) {
  ntm_sharpen_normal(a, v, bh, i, ws_max);
  ntm_sharpen_rest(a, v, bh, i, ws_max);
  return v.w[i];
}

// The weight of row i, given the sum of the sharpened ones; written to the output when there is one.
template <typename T>
PYSEQ_HD void ntm_normalize(const NtmAddressArgs<T>& a, const NtmHeadRows<T>& v, int64_t bh, int64_t i, T z) {
  v.w[i] /= z;
  if (a.weights) a.weights[bh * a.N + i] = v.w[i];
}

// ---- addressing, backward (after the forward's phases, recomputed) ------------------------------------------------

// Row i's term of sum_j grad_j w_j.
template <typename T>
PYSEQ_HD T ntm_weight_inner(const NtmAddressArgs<T>& a, const NtmHeadRows<T>& v, int64_t bh, int64_t i) {
  return a.grad[bh * a.N + i] * v.w[i];
}

// d loss / d ws_i into dws (w = softmax(gamma log ws)) where ws_i is a positive normal number; returns row i's term
// of d loss / d gamma. Without a branch, so that the CPU's loop over every row vectorizes (ntm_sharpen_backward then
// redoes the other rows).
template <typename T>
PYSEQ_HD T ntm_sharpen_backward_normal(const NtmAddressArgs<T>& a, const NtmHeadRows<T>& v, int64_t bh, int64_t i,
                                       T inner) {
  const T ws = ntm_is_positive_normal(v.ws[i]) ? v.ws[i] : T(1);
  const T du = v.w[i] * (a.grad[bh * a.N + i] - inner);  // d loss / d (gamma log ws_i)
  v.dws[i] = du * a.gamma[bh] / ws;
  return du * ntm_log_of_normal(ws);
}

// d loss / d ws_i into dws for any ws_i; returns row i's term of d loss / d gamma.
template <typename T>
PYSEQ_HD T ntm_sharpen_backward(const NtmAddressArgs<T>& a, const NtmHeadRows<T>& v, int64_t bh, int64_t i,
                                T inner, T ws_max, T z) {
  const T gamma = a.gamma[bh], ws = v.ws[i], d = a.grad[bh * a.N + i] - inner;
  if (ntm_is_positive_normal(ws)) return ntm_sharpen_backward_normal(a, v, bh, i, inner);
  v.dws[i] = d * gamma * std::pow(ws / ws_max, gamma - T(1)) / (ws_max * z);  // also at 0 (where 1 / ws is not)
  return ws > T(0) ? v.w[i] * d * std::log(ws) : T(0);
}

// d loss / d shift[t] (every dws complete).
template <typename T>
PYSEQ_HD void ntm_shift_backward(const NtmAddressArgs<T>& a, const NtmHeadRows<T>& v, int64_t bh, int64_t t) {
  const int64_t N = a.N, r = (a.S - 1) / 2;
  T acc = 0;
  for (int64_t j = 0; j < N; ++j) acc += v.wg[j] * v.dws[ntm_row(j + t - r, N)];
  a.d_shift[bh * a.S + t] = acc;
}

template <typename T>
struct NtmGateTerms {
  T gate;  // row j's term of d loss / d gate
  T wc;    // row j's term of sum_j wc_j d loss / d wc_j
};

// d loss / d wg_j (through the shift) into dz (every dws complete).
template <typename T>
PYSEQ_HD void ntm_unshift(const NtmAddressArgs<T>& a, const NtmHeadRows<T>& v, int64_t bh, int64_t j) {
  const int64_t N = a.N, r = (a.S - 1) / 2;
  const T* sh = a.shift + bh * a.S;
  T dwg = 0;
  for (int64_t t = 0; t < a.S; ++t) dwg += sh[t] * v.dws[ntm_row(j + t - r, N)];
  v.dz[j] = dwg;
}

// d loss / d wc_j into dz (which holds d loss / d wg_j) and d loss / d prev_j.
template <typename T>
PYSEQ_HD NtmGateTerms<T> ntm_interpolate_backward(const NtmAddressArgs<T>& a, const NtmHeadRows<T>& v, int64_t bh,
                                                  int64_t j) {
  const T g = a.gate[bh], prev = a.prev[bh * a.N + j], dwg = v.dz[j];
  v.dz[j] = g * dwg;
  a.d_prev[bh * a.N + j] = (T(1) - g) * dwg;
  return {(v.wc[j] - prev) * dwg, v.wc[j] * v.dz[j]};
}

// d loss / d (beta sim_i) into dz (w_c = softmax(beta sim)), given sum_j wc_j d loss / d wc_j, and row i's
// similarity coefficients; returns row i's term of d loss / d beta.
template <typename T>
PYSEQ_HD T ntm_content_backward(const NtmAddressArgs<T>& a, const NtmHeadRows<T>& v, int64_t bh, int64_t i, T wc_dot,
                                T key_norm) {
  const T dz = v.dz[i] = v.wc[i] * (v.dz[i] - wc_dot);
  const T dsim = a.beta[bh] * dz, sim = v.sim[i], norm = v.norm[i];
  v.scale[i] = dsim / (key_norm * norm);
  // Both quotients computed, then chosen (the norms are at least eps): a select, so that the CPU's loop vectorizes.
  const T key_coef = dsim * sim / (key_norm * key_norm), row_coef = dsim * sim / (norm * norm);
  v.key_coef[i] = key_norm > T(kNtmCosineEps) ? key_coef : T(0);
  v.row_coef[i] = norm > T(kNtmCosineEps) ? row_coef : T(0);
  return dz * sim;
}

// Row i's term of feature c of d loss / d key (every row's coefficients complete).
template <typename T>
PYSEQ_HD T ntm_key_gradient_term(const NtmAddressArgs<T>& a, const NtmHeadRows<T>& v, int64_t b, int64_t bh,
                                 int64_t i, int64_t c) {
  return v.scale[i] * a.memory[(b * a.N + i) * a.M + c] - v.key_coef[i] * a.key[bh * a.M + c];
}

// Feature c of d loss / d key: the sum of the rows' terms, in row order.
template <typename T>
PYSEQ_HD void ntm_key_gradient(const NtmAddressArgs<T>& a, const NtmHeadRows<T>& v, int64_t b, int64_t h, int64_t c) {
  const int64_t bh = b * a.H + h;
  T acc = 0;
  for (int64_t i = 0; i < a.N; ++i) acc += ntm_key_gradient_term(a, v, b, bh, i, c);
  a.d_key[bh * a.M + c] = acc;
}

// Head h's part of d loss / d memory row i: written by head 0 (unless a.add_memory_gradient), added by the others.
template <typename T>
PYSEQ_HD void ntm_memory_gradient(const NtmAddressArgs<T>& a, const NtmHeadRows<T>& v, int64_t b, int64_t h,
                                  int64_t i) {
  const T scale = v.scale[i], row_coef = v.row_coef[i];
  const T* row = a.memory + (b * a.N + i) * a.M;
  const T* k = a.key + (b * a.H + h) * a.M;
  T* drow = a.d_memory + (b * a.N + i) * a.M;
  if (h == 0 && !a.add_memory_gradient) {
    for (int64_t c = 0; c < a.M; ++c) drow[c] = scale * k[c] - row_coef * row[c];
  } else {
    for (int64_t c = 0; c < a.M; ++c) drow[c] += scale * k[c] - row_coef * row[c];
  }
}

// ---- write ----------------------------------------------------------------------------------------------------------

// One write head over a batch: erase then add. Every pointer on the kernels' device, contiguous but for the weights'
// batch stride.
template <typename T>
struct NtmWriteArgs {
  int64_t B, N, M;
  const T* memory;             // [B, N, M]
  const T* weights;            // [B, N], batch entry b's at weights + b * weights_stride (rows contiguous)
  int64_t weights_stride;
  const T *erase, *add;        // [B, M]
  T* out;                      // [B, N, M] forward
  // Backward only:
  const T* grad;               // [B, N, M] d loss / d out
  T *d_memory, *d_weights;     // [B, N, M], [B, N]
  T *d_erase, *d_add;          // [B, M]
};

// Row i of batch entry b of the new memory: m_i (1 - w_i e) + w_i a.
template <typename T>
PYSEQ_HD void ntm_write_row(const NtmWriteArgs<T>& a, int64_t b, int64_t i) {
  const int64_t r = b * a.N + i;
  const T w = a.weights[b * a.weights_stride + i];
  const T *e = a.erase + b * a.M, *add = a.add + b * a.M, *row = a.memory + r * a.M;
  T* out = a.out + r * a.M;
  for (int64_t c = 0; c < a.M; ++c) out[c] = row[c] * (T(1) - w * e[c]) + w * add[c];
}

// The write's gradients at one element: memory m, its row's weight w, the erase and add values e and ad of its
// feature, the incoming gradient g. The memory's gradient, and the element's terms of the row weight's gradient
// (summed over the features) and of the erase's and add's (summed over the rows).
template <typename T>
struct NtmWriteElementGrads {
  T memory, weight, erase, add;
};

template <typename T>
PYSEQ_HD NtmWriteElementGrads<T> ntm_write_element_grads(T g, T w, T e, T ad, T m) {
  const T gw = g * w;
  return {g * (T(1) - w * e), g * (ad - e * m), -(gw * m), gw};
}

template <typename T>
PYSEQ_HD NtmWriteElementGrads<T> ntm_write_element_grads(const NtmWriteArgs<T>& a, int64_t b, int64_t i, int64_t c) {
  const int64_t x = (b * a.N + i) * a.M + c;
  return ntm_write_element_grads(a.grad[x], a.weights[b * a.weights_stride + i], a.erase[b * a.M + c],
                                 a.add[b * a.M + c], a.memory[x]);
}

// Row i of batch entry b: its memory gradient and its weight's gradient (a sum over the features in order).
template <typename T>
PYSEQ_HD void ntm_write_backward_row(const NtmWriteArgs<T>& a, int64_t b, int64_t i) {
  T dw = 0;
  for (int64_t c = 0; c < a.M; ++c) {
    const NtmWriteElementGrads<T> d = ntm_write_element_grads(a, b, i, c);
    a.d_memory[(b * a.N + i) * a.M + c] = d.memory;
    dw += d.weight;
  }
  a.d_weights[b * a.N + i] = dw;
}

// Feature c of batch entry b's erase and add gradients: sums over the rows, in row order.
template <typename T>
PYSEQ_HD void ntm_write_backward_column(const NtmWriteArgs<T>& a, int64_t b, int64_t c) {
  T de = 0, da = 0;
  for (int64_t i = 0; i < a.N; ++i) {
    const NtmWriteElementGrads<T> d = ntm_write_element_grads(a, b, i, c);
    de += d.erase;
    da += d.add;
  }
  a.d_erase[b * a.M + c] = de;
  a.d_add[b * a.M + c] = da;
}

}  // namespace pyseq
