// The recurrent layer ops, called through the dispatcher: each function runs pyseq::<its name> on the kernel of its
// tensors' device. Schemas and autograd: rnn_ops.cpp; kernels: rnn_cpu.cpp, rnn_cuda.cpp. Layout and modes: rnn.h.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace pyseq {

using RnnLayerResults = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using RnnLayerGradients =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// mode: a CellMode (rnn.h). x: [N, I] packed rows, or [T, B, I] for padded input (then y and dx come back
// [T, B, *]); batch_sizes: [T] int64 on the CPU; h0: [B, Hr]; c0: [B, H] (LSTM) or empty;
// w_ih: [G*H, I]; w_hh: [G*H, Hr]; b_ih, b_hh: [G*H] or both empty; w_hr: [Hr, H] (LSTM projection) or empty.
// G = 4 (LSTM), 3 (GRU), 1 (RNN); Hr = proj_size if w_hr is given, else H.
// Returns y: [N, Hr], h_n: [B, Hr], c_n: [B, H] (LSTM) or empty, workspace: [N, columns] if save_workspace else empty.
RnnLayerResults rnn_layer(int64_t mode, const at::Tensor& x, const at::Tensor& batch_sizes, const at::Tensor& h0,
                          const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& b_ih,
                          const at::Tensor& b_hh, const at::Tensor& w_hr, bool reverse, bool save_workspace);

// grad_y: like y; grad_hn: [B, Hr]; grad_cn: [B, H] (LSTM) or empty; workspace: from rnn_layer.
// Returns dx: like x (empty unless need_dx), dh0: [B, Hr] (empty unless need_dh0), dc0: [B, H] or empty, dw_ih,
// dw_hh, db_ih, db_hh (empty without bias), dw_hr (empty without projection).
RnnLayerGradients rnn_layer_backward(int64_t mode, const at::Tensor& x, const at::Tensor& batch_sizes,
                                     const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& w_hr,
                                     const at::Tensor& workspace, const at::Tensor& grad_y, const at::Tensor& grad_hn,
                                     const at::Tensor& grad_cn, bool reverse, bool has_bias, bool need_dx,
                                     bool need_dh0);

}  // namespace pyseq
