"""The ops of the Clockwork RNN kernels (csrc/clockwork), registered in C++ with their autograd
(csrc/clockwork/clockwork_ops.cpp); their fake kernels are here.

- ``pyseq::clockwork_rnn(input_proj [T, B, H], h0 [B, H], w_hh [H, H], periods, lengths [B], relu)
  -> (output [T, B, H], h_n [B, H])``;
- ``pyseq::clockwork_rnn_backward(grad_output, grad_h_n, output, h0, w_hh, periods, lengths, relu)
  -> (d input_proj, d h0, d w_hh)``.

``lengths`` is int64 on the CPU. Results are contiguous whatever the inputs' strides; 16-bit inputs give 16-bit
results.
"""

from __future__ import annotations

import torch

from .checks import check_same_device

clockwork_rnn = torch.ops.pyseq.clockwork_rnn


@torch.library.register_fake("pyseq::clockwork_rnn")
def _clockwork_rnn_fake(input_proj, h0, w_hh, periods, lengths, relu):
    check_same_device("input_proj", input_proj, ("h0", h0), ("weight_hh", w_hh), ("lengths", lengths),
                      cpu_ok=("lengths",))
    return input_proj.new_empty(input_proj.shape), input_proj.new_empty(h0.shape)


@torch.library.register_fake("pyseq::clockwork_rnn_backward")
def _clockwork_rnn_backward_fake(grad_output, grad_h_n, output, h0, w_hh, periods, lengths, relu):
    check_same_device("output", output, ("grad_output", grad_output), ("grad_h_n", grad_h_n), ("h0", h0),
                      ("weight_hh", w_hh), ("lengths", lengths), cpu_ok=("lengths",))
    return output.new_empty(output.shape), output.new_empty(h0.shape), output.new_empty(w_hh.shape)
