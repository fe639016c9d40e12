"""Custom ops around the fused recurrent kernels (csrc/rnn): one layer, one direction, a whole sequence.

``pyseq::rnn_layer`` runs the forward and returns what its backward needs; ``pyseq::rnn_layer_backward`` is that
backward, itself a custom op so that a compiled graph can hold it. Both work on the packed layout described in
csrc/rnn/rnn.h: ``x`` is ``[N, I]`` with the rows of step 0 first, ``batch_sizes`` ``[T]`` (int64, on the CPU) says
how many sequences run at each step. Empty tensors stand for absent optional arguments (no bias, no projection,
no cell state).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _C
from .checks import check_same_device

# Cell numbering shared with csrc/rnn/rnn.h (CellMode).
RNN_TANH, RNN_RELU, LSTM, GRU = 0, 1, 2, 3
GATES = {RNN_TANH: 1, RNN_RELU: 1, LSTM: 4, GRU: 3}


@torch.library.custom_op("pyseq::rnn_layer", mutates_args=(), device_types="cpu")
def rnn_layer(
    mode: int,
    x: Tensor,
    batch_sizes: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor,
    b_hh: Tensor,
    w_hr: Tensor,
    reverse: bool,
    save_workspace: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Returns ``(y [N, Hr], h_n [B, Hr], c_n [B, H] or empty, workspace [N, cols] or empty)``."""
    y, h_n, c_n, workspace = _C.rnn_forward(
        mode, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, save_workspace
    )
    return y, h_n, c_n, workspace


@rnn_layer.register_fake
def _rnn_layer_fake(mode, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, save_workspace):
    check_same_device(
        "input", x, ("batch_sizes", batch_sizes), ("h0", h0), ("c0", c0), ("weight_ih", w_ih), ("weight_hh", w_hh),
        ("bias_ih", b_ih), ("bias_hh", b_hh), ("weight_hr", w_hr), cpu_ok=("batch_sizes",),
    )
    n = x.shape[0]
    batch, hr = h0.shape
    h = w_hh.shape[0] // GATES[mode]
    y = x.new_empty(n, hr)
    h_n = x.new_empty(batch, hr)
    c_n = x.new_empty(batch, h) if mode == LSTM else x.new_empty(0)
    cols = _C.rnn_workspace_columns(mode, int(h), int(hr))
    workspace = x.new_empty(n if save_workspace else 0, cols)
    return y, h_n, c_n, workspace


@torch.library.custom_op("pyseq::rnn_layer_backward", mutates_args=(), device_types="cpu")
def rnn_layer_backward(
    mode: int,
    x: Tensor,
    batch_sizes: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    w_hr: Tensor,
    workspace: Tensor,
    grad_y: Tensor,
    grad_hn: Tensor,
    grad_cn: Tensor,
    reverse: bool,
    has_bias: bool,
    need_dx: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Returns ``(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr)``; absent ones are empty."""
    return tuple(
        _C.rnn_backward(
            mode, x, batch_sizes, w_ih, w_hh, w_hr, workspace, grad_y, grad_hn, grad_cn, reverse, has_bias, need_dx
        )
    )


@rnn_layer_backward.register_fake
def _rnn_layer_backward_fake(
    mode, x, batch_sizes, w_ih, w_hh, w_hr, workspace, grad_y, grad_hn, grad_cn, reverse, has_bias, need_dx
):
    check_same_device(
        "input", x, ("batch_sizes", batch_sizes), ("weight_ih", w_ih), ("weight_hh", w_hh), ("weight_hr", w_hr),
        ("workspace", workspace), ("grad_y", grad_y), ("grad_hn", grad_hn), ("grad_cn", grad_cn),
        cpu_ok=("batch_sizes",),
    )
    gh = w_hh.shape[0]
    h = gh // GATES[mode]
    empty = x.new_empty(0)
    return (
        torch.empty_like(x) if need_dx else empty,
        torch.empty_like(grad_hn),
        x.new_empty(grad_hn.shape[0], h) if mode == LSTM else x.new_empty(0),
        torch.empty_like(w_ih),
        torch.empty_like(w_hh),
        x.new_empty(gh) if has_bias else x.new_empty(0),
        x.new_empty(gh) if has_bias else x.new_empty(0),
        torch.empty_like(w_hr),
    )


def _setup_context(ctx, inputs, output):
    mode, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, save_workspace = inputs
    workspace = output[3]
    ctx.save_for_backward(x, batch_sizes, w_ih, w_hh, w_hr, workspace)
    ctx.mode = mode
    ctx.reverse = reverse
    ctx.has_bias = b_ih.numel() > 0
    ctx.has_workspace = save_workspace
    ctx.batch = h0.shape[0]
    ctx.mark_non_differentiable(workspace)
    # Outputs a loss does not use get None instead of a materialized zero tensor (the workspace alone is N x 2H to
    # 6H floats); _backward fills in the small ones it needs.
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_y, grad_hn, grad_cn, _grad_workspace):
    if not ctx.has_workspace:
        raise RuntimeError(
            "pyseq::rnn_layer ran with save_workspace=False, so it cannot be differentiated; "
            "run it with save_workspace=True when gradients are needed"
        )
    x, batch_sizes, w_ih, w_hh, w_hr, workspace = ctx.saved_tensors
    lstm = ctx.mode == LSTM
    if grad_y is None:
        grad_y = x.new_zeros(x.shape[0], w_hh.shape[1])
    if grad_hn is None:
        grad_hn = x.new_zeros(ctx.batch, w_hh.shape[1])
    if not lstm:
        grad_cn = x.new_empty(0)
    elif grad_cn is None:
        grad_cn = x.new_zeros(ctx.batch, w_hh.shape[0] // 4)
    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr = rnn_layer_backward(
        ctx.mode,
        x,
        batch_sizes,
        w_ih,
        w_hh,
        w_hr,
        workspace,
        grad_y,
        grad_hn,
        grad_cn,
        ctx.reverse,
        ctx.has_bias,
        ctx.needs_input_grad[1],
    )
    return (
        None,
        dx if ctx.needs_input_grad[1] else None,
        None,
        dh0,
        dc0 if lstm else None,
        dw_ih,
        dw_hh,
        db_ih if ctx.has_bias else None,
        db_hh if ctx.has_bias else None,
        dw_hr if w_hr.numel() > 0 else None,
        None,
        None,
    )


rnn_layer.register_autograd(_backward, setup_context=_setup_context)
