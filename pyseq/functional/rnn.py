"""Recurrent layers (pyseq.functional).

``lstm``, ``gru`` and ``rnn`` run a stack of recurrent layers with the semantics of ``torch.nn.LSTM/GRU/RNN``.
``weights`` is a flat list in the order of torch's ``_flat_weights`` (and of ``pyseq.nn`` modules'
``_flat_weights``): for each layer, for each direction (forward, then reverse):
``w_ih [G*H, I_l], w_hh [G*H, Hr]``, then ``b_ih [G*H], b_hh [G*H]`` when there are biases, then
``w_hr [Hr, H]`` for an LSTM with a projection. ``G`` is 4 (LSTM, gates i, f, g, o), 3 (GRU, gates r, z, n) or 1;
``Hr`` is ``proj_size`` with a projection, else ``H``; ``I_l`` is the input size for layer 0, ``D * Hr`` after.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from .._ops import rnn as _rnn_ops

__all__ = ["lstm", "gru", "rnn"]


_NAMES = {_rnn_ops.RNN_TANH: "RNN", _rnn_ops.RNN_RELU: "RNN", _rnn_ops.LSTM: "LSTM", _rnn_ops.GRU: "GRU"}


def _layer_weights(mode, weights, num_layers, num_directions):
    """The number of tensors per (layer, direction) in the flat list, and whether there are biases and a
    projection."""
    groups = num_layers * num_directions
    per = len(weights) // groups if groups else 0
    allowed = (2, 3, 4, 5) if mode == _rnn_ops.LSTM else (2, 4)
    if per * groups != len(weights) or per not in allowed:
        raise ValueError(
            f"{_NAMES[mode]}: weights must hold {' or '.join(map(str, allowed))} tensors per layer and direction "
            f"({num_layers} layers x {num_directions} directions), got {len(weights)} tensors"
        )
    has_bias = per in (4, 5)
    has_proj = per in (3, 5)
    return per, has_bias, has_proj


_BATCH_SIZES: dict = {}


def _full_batch_sizes(steps: int, batch: int) -> Tensor:
    """batch_sizes [T] of a padded input (every sequence runs every step), made once per (T, B) in eager mode: the
    ops only read it, and a decoder step would otherwise make it every call."""
    if torch.compiler.is_compiling():
        return torch.full((steps,), batch, dtype=torch.int64)
    sizes = _BATCH_SIZES.get((steps, batch))
    if sizes is None:
        if len(_BATCH_SIZES) >= 64:
            _BATCH_SIZES.clear()
        sizes = _BATCH_SIZES[(steps, batch)] = torch.full((steps,), batch, dtype=torch.int64)
    return sizes


def _cpu_autocast_result_dtypes(mode, packed, has_proj, input_dtype, output, h_n, c_n):
    """The layer ops return their results in the autocast dtype; under CPU autocast torch.nn's modules hand some of
    theirs back in the input's dtype instead: the GRU's output and state, a projected LSTM's cell state, and
    everything of an LSTM run on a PackedSequence. The same results go back to the input's dtype here, so that the
    code after a pyseq layer sees torch's dtypes."""

    def keep(t):
        return t.to(input_dtype) if t is not None else None

    if mode == _rnn_ops.GRU or (mode == _rnn_ops.LSTM and packed and not has_proj):
        return keep(output), keep(h_n), keep(c_n)
    if mode == _rnn_ops.LSTM and has_proj:
        return output, h_n, keep(c_n)
    return output, h_n, c_n


def _states(h0, c0):
    return (h0,) if c0 is None else (h0, c0)


def _check_hidden(hx: Tensor, expected: tuple, msg: str) -> None:
    if tuple(hx.shape) != expected:
        raise RuntimeError(msg.format(expected, list(hx.shape)))


