// The Structurally Constrained Recurrent Network (Mikolov et al. 2015) as the work of one element: the slow context
// state s_t = (1 - alpha) B x_t + alpha s_{t-1}, one (batch row, context unit) element per call, for the CPU kernels
// (scrn_cpu.cpp: the steps in turn, the elements of a step vectorized) and the CUDA kernels (scrn_cuda.cu: a thread
// per element looping over the steps). The fast hidden state h_t = act(P s_t + A x_t + R h_{t-1}) is a Clockwork RNN
// of one module of period 1 (csrc/clockwork). Torch-free, so that nvcc compiles it without torch headers.
//
// A sequence past its length keeps its state and outputs zeros.
#pragma once

#include <cstdint>

#include "../common/math.h"

namespace pyseq {

template <typename T>
struct ScrnContextArgs {
  int64_t steps, B, C;
  T alpha;
  const int64_t* lengths;  // [B], each in [0, steps]
  const T* s0;             // [B, C]
  // forward
  const T* context_proj;  // [steps, B, C]: B x_t
  T* context;             // [steps, B, C]: s_t
  // backward (context above is the forward's, unused)
  const T* grad_context;  // [steps, B, C]: d loss / d s_t from the outputs and the hidden layer
  T* grad_context_proj;   // [steps, B, C]
  T* grad_s0;             // [B, C] in: d loss / d s_n, then the carried gradient; out: d loss / d s0
};

// s_t of element (b, c) at step t, the steps before it done.
template <typename T>
PYSEQ_HD void scrn_context_step(const ScrnContextArgs<T>& a, int64_t t, int64_t b, int64_t c) {
  const int64_t e = b * a.C + c, at = t * a.B * a.C + e;
  if (t >= a.lengths[b]) {
    a.context[at] = T(0);
    return;
  }
  // A row that runs at step t ran at t - 1 too: its state is the output of the step before.
  const T previous = t == 0 ? a.s0[e] : a.context[at - a.B * a.C];
  a.context[at] = (T(1) - a.alpha) * a.context_proj[at] + a.alpha * previous;
}

// s_n of element (b, c): the state after the row's last step.
template <typename T>
PYSEQ_HD T scrn_context_final(const ScrnContextArgs<T>& a, int64_t b, int64_t c) {
  const int64_t length = a.lengths[b], e = b * a.C + c;
  return length == 0 ? a.s0[e] : a.context[(length - 1) * a.B * a.C + e];
}

// The backward of step t for element (b, c), the steps after it done: grad_s0 carries d loss / d s_t from them.
template <typename T>
PYSEQ_HD void scrn_context_backward_step(const ScrnContextArgs<T>& a, int64_t t, int64_t b, int64_t c) {
  const int64_t e = b * a.C + c, at = t * a.B * a.C + e;
  if (t >= a.lengths[b]) {  // the state passes through unchanged
    a.grad_context_proj[at] = T(0);
    return;
  }
  const T total = a.grad_s0[e] + a.grad_context[at];
  a.grad_context_proj[at] = (T(1) - a.alpha) * total;
  a.grad_s0[e] = a.alpha * total;
}

}  // namespace pyseq
