"""The ops of the SCRN kernels (csrc/scrn), registered in C++ with their autograd (csrc/scrn/scrn_ops.cpp); their
fake kernels are here.

- ``pyseq::scrn(input_proj [T, B, H], context_proj [T, B, C], h0 [B, H], s0 [B, C], w_hh [H, H], w_ch [H, C],
  alpha, lengths [B], sigmoid) -> (hidden [T, B, H], context [T, B, C], h_n [B, H], s_n [B, C])``;
- ``pyseq::scrn_backward(grad_hidden, grad_context, grad_h_n, grad_s_n, hidden, context, h0, s0, w_hh, w_ch, alpha,
  lengths, sigmoid) -> (d input_proj, d context_proj, d h0, d s0, d w_hh, d w_ch)``.

``lengths`` is int64 on the CPU. Results are contiguous whatever the inputs' strides; 16-bit inputs give 16-bit
results.
"""

from __future__ import annotations

import torch

from .checks import check_same_device

scrn = torch.ops.pyseq.scrn


@torch.library.register_fake("pyseq::scrn")
def _scrn_fake(input_proj, context_proj, h0, s0, w_hh, w_ch, alpha, lengths, sigmoid):
    check_same_device("input_proj", input_proj, ("context_proj", context_proj), ("h0", h0), ("s0", s0),
                      ("weight_hh", w_hh), ("weight_ch", w_ch), ("lengths", lengths), cpu_ok=("lengths",))
    return (input_proj.new_empty(input_proj.shape), input_proj.new_empty(context_proj.shape),
            input_proj.new_empty(h0.shape), input_proj.new_empty(s0.shape))


@torch.library.register_fake("pyseq::scrn_backward")
def _scrn_backward_fake(grad_hidden, grad_context, grad_h_n, grad_s_n, hidden, context, h0, s0, w_hh, w_ch, alpha,
                        lengths, sigmoid):
    check_same_device("hidden", hidden, ("grad_hidden", grad_hidden), ("grad_context", grad_context),
                      ("grad_h_n", grad_h_n), ("grad_s_n", grad_s_n), ("context", context), ("h0", h0), ("s0", s0),
                      ("weight_hh", w_hh), ("weight_ch", w_ch), ("lengths", lengths), cpu_ok=("lengths",))
    return tuple(hidden.new_empty(t.shape) for t in (hidden, context, h0, s0, w_hh, w_ch))
