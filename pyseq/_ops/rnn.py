"""The ops of the fused recurrent kernels (csrc/rnn): one layer, one direction, a whole sequence.

``pyseq::rnn_layer`` runs the forward and returns what its backward needs; ``pyseq::rnn_layer_backward`` is that
backward, itself an op so that a compiled graph can hold it. Both work on the packed layout described in
csrc/rnn/rnn.h: ``x`` is ``[N, I]`` with the rows of step 0 first, ``batch_sizes`` ``[T]`` (int64, on the CPU) says
how many sequences run at each step; a padded input may also come as ``[T, B, I]`` (then ``y`` and ``dx`` come
back ``[T, B, *]``). Empty tensors stand for absent optional arguments (no bias, no projection, no cell state).
"""

from __future__ import annotations

import torch

from .. import _C
from .checks import check_same_device

# Cell numbering shared with csrc/rnn/rnn.h (CellMode).
RNN_TANH, RNN_RELU, LSTM, GRU = 0, 1, 2, 3
GATES = {RNN_TANH: 1, RNN_RELU: 1, LSTM: 4, GRU: 3}


# pyseq::rnn_layer(mode, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, save_workspace)
#     -> (y [N, Hr], h_n [B, Hr], c_n [B, H] or empty, workspace [N, cols] or empty)
# pyseq::rnn_layer_backward(mode, x, batch_sizes, w_ih, w_hh, w_hr, workspace, grad_y, grad_hn, grad_cn, reverse,
#     has_bias, need_dx, need_dh0) -> (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr), absent or unneeded ones
#     empty
# are registered in C++ with the autograd kernel (csrc/rnn/rnn_ops.cpp); their fake kernels are here.
rnn_layer = torch.ops.pyseq.rnn_layer
rnn_layer_backward = torch.ops.pyseq.rnn_layer_backward


@torch.library.register_fake("pyseq::rnn_layer")
def _rnn_layer_fake(mode, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, save_workspace):
    check_same_device(
        "input", x, ("batch_sizes", batch_sizes), ("h0", h0), ("c0", c0), ("weight_ih", w_ih), ("weight_hh", w_hh),
        ("bias_ih", b_ih), ("bias_hh", b_hh), ("weight_hr", w_hr), cpu_ok=("batch_sizes",),
    )
    n = x.shape[0] * x.shape[1] if x.dim() == 3 else x.shape[0]
    batch, hr = h0.shape
    h = w_hh.shape[0] // GATES[mode]
    y = x.new_empty(*x.shape[:-1], hr)
    h_n = x.new_empty(batch, hr)
    c_n = x.new_empty(batch, h) if mode == LSTM else x.new_empty(0)
    cols = _C.rnn_workspace_columns(mode, int(h), int(hr))
    # The CPU keeps a 16-bit layer's workspace in float32 (csrc/rnn/rnn_cpu.cpp), CUDA in the layer's dtype.
    ws_dtype = torch.float32 if x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16) else x.dtype
    workspace = x.new_empty(n if save_workspace else 0, cols, dtype=ws_dtype)
    return y, h_n, c_n, workspace


@torch.library.register_fake("pyseq::rnn_layer_backward")
def _rnn_layer_backward_fake(
    mode, x, batch_sizes, w_ih, w_hh, w_hr, workspace, grad_y, grad_hn, grad_cn, reverse, has_bias, need_dx,
    need_dh0,
):
    check_same_device(
        "input", x, ("batch_sizes", batch_sizes), ("weight_ih", w_ih), ("weight_hh", w_hh), ("weight_hr", w_hr),
        ("workspace", workspace), ("grad_y", grad_y), ("grad_hn", grad_hn), ("grad_cn", grad_cn),
        cpu_ok=("batch_sizes",),
    )
    gh = w_hh.shape[0]
    h = gh // GATES[mode]
    empty = x.new_empty(0)
    # Every gradient is contiguous, as the kernels return it, whatever the strides of its input.
    return (
        x.new_empty(x.shape) if need_dx else empty,
        x.new_empty(grad_hn.shape) if need_dh0 else empty,
        x.new_empty(grad_hn.shape[0], h) if mode == LSTM else x.new_empty(0),
        x.new_empty(w_ih.shape),
        x.new_empty(w_hh.shape),
        x.new_empty(gh) if has_bias else x.new_empty(0),
        x.new_empty(gh) if has_bias else x.new_empty(0),
        x.new_empty(w_hr.shape),
    )
