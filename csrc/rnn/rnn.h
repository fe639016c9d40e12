// Fused recurrent layers: one layer, one direction, a whole sequence per call.
//
// Sequences come in the packed layout for both padded and PackedSequence input: x holds the rows of time step 0,
// then those of step 1, ..., and batch_sizes[t] (non-increasing, batch_sizes[0] == B) says how many sequences are
// still running at step t. Padded input of shape [T, B, I] is the special case batch_sizes = [B] * T. Step t only
// touches the first batch_sizes[t] rows of the state, so finished sequences keep their last state (forward
// direction) and not-yet-started ones keep the initial state (reverse direction) without padded steps.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

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

// x: [N, I] packed rows, or [T, B, I] for padded input (then y and dx come back [T, B, *]); batch_sizes: [T] int64
// on the CPU; h0: [B, Hr]; c0: [B, H] (LSTM) or empty;
// w_ih: [G*H, I]; w_hh: [G*H, Hr]; b_ih, b_hh: [G*H] or both empty; w_hr: [Hr, H] (LSTM projection) or empty.
// G = 4 (LSTM), 3 (GRU), 1 (RNN); Hr = proj_size if w_hr is given, else H.
// Returns y: [N, Hr], h_n: [B, Hr], c_n: [B, H] (LSTM) or empty, workspace: [N, columns] if save_workspace else empty.
std::vector<at::Tensor> rnn_forward_cpu(int64_t mode, const at::Tensor& x, const at::Tensor& batch_sizes,
                                        const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
                                        const at::Tensor& w_hh, const at::Tensor& b_ih, const at::Tensor& b_hh,
                                        const at::Tensor& w_hr, bool reverse, bool save_workspace);

// grad_y: like y; grad_hn: [B, Hr]; grad_cn: [B, H] (LSTM) or empty; workspace: from rnn_forward_cpu.
// Returns dx: like x (empty unless need_dx), dh0: [B, Hr] (empty unless need_dh0), dc0: [B, H] or empty, dw_ih,
// dw_hh, db_ih, db_hh (empty without bias), dw_hr (empty without projection).
std::vector<at::Tensor> rnn_backward_cpu(int64_t mode, const at::Tensor& x, const at::Tensor& batch_sizes,
                                         const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& w_hr,
                                         const at::Tensor& workspace, const at::Tensor& grad_y,
                                         const at::Tensor& grad_hn, const at::Tensor& grad_cn, bool reverse,
                                         bool has_bias, bool need_dx, bool need_dh0);

// Which forward the CUDA recurrent layers run: "steps" (the default: cuBLAS recurrent product and one cell-update
// kernel per step) or "persistent" (one persistent kernel for the whole time loop where it takes the layer, see
// rnn_cuda.h; the step schedule elsewhere). A setting in every build; only CUDA builds read it.
void set_cuda_recurrent_kernel(const std::string& name);
std::string cuda_recurrent_kernel_name();
bool cuda_persistent_forward_requested();

}  // namespace pyseq
