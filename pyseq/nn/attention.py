"""Attention modules for sequence-to-sequence models, on pyseq's fused kernels (pyseq.functional.additive_attention,
dot_attention)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import functional as F
from ._torchscript import NotScriptable


class AdditiveAttention(NotScriptable, nn.Module):
    """Additive (Bahdanau) attention: ``e_ij = v . tanh(W_q q_i + W_k k_j + b)``, masked softmax, context.

    Args:
        query_size, key_size: feature sizes of the queries (decoder states) and keys (encoder states).
        attn_size: ``A``, the size of the projections.
        bias: learn ``b [A]``.

    ``forward(query, key, value=None, mask=None, return_weights=False)``: query ``[B, Tq, query_size]`` (all
    queries at once, e.g. teacher forcing) or ``[B, query_size]`` (one decoder step), key ``[B, Tk, key_size]``,
    value ``[B, Tk, Dv]`` (the keys when omitted), mask bool ``[B, Tk]`` or ``[B, Tq, Tk]`` (True = attend).
    Returns ``(context [B, Tq, Dv], weights [B, Tq, Tk] or None)`` (``[B, Dv]``, ``[B, Tk]`` for one step). A query
    whose keys are all masked gets zero weights and a zero context. ``project_keys(key)`` computes ``W_k k + b`` and
    the factors of its tanh terms once for a whole decoding loop; pass it back as ``key_proj=``.
    """

    def __init__(self, query_size: int, key_size: int, attn_size: int, bias: bool = True):
        super().__init__()
        self.W_q = nn.Linear(query_size, attn_size, bias=False)
        self.W_k = nn.Linear(key_size, attn_size, bias=False)
        self.v = nn.Parameter(torch.empty(attn_size))
        self.b = nn.Parameter(torch.zeros(attn_size)) if bias else None
        bound = 1.0 / math.sqrt(attn_size)
        nn.init.uniform_(self.v, -bound, bound)

    def project_keys(self, key: Tensor) -> F.ProjectedKeys:
        """``W_k key + b`` (``.proj``: ``[B, Tk, attn_size]``) with the factors of its tanh terms."""
        return F.project_keys(self._key_proj(key))

    def _key_proj(self, key: Tensor) -> Tensor:
        key_proj = self.W_k(key)
        return key_proj if self.b is None else key_proj + self.b

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor | None = None,
        mask: Tensor | None = None,
        return_weights: bool = False,
        key_proj: Tensor | F.ProjectedKeys | None = None,
    ):
        key_proj = self._key_proj(key) if key_proj is None else key_proj
        value = key if value is None else value
        return F.additive_attention(self.W_q(query), key_proj, self.v, value, mask, return_weights)


class DotAttention(NotScriptable, nn.Module):
    """Luong attention with dot-product scores.

    Args:
        query_size, key_size: feature sizes (needed for ``score='general'``).
        score: ``'dot'`` (``q . k``), ``'scaled'`` (``q . k / sqrt(D)``) or ``'general'`` (``q W . k``, with a
            learned ``W [key_size, query_size]``).

    ``forward(query, key, value=None, mask=None, return_weights=False)`` with the shapes of
    :class:`AdditiveAttention`.
    """

    def __init__(self, query_size: int | None = None, key_size: int | None = None, score: str = "dot"):
        super().__init__()
        if score not in ("dot", "scaled", "general"):
            raise ValueError(f"score must be 'dot', 'scaled' or 'general', got {score!r}")
        self.score = score
        if score == "general":
            if query_size is None or key_size is None:
                raise ValueError("score='general' needs query_size and key_size")
            self.W = nn.Linear(query_size, key_size, bias=False)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor | None = None,
        mask: Tensor | None = None,
        return_weights: bool = False,
    ):
        value = key if value is None else value
        if self.score == "general":
            query = self.W(query)
        scale = None if self.score == "scaled" else 1.0
        return F.dot_attention(query, key, value, mask, scale, return_weights)


class LocationAwareAttention(NotScriptable, nn.Module):
    """Location-aware attention (Chorowski et al. 2015; Tacotron 2): the additive score plus a convolutional feature
    of the previous step's weights, ``e_j = v . tanh(W_q q + W_k k_j + U (F * w_prev)_j + b)``, on the fused additive
    kernel.

    Args:
        query_size, key_size, attn_size: as in :class:`AdditiveAttention`.
        channels: filters of the location convolution; kernel_size: its width (odd, "same" padding).
        in_channels: rows of ``prev_weights``: 1 (the previous weights) or, as in Tacotron 2, 2 (previous and
            cumulative weights).

    ``forward(query, key, prev_weights, value=None, mask=None, key_proj=None)`` runs one decoder step (each step's
    scores depend on the previous step's weights): query ``[B, query_size]``, key ``[B, Tk, key_size]``,
    prev_weights ``[B, Tk]`` or ``[B, in_channels, Tk]``. Returns ``(context [B, Dv], weights [B, Tk])``.
    """

    def __init__(
        self,
        query_size: int,
        key_size: int,
        attn_size: int,
        channels: int = 32,
        kernel_size: int = 31,
        in_channels: int = 1,
        bias: bool = True,
    ):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.attention = AdditiveAttention(query_size, key_size, attn_size, bias)
        self.location_conv = nn.Conv1d(in_channels, channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.location_proj = nn.Linear(channels, attn_size, bias=False)

    def project_keys(self, key: Tensor) -> Tensor:
        """``W_k key + b``: ``[B, Tk, attn_size]``, to reuse across decoder steps as ``key_proj=`` (the location term
        changes every step, so no tanh factors are cached here)."""
        return self.attention._key_proj(key)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        prev_weights: Tensor,
        value: Tensor | None = None,
        mask: Tensor | None = None,
        key_proj: Tensor | None = None,
    ):
        if query.dim() != 2:
            raise ValueError(f"query must be 2-D (batch, query_size): one decoder step at a time, got {query.dim()}-D")
        if prev_weights.dim() == 2:
            prev_weights = prev_weights.unsqueeze(1)
        key_proj = self.attention._key_proj(key) if key_proj is None else key_proj
        location = self.location_proj(self.location_conv(prev_weights).transpose(1, 2))  # [B, Tk, attn_size]
        value = key if value is None else value
        return F.additive_attention(
            self.attention.W_q(query), key_proj + location, self.attention.v, value, mask, return_weights=True
        )
