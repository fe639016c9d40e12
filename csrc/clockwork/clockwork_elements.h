// The Clockwork RNN (Koutnik et al. 2014) as the work of one hidden unit: __host__ __device__ functions shared by the
// CPU kernels (clockwork_cpu.cpp: register-blocked over batch rows and units) and the CUDA kernels
// (clockwork_cuda.cu: a block per batch row, a thread per unit). Torch-free, so that nvcc compiles it without torch
// headers.
//
// The hidden state [H] is `modules` modules of `width` units each; module i has period periods[i] (non-decreasing in
// i: the fastest modules first). At step t (counted from 0) module i is active when t % periods[i] == 0: its units
// take act(input_proj[t] + W_hh[units of i, :] h_{t-1}) over the columns of the modules at least as slow (periods[j]
// >= periods[i], columns [first[i] * width, H)); inactive modules keep their value. A sequence past its length
// keeps its state and outputs zeros.
#pragma once

#include <cstdint>

#include "../common/math.h"
#include "../rnn/cells.h"

namespace pyseq {

// The units' nonlinearity: tanh and relu (the Clockwork RNN), sigmoid (the SCRN's hidden layer, csrc/scrn).
enum class RecurrentActivation : int64_t { Tanh = 0, Relu = 1, Sigmoid = 2 };

// The most modules a layer has: the argument struct carries the periods by value to the CUDA kernels.
constexpr int64_t kClockworkMaxModules = 64;

template <typename T>
struct ClockworkArgs {
  int64_t steps, B, H, width, modules;
  RecurrentActivation activation;
  int64_t periods[kClockworkMaxModules];  // non-decreasing
  int64_t first[kClockworkMaxModules];    // first[i]: the first module with periods[i] (the first column module read)
  const int64_t* lengths;                 // [B], each in [0, steps]
  const T* w_hh;                          // [H, H]
  const T* h0;                            // [B, H]
  // forward
  const T* input_proj;  // [steps, B, H]: x_t W_ih^T + b_ih + b_hh
  T* output;            // [steps, B, H]
  T* h_n;               // [B, H]
  // backward (output above is the forward's, read only)
  const T* grad_output;  // [steps, B, H]
  const T* grad_h_n;     // [B, H]
  T* grad_input_proj;    // [steps, B, H]: d loss / d pre-activation of the active units, 0 elsewhere
  T* grad_h0;            // [B, H]
};

template <typename T>
PYSEQ_HD bool module_active(const ClockworkArgs<T>& a, int64_t module, int64_t t) {
  return t % a.periods[module] == 0;
}

// The activations and their gradients (d loss / d pre-activation from the output h and d loss / d h), one definition
// each; the callers choose one per element (the CUDA kernels, below) or once per loop (the CPU kernels).
template <RecurrentActivation kActivation, typename T>
PYSEQ_HD T activate(T pre) {
  if constexpr (kActivation == RecurrentActivation::Relu) {
    return rnn_relu_forward(pre);
  } else if constexpr (kActivation == RecurrentActivation::Sigmoid) {
    return sigmoid(pre);
  } else {
    return rnn_tanh_forward(pre);
  }
}

template <RecurrentActivation kActivation, typename T>
PYSEQ_HD T activation_gradient(T h, T dh) {
  if constexpr (kActivation == RecurrentActivation::Relu) {
    return rnn_relu_backward(h, dh);
  } else if constexpr (kActivation == RecurrentActivation::Sigmoid) {
    return dh * h * (T(1) - h);
  } else {
    return rnn_tanh_backward(h, dh);
  }
}

template <typename T>
PYSEQ_HD T clockwork_activation(const ClockworkArgs<T>& a, T pre) {
  switch (a.activation) {
    case RecurrentActivation::Relu:
      return activate<RecurrentActivation::Relu>(pre);
    case RecurrentActivation::Sigmoid:
      return activate<RecurrentActivation::Sigmoid>(pre);
    default:
      return activate<RecurrentActivation::Tanh>(pre);
  }
}

template <typename T>
PYSEQ_HD T clockwork_activation_backward(const ClockworkArgs<T>& a, T h, T dh) {
  switch (a.activation) {
    case RecurrentActivation::Relu:
      return activation_gradient<RecurrentActivation::Relu>(h, dh);
    case RecurrentActivation::Sigmoid:
      return activation_gradient<RecurrentActivation::Sigmoid>(h, dh);
    default:
      return activation_gradient<RecurrentActivation::Tanh>(h, dh);
  }
}

// Unit u's state after step t of row b, from the row's state before it, h_prev [H].
template <typename T>
PYSEQ_HD T clockwork_unit_step(const ClockworkArgs<T>& a, int64_t t, int64_t b, int64_t u, const T* h_prev) {
  const int64_t module = u / a.width;
  if (!module_active(a, module, t)) return h_prev[u];
  const T* w = a.w_hh + u * a.H;
  T pre = a.input_proj[(t * a.B + b) * a.H + u];
  for (int64_t c = a.first[module] * a.width; c < a.H; ++c) pre += w[c] * h_prev[c];
  return clockwork_activation(a, pre);
}

// d loss / d h_{t-1}[c] of row b at a step t it runs: g [H] is d loss / d h_t, d_pre [H] the pre-activation
// gradients of step t (0 for the inactive units). Inactive column modules pass g through; every active module at most
// as slow as column c's adds its units' d_pre times their weights on c.
template <typename T>
PYSEQ_HD T clockwork_state_gradient(const ClockworkArgs<T>& a, int64_t t, int64_t c, const T* g, const T* d_pre) {
  const int64_t column_module = c / a.width;
  T d = module_active(a, column_module, t) ? T(0) : g[c];
  for (int64_t i = 0; i < a.modules && a.first[i] <= column_module; ++i) {
    if (!module_active(a, i, t)) continue;
    for (int64_t u = i * a.width; u < (i + 1) * a.width; ++u) d += d_pre[u] * a.w_hh[u * a.H + c];
  }
  return d;
}

}  // namespace pyseq
