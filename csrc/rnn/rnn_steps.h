// One time step of the cell update, for every backend: the arguments of a step (the active rows' pointers), and the
// work of one hidden unit of one row as a __host__ __device__ function (a CUDA thread's work; the CPU tests run the
// same functions through the schedule of csrc/rnn/rnn_schedule.h). Torch-free, so that nvcc compiles it without torch.
//
// The math is cell_rows.h's, which the CPU kernels run over runs of units: here over one unit whose inputs are first
// loaded into registers in the accumulation type (float for float32, bfloat16 and float16; double for float64).
#pragma once

#include <cstdint>

#include "cell_rows.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace pyseq {

// 16-bit storage types at the interface between the torch glue and the CUDA kernels (the glue holds
// at::BFloat16 / at::Half, the kernels __nv_bfloat16 / __half: the same bits).
struct bfloat16_t {
  uint16_t bits;
};
struct float16_t {
  uint16_t bits;
};

template <typename S>
struct Accumulate {
  using type = S;
};
template <>
struct Accumulate<bfloat16_t> {
  using type = float;
};
template <>
struct Accumulate<float16_t> {
  using type = float;
};
template <typename S>
using accumulate_t = typename Accumulate<S>::type;

PYSEQ_HD float load(float v) { return v; }
PYSEQ_HD double load(double v) { return v; }
PYSEQ_HD void store(float* p, float v) { *p = v; }
PYSEQ_HD void store(double* p, double v) { *p = v; }
#if defined(__CUDACC__)
PYSEQ_HD float load(bfloat16_t v) {
  __nv_bfloat16_raw raw;
  raw.x = v.bits;
  return __bfloat162float(__nv_bfloat16(raw));
}
PYSEQ_HD float load(float16_t v) {
  __half_raw raw;
  raw.x = v.bits;
  return __half2float(__half(raw));
}
PYSEQ_HD void store(bfloat16_t* p, float v) { p->bits = static_cast<__nv_bfloat16_raw>(__float2bfloat16(v)).x; }
PYSEQ_HD void store(float16_t* p, float v) { p->bits = static_cast<__half_raw>(__float2half(v)).x; }
#endif

// ---- step arguments: the rows of one step, n of them, row b at offset b * (row length) -------------------------

template <typename S>
struct LstmForwardRows {
  int64_t H, Hr;
  const S* gi;  // [n, 4H] input projection rows, b_ih + b_hh folded in
  const S* gh;  // [n, 4H] h_prev @ W_hh^T
  S* c;         // [n, H] cell state, updated in place
  S* h;         // [n, Hr] hidden state; written here unless h_raw is set (then the projection writes it)
  S* y;         // [n, Hr] output rows; unused when h_raw is set
  S* h_raw;     // [n, H] o * tanh(c) before the projection, or nullptr
  S* saved;     // [n, saved_ld] workspace rows, or nullptr in inference
  int64_t saved_ld;
};

template <typename S>
struct GruForwardRows {
  int64_t H;
  const S* gi;    // [n, 3H] input projection rows, b_ih folded in
  const S* gh;    // [n, 3H] h_prev @ W_hh^T
  const S* b_hh;  // [3H]
  S* h;           // [n, H] hidden state, updated
  S* y;           // [n, H] output rows
  S* saved;       // [n, saved_ld] or nullptr
  int64_t saved_ld;
};

template <typename S>
struct RnnForwardRows {
  int64_t H;
  bool relu;
  const S* gi;  // [n, H] input projection rows, both biases folded in
  const S* gh;  // [n, H]
  S* h;         // [n, H] hidden state, updated
  S* y;         // [n, H]
  S* saved;     // [n, saved_ld] or nullptr
  int64_t saved_ld;
};

template <typename S>
struct LstmBackwardRows {
  int64_t H;
  const S* saved;  // [n, saved_ld] workspace rows of this step
  int64_t saved_ld;
  const S* dh;     // [n, H] gradient w.r.t. h (the state's or, with a projection, already through W_hr)
  const S* dy;     // [n, H] output gradient rows to add to dh, or nullptr with a projection (then h_raw is set)
  S* dc;           // [n, H] gradient w.r.t. c, in: from step t+1, out: w.r.t. c_prev
  S* dgates;       // [n, 4H] pre-activation gradients
  S* h_raw;        // [n, H] recomputed o * tanh(c) for the projection's weight gradient, or nullptr
};

template <typename S>
struct GruBackwardRows {
  int64_t H;
  const S* saved;  // [n, saved_ld]
  int64_t saved_ld;
  const S* dh;     // [n, H] gradient w.r.t. h
  const S* dy;     // [n, H]
  S* dgates;       // [n, 4H]: dar, daz, dhn (the hidden side, 3H contiguous) | dain
  S* dh_skip;      // [n, H] out: dh * z, the part of dh_prev that skips W_hh
};

template <typename S>
struct RnnBackwardRows {
  int64_t H;
  bool relu;
  const S* saved;  // [n, saved_ld]
  int64_t saved_ld;
  const S* dh;     // [n, H]
  const S* dy;     // [n, H]
  S* dgates;       // [n, H]
};

// ---- one unit j of row b ----------------------------------------------------------------------------------------
// Saved values are copied in their storage type, not through the accumulation type, exactly as the CPU kernels copy
// them. Every thread reads its own unit of the state before writing it, so the state is updated in place.

