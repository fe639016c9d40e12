"""The Structurally Constrained Recurrent Network (pyseq.functional): Mikolov, Joulin, Chopra, Mathieu and Ranzato
(2015), "Learning Longer Memory in Recurrent Neural Networks".

Beside a fast hidden state, a slow context state integrates the input with a fixed decay: ``s_t = (1 - alpha) B x_t
+ alpha s_{t-1}``, ``h_t = sigmoid(P s_t + A x_t + R h_{t-1} + b)``. The model's output layer reads both (``y_t =
f(U h_t + V s_t)``): a linear layer over ``[h_t, s_t]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._ops import scrn as _scrn_ops
from .._ops.checks import check_same_device

__all__ = ["scrn"]


def scrn(input: Tensor, weight_ih: Tensor, weight_hh: Tensor, weight_ic: Tensor, weight_ch: Tensor,
         bias: Tensor | None = None, alpha: float = 0.95, hx: tuple[Tensor, Tensor] | None = None,
         nonlinearity: str = "sigmoid", lengths: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """An SCRN layer over a padded sequence.

    Args:
        input: ``[T, B, I]``.
        weight_ih: ``[H, I]`` (the paper's A); weight_hh: ``[H, H]`` (R); weight_ic: ``[C, I]`` (B, the input to the
            context); weight_ch: ``[H, C]`` (P, the context to the hidden layer); bias: ``[H]`` or None.
        alpha: the context's decay, in [0, 1] (the paper fixes it at 0.95).
        hx: ``(h0 [B, H], s0 [B, C])``, the initial states (zeros when None).
        nonlinearity: the hidden layer's, ``"sigmoid"`` (the paper's) or ``"tanh"``.
        lengths: ``[B]`` int64, each in [0, T]: a sequence keeps its states after its last step and outputs zeros
            there (None: every sequence runs T steps).

    Returns ``(hidden [T, B, H], context [T, B, C], h_n [B, H], s_n [B, C])``. Differentiable in the input, the
    weights, the bias and ``hx``.
    """
    if nonlinearity not in ("sigmoid", "tanh"):
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'sigmoid' or 'tanh'.")
    if input.dim() != 3:
        raise ValueError(f"input must be 3-D (T, batch, input_size), got {input.dim()}-D")
    h0, s0 = hx if hx is not None else (None, None)
    # before the input projections: torch's linear would run a CPU input with a meta weight
    check_same_device("input", input, ("weight_ih", weight_ih), ("weight_hh", weight_hh), ("weight_ic", weight_ic),
                      ("weight_ch", weight_ch), ("bias", bias), ("h0", h0), ("s0", s0))
    steps, batch = input.shape[0], input.shape[1]
    # contiguous weights: the same products, bit for bit, whatever the weights' strides
    input_proj = F.linear(input, weight_ih.contiguous(), bias)
    context_proj = F.linear(input, weight_ic.contiguous())
    if h0 is None:
        h0 = input_proj.new_zeros(batch, weight_hh.shape[0])
    if s0 is None:
        s0 = context_proj.new_zeros(batch, weight_ic.shape[0])
    if lengths is None:
        lengths = torch.full((batch,), steps, dtype=torch.int64)
    return _scrn_ops.scrn(input_proj, context_proj, h0, s0, weight_hh, weight_ch, float(alpha), lengths,
                          nonlinearity == "sigmoid")