def run_layers(
    mode: int,
    input,
    hx,
    weights,
    num_layers: int,
    bidirectional: bool,
    batch_first: bool,
    dropout: float,
    training: bool,
):
    name = _NAMES[mode]
    lstm = mode == _rnn_ops.LSTM
    num_directions = 2 if bidirectional else 1
    per, has_bias, has_proj = _layer_weights(mode, weights, num_layers, num_directions)
    w_ih0, w_hh0 = weights[0], weights[1]
    hidden_size = w_hh0.shape[0] // _rnn_ops.GATES[mode]
    real_hidden = w_hh0.shape[1]
    input_size = w_ih0.shape[1]

    packed = isinstance(input, PackedSequence)
    if packed:
        data, batch_sizes, sorted_indices, unsorted_indices = input
        if data.dim() != 2:
            raise RuntimeError(f"input must have 2 dimensions, got {data.dim()}")
        batch = int(batch_sizes[0])
        batched = True
    else:
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: input must be a Tensor or a PackedSequence, got {type(input).__name__}")
        if input.dim() not in (2, 3):
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}D tensor instead")
        batched = input.dim() == 3
        x = input if batched else input.unsqueeze(1)
        if batched and batch_first:
            x = x.transpose(0, 1)
        steps, batch = x.shape[0], x.shape[1]
        if steps == 0:
            raise ValueError(f"{name}: input must have at least one time step, got a sequence of length 0")
        sorted_indices = unsorted_indices = None
        data = x  # [T, B, I]: the layer op takes padded input as it is
        batch_sizes = _full_batch_sizes(steps, batch)
    if data.device != w_ih0.device:
        raise RuntimeError(
            "Input and parameter tensors are not at the same device, found input tensor at "
            f"{data.device} and parameter tensor at {w_ih0.device}"
        )
    # Under autocast the layer op casts input, state and weights to the autocast dtype itself.
    if data.dtype != w_ih0.dtype and not torch.is_autocast_enabled(data.device.type):
        raise ValueError(
            f"RNN input dtype ({data.dtype}) does not match weight dtype ({w_ih0.dtype}). Convert input: "
            f"input.to({w_ih0.dtype}), or convert model: model.to({data.dtype})"  # torch's words, for every cell
        )
    if data.shape[-1] != input_size:
        raise RuntimeError(
            f"input.size(-1) must be equal to input_size. Expected {input_size}, got {data.shape[-1]}"
        )

    # Initial states: [L*D, B, Hr] (and [L*D, B, H] for the LSTM cell).
    if hx is None:
        h0 = data.new_zeros(num_layers * num_directions, batch, real_hidden)
        c0 = data.new_zeros(num_layers * num_directions, batch, hidden_size) if lstm else None
    else:
        if lstm:
            if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise TypeError("LSTM: hx must be a tuple (h_0, c_0)")
            h0, c0 = hx
        else:
            if not isinstance(hx, Tensor):
                raise TypeError(f"{name}: hx must be a Tensor")
            h0, c0 = hx, None
        ndim = 3 if batched else 2
        if any(s.dim() != ndim for s in _states(h0, c0)):
            dims = ", ".join(f"{s.dim()}-D" for s in _states(h0, c0))
            kind = "batched 3-D" if batched else "unbatched 2-D"
            what = "hx and cx" if lstm else "hx"
            raise RuntimeError(f"For {kind} input, {what} should also be {ndim}-D but got ({dims}) tensors")
        if not batched:
            h0 = h0.unsqueeze(1)
            c0 = c0.unsqueeze(1) if c0 is not None else None
        expected_h = (num_layers * num_directions, batch, real_hidden)
        if lstm:
            _check_hidden(h0, expected_h, "Expected hidden[0] size {}, got {}")
            _check_hidden(c0, (num_layers * num_directions, batch, hidden_size), "Expected hidden[1] size {}, got {}")
        else:
            _check_hidden(h0, expected_h, "Expected hidden size {}, got {}")
        for s, what in zip(_states(h0, c0), ("hx", "cx")):
            dtype_differs = s.dtype != data.dtype and not torch.is_autocast_enabled(data.device.type)
            if dtype_differs or s.device != data.device:
                raise RuntimeError(
                    f"{name}: {what} must have the dtype and device of the input ({data.dtype}, {data.device}), "
                    f"got ({s.dtype}, {s.device})"
                )
        if sorted_indices is not None:
            h0 = h0.index_select(1, sorted_indices)
            c0 = c0.index_select(1, sorted_indices) if c0 is not None else None

    # Whether the layers keep what their backward needs. Always under torch.jit.trace: the traced graph holds the
    # flag as a constant, and it must serve training as well as inference (the trace's check reruns it without grad).
    needs_grad = torch.jit.is_tracing() or torch.is_grad_enabled() and (
        data.requires_grad or h0.requires_grad or (c0 is not None and c0.requires_grad)
    )
    if not needs_grad and torch.is_grad_enabled():
        for w in weights:
            if w.requires_grad:
                needs_grad = True
                break
    empty = data.new_empty(0)
    layer_input = data
    h_n, c_n = [], []
    for layer in range(num_layers):
        outputs = []
        for direction in range(num_directions):
            index = layer * num_directions + direction
            base = index * per
            y, h, c, _ = _rnn_ops.rnn_layer(
                mode,
                layer_input,
                batch_sizes,
                h0[index],
                c0[index] if lstm else empty,
                weights[base],
                weights[base + 1],
                weights[base + 2] if has_bias else empty,
                weights[base + 3] if has_bias else empty,
                weights[base + per - 1] if has_proj else empty,
                direction == 1,
                needs_grad,
            )
            outputs.append(y)
            h_n.append(h)
            c_n.append(c)
        layer_input = outputs[0] if num_directions == 1 else torch.cat(outputs, -1)
        if dropout > 0 and training and layer < num_layers - 1:
            layer_input = F.dropout(layer_input, dropout, training=True)

    h_n = torch.stack(h_n) if len(h_n) > 1 else h_n[0].unsqueeze(0)
    c_n = (torch.stack(c_n) if len(c_n) > 1 else c_n[0].unsqueeze(0)) if lstm else None
    if data.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        layer_input, h_n, c_n = _cpu_autocast_result_dtypes(mode, packed, has_proj, data.dtype, layer_input, h_n, c_n)
    if packed:
        if unsorted_indices is not None:
            h_n = h_n.index_select(1, unsorted_indices)
            c_n = c_n.index_select(1, unsorted_indices) if lstm else None
        output = PackedSequence(layer_input, batch_sizes, sorted_indices, unsorted_indices)
    else:
        output = layer_input
        if not batched:
            output = output.squeeze(1)
            h_n = h_n.squeeze(1)
            c_n = c_n.squeeze(1) if lstm else None
        elif batch_first:
            output = output.transpose(0, 1)
    return output, ((h_n, c_n) if lstm else h_n)


