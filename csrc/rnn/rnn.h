// Fused recurrent layers: one layer, one direction, a whole sequence per call (the ops: rnn_ops.h).
//
// Sequences come in the packed layout for both padded and PackedSequence input: x holds the rows of time step 0,
// then those of step 1, ..., and batch_sizes[t] (non-increasing, batch_sizes[0] == B) says how many sequences are
// still running at step t. Padded input of shape [T, B, I] is the special case batch_sizes = [B] * T. Step t only
// touches the first batch_sizes[t] rows of the state, so finished sequences keep their last state (forward
// direction) and not-yet-started ones keep the initial state (reverse direction) without padded steps.
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace pyseq {

// Numbering used across C++ and Python (pyseq/_ops/rnn.py).
enum class CellMode : int64_t { RnnTanh = 0, RnnRelu = 1, Lstm = 2, Gru = 3 };

// Gates per hidden unit: 4 (LSTM: i, f, g, o), 3 (GRU: r, z, n), 1 (RNN).
constexpr int gate_count(CellMode mode) { return mode == CellMode::Lstm ? 4 : mode == CellMode::Gru ? 3 : 1; }

// Saved-for-backward workspace, one row per packed row, columns:
//   LSTM: i, f, g, o (activated, 4H) | c_prev (H) | h_prev (Hr)
//   GRU:  r, z, n (activated), hn = W_hn h_prev + b_hn (4H) | h_prev (H)
//   RNN:  h (H) | h_prev (H)
int64_t rnn_workspace_columns(CellMode mode, int64_t H, int64_t Hr);

// Which forward the CUDA recurrent layers run: "steps" (the default: cuBLAS recurrent product and one cell-update
// kernel per step) or "persistent" (one persistent kernel for the whole time loop where it takes the layer, see
// rnn_cuda.h; the step schedule elsewhere). A setting in every build; only CUDA builds read it.
void set_cuda_recurrent_kernel(const std::string& name);
std::string cuda_recurrent_kernel_name();
bool cuda_persistent_forward_requested();

}  // namespace pyseq
