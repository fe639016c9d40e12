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
const char* name_of(RecurrentKernel kernel);
RecurrentKernel recurrent_kernel_setting();
// The kernel a float32 layer without projection runs under the current setting on this CPU.
RecurrentKernel resolved_recurrent_kernel();

// What bfloat16 layers without a projection run where the packed schedule serves them: "avx512_bf16" (the products
// on bfloat16 operands, packed_forward_bf16) where the CPU has AVX512-BF16 and the setting allows, else "float32"
// (the tensors converted and the float32 kernels run). The setting: "auto" (the best this CPU runs), "avx512_bf16"
// (an error on a CPU without it) or "float32".
void set_bf16_recurrent_kernel(const std::string& name);
std::string bf16_recurrent_kernel();

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

// The bfloat16 operands of packed_forward_bf16 (bfloat16 values as their 16 bits).
struct Bf16Inputs {
  const uint16_t* x;     // [rows, x_ld]: the input, each row zero-padded to whole pairs (x_ld = I + I % 2)
  int64_t rows, x_ld, I;
  const uint16_t* w_ih;  // [G*H, I]
  const uint16_t* w_hh;  // [G*H, H]
  const float* bias;     // [G*H]: b_ih + b_hh (LSTM, RNN) or b_ih (GRU), zeros without bias
  float* gi;             // [rows, G*H] out: the input projection, float32 (args.gi points here too)
};

// The forward with bfloat16 products: x @ W_ih^T and h @ W_hh^T by vdpbf16ps on bfloat16 operands with float32
// accumulation (the state is rounded to bfloat16 for the product only; the cell math, the state, the outputs and
// the workspace stay float32). args.w_hh is unused. Needs cpu_supports(Isa::Avx512Bf16).
void packed_forward_bf16(const PackedForwardArgs& args, const Bf16Inputs& inputs);

// The backward's time loop with its per-step product dgates @ W_hh on bfloat16 operands: w_hh [G*H, H] bfloat16;
// dgates [N, dgates_ld] out: args.dgates rounded to bfloat16 (dgates_ld >= args.dg_ld, even; a padding column
// stays as given), the operand of the whole-sequence GEMMs after the loop too. args.w_hh is unused.
void packed_backward_bf16(const PackedBackwardArgs& args, const uint16_t* w_hh, uint16_t* dgates, int64_t dgates_ld);

}  // namespace pyseq