def lstm(
    input,
    hx,
    weights,
    num_layers: int = 1,
    bidirectional: bool = False,
    batch_first: bool = False,
    dropout: float = 0.0,
    training: bool = False,
):
    """Multi-layer LSTM with the semantics of ``torch.nn.LSTM``, on pyseq's fused kernels.

    Args:
        input: ``[T, B, I]`` (``[B, T, I]`` with ``batch_first``), unbatched ``[T, I]``, or a ``PackedSequence``.
        hx: ``None`` (zeros) or ``(h_0 [L*D, B, Hr], c_0 [L*D, B, H])`` (``[L*D, Hr]``, ``[L*D, H]`` unbatched).
        weights: flat list as described in this module's docstring (gates i, f, g, o).
        num_layers, bidirectional, batch_first: as in ``torch.nn.LSTM``.
        dropout, training: dropout on each layer's output except the last, when ``training``.

    Returns:
        ``(output, (h_n, c_n))``: output ``[T, B, D*Hr]`` (or as laid out by ``batch_first``, unbatched, or packed),
        ``h_n [L*D, B, Hr]``, ``c_n [L*D, B, H]``.
    """
    return run_layers(_rnn_ops.LSTM, input, hx, weights, num_layers, bidirectional, batch_first, dropout, training)


def gru(
    input,
    hx,
    weights,
    num_layers: int = 1,
    bidirectional: bool = False,
    batch_first: bool = False,
    dropout: float = 0.0,
    training: bool = False,
):
    """Multi-layer GRU with the semantics of ``torch.nn.GRU`` (gates r, z, n;
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, ``h' = (1 - z) * n + z * h``).

    Shapes as in :func:`lstm` with ``Hr = H`` and ``hx`` a single tensor ``[L*D, B, H]``.
    Returns ``(output, h_n)``.
    """
    return run_layers(_rnn_ops.GRU, input, hx, weights, num_layers, bidirectional, batch_first, dropout, training)


def rnn(
    input,
    hx,
    weights,
    nonlinearity: str = "tanh",
    num_layers: int = 1,
    bidirectional: bool = False,
    batch_first: bool = False,
    dropout: float = 0.0,
    training: bool = False,
):
    """Multi-layer Elman RNN, ``h' = act(W_ih x + b_ih + W_hh h + b_hh)`` with ``act`` tanh or relu, with the
    semantics of ``torch.nn.RNN``. Shapes as in :func:`gru`. Returns ``(output, h_n)``."""
    if nonlinearity == "tanh":
        mode = _rnn_ops.RNN_TANH
    elif nonlinearity == "relu":
        mode = _rnn_ops.RNN_RELU
    else:
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
    return run_layers(mode, input, hx, weights, num_layers, bidirectional, batch_first, dropout, training)
