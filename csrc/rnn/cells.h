// Per-element math of the recurrent cells, forward and backward, shared by the CPU and CUDA kernels.
//
// Gate orders are torch's: LSTM i, f, g, o; GRU r, z, n. Forward functions take pre-activations and return the
// activated gates the backward needs; backward functions take those saved values and the incoming gradients and
// return pre-activation gradients.
#pragma once

#include "../common/math.h"

namespace pyseq {

// LSTM: c = f * c_prev + i * g, h = o * tanh(c).
template <typename T>
PYSEQ_HD void lstm_cell_forward(T ai, T af, T ag, T ao, T c_prev, T& i, T& f, T& g, T& o, T& c, T& h) {
  i = sigmoid(ai);
  f = sigmoid(af);
  g = tanh(ag);
  o = sigmoid(ao);
  c = f * c_prev + i * g;
  h = o * tanh(c);
}

// dh: gradient w.r.t. h (before any projection); dc: gradient w.r.t. c arriving from the next step.
// h is returned too (recomputed from the saved gates) because the projection's weight gradient needs it.
template <typename T>
PYSEQ_HD void lstm_cell_backward(T i, T f, T g, T o, T c_prev, T dh, T dc, T& dai, T& daf, T& dag, T& dao, T& dc_prev,
                                 T& h) {
  T c = f * c_prev + i * g;
  T tc = tanh(c);
  h = o * tc;
  T dct = dc + dh * o * (T(1) - tc * tc);
  dao = dh * tc * o * (T(1) - o);
  dai = dct * g * i * (T(1) - i);
  daf = dct * c_prev * f * (T(1) - f);
  dag = dct * i * (T(1) - g * g);
  dc_prev = dct * f;
}

// GRU: r = sigma(a_r), z = sigma(a_z), n = tanh(a_in + r * hn) with hn = W_hn h + b_hn, h' = (1 - z) n + z h.
// a_r and a_z already hold both the input and the hidden contributions.
template <typename T>
PYSEQ_HD void gru_cell_forward(T ar, T az, T ain, T hn, T h_prev, T& r, T& z, T& n, T& h) {
  r = sigmoid(ar);
  z = sigmoid(az);
  n = tanh(ain + r * hn);
  h = (T(1) - z) * n + z * h_prev;
}

// Returns the pre-activation gradients dar, daz, dain (input side), dhn (hidden side of the n gate) and the part of
// dh_prev that does not go through W_hh (dh * z).
template <typename T>
PYSEQ_HD void gru_cell_backward(T r, T z, T n, T hn, T h_prev, T dh, T& dar, T& daz, T& dain, T& dhn, T& dh_prev) {
  T dain_ = dh * (T(1) - z) * (T(1) - n * n);
  dar = dain_ * hn * r * (T(1) - r);
  daz = dh * (h_prev - n) * z * (T(1) - z);
  dain = dain_;
  dhn = dain_ * r;
  dh_prev = dh * z;
}

// Elman RNN: h = act(a). The derivative is taken from the output, which is what backward has saved.
template <typename T>
PYSEQ_HD T rnn_tanh_forward(T a) { return tanh(a); }
template <typename T>
PYSEQ_HD T rnn_relu_forward(T a) { return relu(a); }
template <typename T>
PYSEQ_HD T rnn_tanh_backward(T h, T dh) { return dh * (T(1) - h * h); }
template <typename T>
PYSEQ_HD T rnn_relu_backward(T h, T dh) { return h <= T(0) ? T(0) : dh; }  // NaN passes the gradient, as torch

}  // namespace pyseq
