"""Attention (pyseq.functional).

Queries [B, Tq, *] (or [B, *] for one decoder step: the outputs then drop the Tq dimension too), keys [B, Tk, *],
value [B, Tk, Dv]; mask None or bool [B, Tk] / [B, Tq, Tk], True = attend. A query whose keys are all masked gets
zero weights and a zero context (and zero gradients), never NaN. Returns (context [B, Tq, Dv], weights [B, Tq, Tk]
or None); the weights are differentiable when returned.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .._ops import attention as _attention_ops

__all__ = ["additive_attention", "dot_attention", "project_keys", "ProjectedKeys"]


def _attention_inputs(query: Tensor, key: Tensor, value: Tensor, mask, names: tuple[str, str]):
    for name, t in ((names[0], query), (names[1], key), ("value", value)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if key.dim() != 3:
        raise ValueError(f"{names[1]} must be 3-D (batch, key_len, features), got {key.dim()}-D")
    step = query.dim() == 2
    if query.dim() not in (2, 3):
        raise ValueError(
            f"{names[0]} must be 3-D (batch, query_len, features) or 2-D (batch, features), got {query.dim()}-D"
        )
    if step:
        query = query.unsqueeze(1)
        if mask is not None and mask.dim() == 3:
            raise ValueError(f"mask must be 2-D (batch, key_len) for a 2-D {names[0]}, got 3-D")
    if mask is not None and (not isinstance(mask, Tensor) or mask.dtype != torch.bool):
        raise TypeError(f"mask must be a bool tensor (True = attend), got {getattr(mask, 'dtype', type(mask))}")
    return query, step


def _attention_outputs(context: Tensor, weights: Tensor, step: bool, return_weights: bool):
    if step:
        context, weights = context.squeeze(1), weights.squeeze(1)
    # A traced function cannot return None: under torch.jit.trace the weights come back whatever return_weights says.
    return context, (weights if return_weights or torch.jit.is_tracing() else None)


class ProjectedKeys(NamedTuple):
    """Projected keys for additive attention with the factors of their tanh terms, computed once for a decoding
    loop by :func:`project_keys` (pass it as ``key_proj``): every later call then spends a multiply, an add and a
    division per (query, key, feature) term instead of a tanh. ``proj [B, Tk, A]`` carries the gradient."""

    proj: Tensor
    exp2x: Tensor  # exp(2 proj), arguments clamped to +-40 (factors used only where |proj| <= 40)
    maxabs: Tensor  # max |proj| over A: [B, Tk]


def project_keys(key_proj: Tensor) -> ProjectedKeys:
    """Caches the tanh factors of projected keys ``[B, Tk, A]`` for repeated :func:`additive_attention` calls."""
    if not isinstance(key_proj, Tensor) or key_proj.dim() != 3:
        raise ValueError(f"key_proj must be a 3-D tensor (batch, key_len, attn_size), got {key_proj!r:.60}")
    with torch.no_grad():
        exp2x = torch.exp(2 * key_proj.clamp(-40, 40))
        maxabs = key_proj.abs().amax(-1) if key_proj.shape[-1] else key_proj.new_zeros(key_proj.shape[:2])
    return ProjectedKeys(key_proj, exp2x, maxabs)


def additive_attention(
    query_proj: Tensor,
    key_proj: Tensor,
    v: Tensor,
    value: Tensor,
    mask: Tensor | None = None,
    return_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Additive (Bahdanau) attention, fused: scores ``e_ij = v . tanh(query_proj_i + key_proj_j)``, masked softmax
    over the keys, context ``sum_j w_ij value_j``, without the ``[B, Tq, Tk, A]`` tensor a composition of torch
    ops builds (the backward recomputes the tanh terms).

    Args:
        query_proj: ``[B, Tq, A]`` projected queries (``W_q q``), or ``[B, A]`` for one decoder step.
        key_proj: ``[B, Tk, A]`` projected keys (``W_k k + b``), or :class:`ProjectedKeys` from
            :func:`project_keys` (decoding loops: the keys' tanh factors computed once).
        v: ``[A]`` the score vector.
        value: ``[B, Tk, Dv]``.
        mask: None, or bool ``[B, Tk]`` / ``[B, Tq, Tk]``, True = attend.
        return_weights: also return the attention weights ``[B, Tq, Tk]`` (otherwise None; always under
            ``torch.jit.trace``, whose traced functions cannot return None).
    """
    keys = key_proj if isinstance(key_proj, ProjectedKeys) else ProjectedKeys(key_proj, None, None)
    query_proj, step = _attention_inputs(query_proj, keys.proj, value, mask, ("query_proj", "key_proj"))
    context, weights = _attention_ops.additive_attention(query_proj, keys.proj, v, value, mask, keys.exp2x,
                                                         keys.maxabs)
    return _attention_outputs(context, weights, step, return_weights)


def dot_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None = None,
    scale: float | None = None,
    return_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Dot-product (Luong) attention: scores ``scale * query_i . key_j``, masked softmax, context.

    Args:
        query: ``[B, Tq, D]`` (or ``[B, D]`` for one decoder step); key: ``[B, Tk, D]``; value: ``[B, Tk, Dv]``.
        mask: None, or bool ``[B, Tk]`` / ``[B, Tq, Tk]``, True = attend.
        scale: the score scale; ``None`` gives ``1 / sqrt(D)`` (``scaled_dot_product_attention``'s default), 1.0
            plain dot-product scores.
        return_weights: also return the attention weights ``[B, Tq, Tk]`` (otherwise None; always under
            ``torch.jit.trace``, whose traced functions cannot return None).
    """
    query, step = _attention_inputs(query, key, value, mask, ("query", "key"))
    if scale is None:
        if query.shape[-1] == 0:
            raise ValueError("query must have at least one feature for the default scale 1 / sqrt(D), got D = 0")
        scale = 1.0 / math.sqrt(query.shape[-1])
    context, weights = _attention_ops.dot_attention(query, key, value, mask, float(scale))
    return _attention_outputs(context, weights, step, return_weights)
