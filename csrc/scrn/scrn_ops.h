// The SCRN ops (Structurally Constrained Recurrent Network, Mikolov et al. 2015), called through the dispatcher: each
// function runs pyseq::<its name> on the kernel of its tensors' device. Schemas and autograd: scrn_ops.cpp;
// kernels: scrn_cpu.cpp, scrn_cuda.cpp; the context's element math: scrn_elements.h.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace pyseq {

// One SCRN layer over a padded sequence: input_proj [T, B, H] (A x_t + b), context_proj [T, B, C] (B x_t), h0 [B, H],
// s0 [B, C], w_hh [H, H] (R), w_ch [H, C] (P), alpha in [0, 1], lengths [B] int64 on the CPU (each in [0, T]),
// sigmoid (else tanh). Per step: s_t = (1 - alpha) context_proj_t + alpha s_{t-1}, h_t = act(input_proj_t + P s_t
// + R h_{t-1}). Returns (hidden [T, B, H], context [T, B, C]: zeros past a sequence's length; h_n [B, H], s_n [B, C]:
// the states after each sequence's last step).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> scrn(const at::Tensor& input_proj,
                                                                const at::Tensor& context_proj, const at::Tensor& h0,
                                                                const at::Tensor& s0, const at::Tensor& w_hh,
                                                                const at::Tensor& w_ch, double alpha,
                                                                const at::Tensor& lengths, bool sigmoid);

// The gradients of the results (grad_hidden [T, B, H], grad_context [T, B, C], grad_h_n [B, H], grad_s_n [B, C]);
// hidden and context: the forward's. Returns the gradients of (input_proj, context_proj, h0, s0, w_hh, w_ch).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> scrn_backward(
    const at::Tensor& grad_hidden, const at::Tensor& grad_context, const at::Tensor& grad_h_n,
    const at::Tensor& grad_s_n, const at::Tensor& hidden, const at::Tensor& context, const at::Tensor& h0,
    const at::Tensor& s0, const at::Tensor& w_hh, const at::Tensor& w_ch, double alpha, const at::Tensor& lengths,
    bool sigmoid);

}  // namespace pyseq
