// The cell update over a run of hidden units of one batch row, for both CPU schedules (the ATen-GEMM schedule in
// rnn_cpu.cpp and the packed-weight schedule in packed_cpu.cpp).
//
// `count` units starting at unit u0; every pointer is already offset to u0. Inputs laid out by gate keep their gate
// stride explicit: `H` for the input projection rows, the saved workspace and gate gradients (torch's [G*H] rows),
// `ghs` for the recurrent product, which the packed schedule keeps in register-tile order. Pointers are restrict
// function parameters because that is what lets GCC vectorize the loop over units; the *_impl callers are compiled
// once per ISA (PYSEQ_CPU_CLONES or a target attribute), so these loops are too. The CUDA kernels run them over one
// unit (rnn_steps.h).
#pragma once

#include <cstdint>

#include "cells.h"

namespace pyseq {

// The forward functions always write the activated gates the backward needs, into the workspace when training and
// into a scratch row otherwise: one loop for both, so that a forward under torch.no_grad() gives the same bits as
// one that saves for the backward (two loops may be contracted into FMAs differently).

// gi: i, f, g, o rows (stride H); gh: the same from h_prev @ W_hh^T (stride ghs); c: in/out; h: out;
// s: activated gates out (stride ss).
template <typename T>
PYSEQ_HD void lstm_units_forward(int64_t count, int64_t H, const T* __restrict__ gi,
                                            const T* __restrict__ gh, int64_t ghs, T* __restrict__ c,
                                            T* __restrict__ h, T* __restrict__ s, int64_t ss) {
  for (int64_t j = 0; j < count; ++j) {
    lstm_cell_forward(gi[j] + gh[j], gi[H + j] + gh[ghs + j], gi[2 * H + j] + gh[2 * ghs + j],
                      gi[3 * H + j] + gh[3 * ghs + j], c[j], s[j], s[ss + j], s[2 * ss + j], s[3 * ss + j], c[j],
                      h[j]);
  }
}

// gi: r, z, n rows with b_ih (stride H); gh: h_prev @ W_hh^T without bias (stride ghs); bh: b_hh (stride H);
// h_prev: in; h: out; s: r, z, n, hn out (stride ss).
template <typename T>
PYSEQ_HD void gru_units_forward(int64_t count, int64_t H, const T* __restrict__ gi,
                                           const T* __restrict__ gh, int64_t ghs, const T* __restrict__ bh,
                                           const T* __restrict__ h_prev, T* __restrict__ h, T* __restrict__ s,
                                           int64_t ss) {
  for (int64_t j = 0; j < count; ++j) {
    T hn = gh[2 * ghs + j] + bh[2 * H + j];
    s[3 * ss + j] = hn;
    gru_cell_forward(gi[j] + gh[j] + bh[j], gi[H + j] + gh[ghs + j] + bh[H + j], gi[2 * H + j], hn, h_prev[j], s[j],
                     s[ss + j], s[2 * ss + j], h[j]);
  }
}

// gi: pre-activations with both biases; gh: h_prev @ W_hh^T; h: out.
template <typename T>
PYSEQ_HD void rnn_units_forward(int64_t count, bool relu, const T* __restrict__ gi,
                                           const T* __restrict__ gh, T* __restrict__ h) {
  if (relu) {
    for (int64_t j = 0; j < count; ++j) h[j] = rnn_relu_forward(gi[j] + gh[j]);
  } else {
    for (int64_t j = 0; j < count; ++j) h[j] = rnn_tanh_forward(gi[j] + gh[j]);
  }
}

// s: saved i, f, g, o (stride H) with c_prev at s + 4H; dh: dL/dh; dy: output gradient to add to dh, or nullptr;
// dc: in: dL/dc from the next step, out: dL/dc_prev; dg: pre-activation gradients out (stride H);
// hr: recomputed o * tanh(c) out (for a projection's weight gradient), or nullptr.
template <typename T>
PYSEQ_HD void lstm_units_backward(int64_t count, int64_t H, const T* __restrict__ s,
                                             const T* __restrict__ dh, const T* __restrict__ dy, T* __restrict__ dc,
                                             T* __restrict__ dg, T* __restrict__ hr) {
  if (dy) {
    for (int64_t j = 0; j < count; ++j) {
      T h;
      lstm_cell_backward(s[j], s[H + j], s[2 * H + j], s[3 * H + j], s[4 * H + j], dh[j] + dy[j], dc[j], dg[j],
                         dg[H + j], dg[2 * H + j], dg[3 * H + j], dc[j], h);
    }
  } else {
    for (int64_t j = 0; j < count; ++j) {
      lstm_cell_backward(s[j], s[H + j], s[2 * H + j], s[3 * H + j], s[4 * H + j], dh[j], dc[j], dg[j], dg[H + j],
                         dg[2 * H + j], dg[3 * H + j], dc[j], hr[j]);
    }
  }
}

// s: saved r, z, n, hn (stride H) with h_prev at s + 4H; dh, dy: dL/dh and the output gradient;
// dg: dar, daz, dhn, dain out (stride H: the hidden side first, 3H contiguous); dh_skip: dh * z out.
template <typename T>
PYSEQ_HD void gru_units_backward(int64_t count, int64_t H, const T* __restrict__ s,
                                            const T* __restrict__ dh, const T* __restrict__ dy, T* __restrict__ dg,
                                            T* __restrict__ dh_skip) {
  for (int64_t j = 0; j < count; ++j) {
    gru_cell_backward(s[j], s[H + j], s[2 * H + j], s[3 * H + j], s[4 * H + j], dh[j] + dy[j], dg[j], dg[H + j],
                      dg[3 * H + j], dg[2 * H + j], dh_skip[j]);
  }
}

// h: saved output; dh, dy: dL/dh and the output gradient; dg: pre-activation gradient out.
template <typename T>
PYSEQ_HD void rnn_units_backward(int64_t count, bool relu, const T* __restrict__ h,
                                            const T* __restrict__ dh, const T* __restrict__ dy, T* __restrict__ dg) {
  if (relu) {
    for (int64_t j = 0; j < count; ++j) dg[j] = rnn_relu_backward(h[j], dh[j] + dy[j]);
  } else {
    for (int64_t j = 0; j < count; ++j) dg[j] = rnn_tanh_backward(h[j], dh[j] + dy[j]);
  }
}

}  // namespace pyseq