template <typename S>
PYSEQ_HD void lstm_forward_unit(const LstmForwardRows<S>& a, int64_t b, int64_t j) {
  using A = accumulate_t<S>;
  const int64_t H = a.H, Hr = a.Hr;
  const S* gi = a.gi + b * 4 * H + j;
  const S* gh = a.gh + b * 4 * H + j;
  S* saved = a.saved ? a.saved + b * a.saved_ld : nullptr;
  if (saved) {
    saved[4 * H + j] = a.c[b * H + j];
    if (j < Hr) saved[5 * H + j] = a.h[b * Hr + j];
  }
  A x[4], r[4], gates[4], c = load(a.c[b * H + j]), h;
  for (int k = 0; k < 4; ++k) {
    x[k] = load(gi[k * H]);
    r[k] = load(gh[k * H]);
  }
  lstm_units_forward<A>(1, 1, x, r, 1, &c, &h, gates, 1);
  store(&a.c[b * H + j], c);
  if (saved) {
    for (int k = 0; k < 4; ++k) store(&saved[k * H + j], gates[k]);
  }
  if (a.h_raw) {
    store(&a.h_raw[b * H + j], h);
  } else {
    store(&a.h[b * Hr + j], h);
    store(&a.y[b * Hr + j], h);
  }
}

template <typename S>
PYSEQ_HD void gru_forward_unit(const GruForwardRows<S>& a, int64_t b, int64_t j) {
  using A = accumulate_t<S>;
  const int64_t H = a.H;
  const S* gi = a.gi + b * 3 * H + j;
  const S* gh = a.gh + b * 3 * H + j;
  S* saved = a.saved ? a.saved + b * a.saved_ld : nullptr;
  if (saved) saved[4 * H + j] = a.h[b * H + j];
  A x[3], r[3], bias[3], gates[4], h_prev = load(a.h[b * H + j]), h;
  for (int k = 0; k < 3; ++k) {
    x[k] = load(gi[k * H]);
    r[k] = load(gh[k * H]);
    bias[k] = load(a.b_hh[k * H + j]);
  }
  gru_units_forward<A>(1, 1, x, r, 1, bias, &h_prev, &h, gates, 1);
  if (saved) {
    for (int k = 0; k < 4; ++k) store(&saved[k * H + j], gates[k]);
  }
  store(&a.h[b * H + j], h);
  store(&a.y[b * H + j], h);
}

template <typename S>
PYSEQ_HD void rnn_forward_unit(const RnnForwardRows<S>& a, int64_t b, int64_t j) {
  using A = accumulate_t<S>;
  const int64_t H = a.H;
  S* saved = a.saved ? a.saved + b * a.saved_ld : nullptr;
  if (saved) saved[H + j] = a.h[b * H + j];
  A x = load(a.gi[b * H + j]), r = load(a.gh[b * H + j]), h;
  rnn_units_forward<A>(1, a.relu, &x, &r, &h);
  store(&a.h[b * H + j], h);
  store(&a.y[b * H + j], h);
  if (saved) store(&saved[j], h);
}

template <typename S>
PYSEQ_HD void lstm_backward_unit(const LstmBackwardRows<S>& a, int64_t b, int64_t j) {
  using A = accumulate_t<S>;
  const int64_t H = a.H;
  const S* saved = a.saved + b * a.saved_ld + j;
  A s[5], dg[4], h = A(0);
  for (int k = 0; k < 5; ++k) s[k] = load(saved[k * H]);
  A dh = load(a.dh[b * H + j]), dc = load(a.dc[b * H + j]), dy = a.dy ? load(a.dy[b * H + j]) : A(0);
  lstm_units_backward<A>(1, 1, s, &dh, a.dy ? &dy : nullptr, &dc, dg, &h);
  store(&a.dc[b * H + j], dc);
  for (int k = 0; k < 4; ++k) store(&a.dgates[b * 4 * H + k * H + j], dg[k]);
  if (a.h_raw) store(&a.h_raw[b * H + j], h);
}

template <typename S>
PYSEQ_HD void gru_backward_unit(const GruBackwardRows<S>& a, int64_t b, int64_t j) {
  using A = accumulate_t<S>;
  const int64_t H = a.H;
  const S* saved = a.saved + b * a.saved_ld + j;
  A s[5], dg[4], skip;
  for (int k = 0; k < 5; ++k) s[k] = load(saved[k * H]);
  A dh = load(a.dh[b * H + j]), dy = load(a.dy[b * H + j]);
  gru_units_backward<A>(1, 1, s, &dh, &dy, dg, &skip);
  for (int k = 0; k < 4; ++k) store(&a.dgates[b * 4 * H + k * H + j], dg[k]);
  store(&a.dh_skip[b * H + j], skip);
}

template <typename S>
PYSEQ_HD void rnn_backward_unit(const RnnBackwardRows<S>& a, int64_t b, int64_t j) {
  using A = accumulate_t<S>;
  const int64_t H = a.H;
  A h = load(a.saved[b * a.saved_ld + j]), dh = load(a.dh[b * H + j]), dy = load(a.dy[b * H + j]), dg;
  rnn_units_backward<A>(1, a.relu, &h, &dh, &dy, &dg);
  store(&a.dgates[b * H + j], dg);
}

}  // namespace pyseq
