"""The Clockwork RNN (pyseq.functional): Koutnik, Greff, Gomez and Schmidhuber (2014).

The hidden state is split into modules of equal width, each with a period; at step t (counted from 0) only the
modules whose period divides t update, and each reads the state of the modules at least as slow as itself (a
block-triangular recurrent matrix). The others keep their state. Only the active modules are computed.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .._ops import clockwork as _clockwork_ops
from .._ops.checks import check_same_device

__all__ = ["clockwork_rnn", "clockwork_connectivity"]


def check_periods(periods: Sequence[int], hidden_size: int) -> tuple[int, ...]:
    """The periods as a tuple, after the checks the op makes (positive, non-decreasing, dividing ``hidden_size``
    into modules of equal width), raised as ``ValueError``."""
    periods = tuple(int(p) for p in periods)
    if not periods:
        raise ValueError("periods must name at least one module")
    if any(p < 1 for p in periods):
        raise ValueError(f"periods must be positive, got {list(periods)}")
    if any(b < a for a, b in zip(periods, periods[1:])):
        raise ValueError(f"periods must be in non-decreasing order (the fastest modules first), got {list(periods)}")
    if hidden_size % len(periods):
        raise ValueError(
            f"hidden_size ({hidden_size}) must be divisible by the number of modules ({len(periods)})")
    return periods


def clockwork_connectivity(periods: Sequence[int], hidden_size: int, *, device=None) -> Tensor:
    """``[H, H]`` bool: which entries of the recurrent matrix the layer reads. Unit u reads unit c when c's module is
    at least as slow as u's (period(c) >= period(u)); with non-decreasing periods this is block-upper-triangular."""
    periods = check_periods(periods, hidden_size)
    unit_period = torch.tensor(periods, device=device).repeat_interleave(hidden_size // len(periods))
    return unit_period.unsqueeze(0) >= unit_period.unsqueeze(1)


def clockwork_rnn(input: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor | None,
                  bias_hh: Tensor | None, periods: Sequence[int], hx: Tensor | None = None,
                  nonlinearity: str = "tanh", lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """A Clockwork RNN layer over a padded sequence.

    Args:
        input: ``[T, B, I]``.
        weight_ih: ``[H, I]``; weight_hh: ``[H, H]`` (only the entries of :func:`clockwork_connectivity` are read,
            and only they get a gradient); bias_ih, bias_hh: ``[H]`` or None.
        periods: one per module, non-decreasing (fastest first); ``H`` must be divisible by their number.
        hx: ``[B, H]``, the initial state (zeros when None).
        nonlinearity: ``"tanh"`` or ``"relu"``.
        lengths: ``[B]`` int64, each in [0, T]: a sequence keeps its state after its last step and outputs zeros
            there (None: every sequence runs T steps).

    With ``h_t[m]`` module m's units: ``h_t[m] = act(W_ih[m] x_t + b_ih[m] + b_hh[m] + sum_{period(j) >=
    period(m)} W_hh[m, j] h_{t-1}[j])`` when ``t % period(m) == 0``, else ``h_{t-1}[m]``.

    Returns ``(output [T, B, H], h_n [B, H])``. Differentiable in the input, the weights, the biases and ``hx``.
    """
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
    if input.dim() != 3:
        raise ValueError(f"input must be 3-D (T, batch, input_size), got {input.dim()}-D")
    # before the input projection: torch's linear would run a CPU input with a meta weight
    check_same_device("input", input, ("weight_ih", weight_ih), ("weight_hh", weight_hh), ("bias_ih", bias_ih),
                      ("bias_hh", bias_hh), ("hx", hx))
    steps, batch = input.shape[0], input.shape[1]
    hidden = weight_hh.shape[0]
    periods = check_periods(periods, hidden)
    if bias_ih is not None and bias_hh is not None:
        bias_ih = bias_ih + bias_hh  # one bias over the sequence: the input projection's GEMM adds it
    elif bias_hh is not None:
        bias_ih = bias_hh
    # a contiguous weight: the same product, bit for bit, whatever the weight's strides
    input_proj = F.linear(input, weight_ih.contiguous(), bias_ih)
    if hx is None:
        hx = input.new_zeros(batch, hidden, dtype=input_proj.dtype)
    if lengths is None:
        lengths = torch.full((batch,), steps, dtype=torch.int64)
    return _clockwork_ops.clockwork_rnn(input_proj, hx, weight_hh, list(periods), lengths, nonlinearity == "relu")
