// The Clockwork RNN ops (Koutnik et al. 2014), called through the dispatcher: each function runs pyseq::<its name>
// on the kernel of its tensors' device. Schemas and autograd: clockwork_ops.cpp; kernels: clockwork_cpu.cpp,
// clockwork_cuda.cpp; the per-unit math: clockwork_elements.h.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace pyseq {

// One Clockwork RNN layer over a padded sequence: input_proj [T, B, H] (x_t W_ih^T + b_ih + b_hh), h0 [B, H],
// w_hh [H, H], periods [modules] (non-decreasing, positive; H divisible by their number), lengths [B] int64 on the
// CPU (each in [0, T]), relu (else tanh). At step t the modules with t % period == 0 update from the columns of the
// modules at least as slow; the others keep their state (clockwork_elements.h). Returns (output [T, B, H]: the state
// after each step, zeros past a sequence's length; h_n [B, H]: the state after its last step).
std::tuple<at::Tensor, at::Tensor> clockwork_rnn(const at::Tensor& input_proj, const at::Tensor& h0,
                                                 const at::Tensor& w_hh, at::IntArrayRef periods,
                                                 const at::Tensor& lengths, bool relu);

// grad_output [T, B, H], grad_h_n [B, H]; output: the forward's. Returns the gradients of (input_proj, h0, w_hh);
// w_hh's is 0 on the entries the layer does not read.
std::tuple<at::Tensor, at::Tensor, at::Tensor> clockwork_rnn_backward(const at::Tensor& grad_output,
                                                                      const at::Tensor& grad_h_n,
                                                                      const at::Tensor& output, const at::Tensor& h0,
                                                                      const at::Tensor& w_hh, at::IntArrayRef periods,
                                                                      const at::Tensor& lengths, bool relu);

}  // namespace pyseq
