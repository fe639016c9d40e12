// Packed-weight schedule of the recurrent layers (float32, no projection).
//
// W_hh is packed once per call into panels that interleave, for a group of hidden units, every gate of those units
// (forward) or, for backward, groups of columns of W_hh. A register-blocked micro-kernel multiplies a block of batch
// rows by one panel and leaves the tile in L1, where the cell update (cell_rows.h) finishes it: the gates never make
// a round trip through memory, and nothing re-packs the weights per step. One parallel region covers the whole
// sequence: each thread owns a fixed set of hidden-unit panels (its share of W_hh stays in its cache), and the
// threads meet at one barrier per step.
#pragma once

#include <cstdint>
#include <string>

#include "rnn.h"

namespace pyseq {

// Which implementation runs the per-step recurrent work on the CPU. Auto picks the packed kernel at the best ISA
// the CPU has (for float32 without a projection; the ATen schedule otherwise). The others force a path, for tests
// and measurements; forcing an ISA the CPU lacks is an error.
enum class RecurrentKernel { Auto, Aten, Portable, Avx2, Avx512 };

void set_recurrent_kernel(const std::string& name);  // "auto", "aten", "portable", "avx2", "avx512"
std::string recurrent_kernel_name();                  // the setting
RecurrentKernel recurrent_kernel_setting();
// The kernel a float32 layer without projection runs under the current setting on this CPU.
RecurrentKernel resolved_recurrent_kernel();

// Step layout shared with rnn_cpu.cpp: step t has sizes[t] active rows starting at packed row offsets[t].
struct StepLayout {
  const int64_t* sizes;
  const int64_t* offsets;
  int64_t steps;
  bool reverse;
};

struct PackedForwardArgs {
  CellMode mode;
  int64_t H, B;
  StepLayout layout;
  const float* gi;    // [N, G*H] input projection (LSTM, RNN: both biases folded in; GRU: b_ih)
  const float* w_hh;  // [G*H, H] torch layout
  const float* b_hh;  // [3H] (GRU), else unused
  const float* h0;    // [B, H]
  float* y;           // [N, H] out
  float* h_n;         // [B, H] out
  float* c;           // [B, H] (LSTM) in: c0, out: c_n
  float* saved;       // [N, saved_ld] workspace (rnn.h), or nullptr
  int64_t saved_ld;
};

struct PackedBackwardArgs {
  CellMode mode;
  int64_t H, B;
  StepLayout layout;
  const float* w_hh;    // [G*H, H]
  const float* saved;   // [N, saved_ld] from the forward
  int64_t saved_ld;
  const float* grad_y;  // [N, H]
  float* dh;            // [B, H] in: grad of h_n, out: grad of h0
  float* dc;            // [B, H] (LSTM) in: grad of c_n, out: grad of c0
  float* dgates;        // [N, dg_ld] out: pre-activation gradients (GRU: dar, daz, dhn | dain)
  int64_t dg_ld;
};

// Both run the kernel resolved_recurrent_kernel() names (Portable, Avx2 or Avx512).
void packed_forward(const PackedForwardArgs& args);
void packed_backward(const PackedBackwardArgs& args);

}  // namespace pyseq
