"""Custom ops around the attention kernels (csrc/attention).

``pyseq::additive_attention(query_proj [B, Tq, A], key_proj [B, Tk, A], v [A], value [B, Tk, Dv], mask, key_exp2x,
key_maxabs)`` (the last two: None, or factors of key_proj cached for a decoding loop, see
``pyseq.functional.project_keys``) and
``pyseq::dot_attention(query [B, Tq, D], key [B, Tk, D], value, mask, scale)`` return ``(context [B, Tq, Dv],
weights [B, Tq, Tk])``; both outputs are differentiable (the weights feed coverage and location-aware terms). mask:
None or bool ``[B, Tk]`` / ``[B, Tq, Tk]``, True = attend. The backward ops recompute the additive tanh terms.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _C


def _outputs_fake(queries, keys, value):
    B, Tq, _ = queries.shape
    return queries.new_empty(B, Tq, value.shape[2]), queries.new_empty(B, Tq, keys.shape[1])


@torch.library.custom_op("pyseq::additive_attention", mutates_args=(), device_types="cpu")
def additive_attention(
    query_proj: Tensor,
    key_proj: Tensor,
    v: Tensor,
    value: Tensor,
    mask: Optional[Tensor],
    key_exp2x: Optional[Tensor],
    key_maxabs: Optional[Tensor],
) -> tuple[Tensor, Tensor]:
    context, weights = _C.additive_attention_forward(query_proj, key_proj, v, value, mask, key_exp2x, key_maxabs)
    return context, weights


@additive_attention.register_fake
def _additive_attention_fake(query_proj, key_proj, v, value, mask, key_exp2x, key_maxabs):
    return _outputs_fake(query_proj, key_proj, value)


@torch.library.custom_op("pyseq::additive_attention_backward", mutates_args=(), device_types="cpu")
def additive_attention_backward(
    grad_context: Tensor,
    grad_weights: Optional[Tensor],
    query_proj: Tensor,
    key_proj: Tensor,
    v: Tensor,
    value: Tensor,
    weights: Tensor,
    key_exp2x: Optional[Tensor],
    key_maxabs: Optional[Tensor],
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = _C.additive_attention_backward(
        grad_context, grad_weights, query_proj, key_proj, v, value, weights, key_exp2x, key_maxabs
    )
    return g[0], g[1], g[2], g[3]


@additive_attention_backward.register_fake
def _additive_attention_backward_fake(
    grad_context, grad_weights, query_proj, key_proj, v, value, weights, key_exp2x, key_maxabs
):
    return (
        query_proj.new_empty(query_proj.shape),
        key_proj.new_empty(key_proj.shape),
        v.new_empty(v.shape),
        value.new_empty(value.shape),
    )


def _additive_setup(ctx, inputs, output):
    query_proj, key_proj, v, value, _mask, key_exp2x, key_maxabs = inputs
    ctx.save_for_backward(query_proj, key_proj, v, value, output[1], key_exp2x, key_maxabs)
    ctx.set_materialize_grads(False)


def _zero_or(grad: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad.contiguous()


def _additive_backward(ctx, grad_context, grad_weights):
    query_proj, key_proj, v, value, weights, key_exp2x, key_maxabs = ctx.saved_tensors
    if grad_context is None and grad_weights is None:
        return None, None, None, None, None, None, None
    grad_context = _zero_or(grad_context, weights.new_empty(weights.shape[0], weights.shape[1], value.shape[2]))
    g = additive_attention_backward(
        grad_context, None if grad_weights is None else grad_weights.contiguous(), query_proj, key_proj, v, value,
        weights, key_exp2x, key_maxabs,
    )
    return g[0], g[1], g[2], g[3], None, None, None


additive_attention.register_autograd(_additive_backward, setup_context=_additive_setup)


@torch.library.custom_op("pyseq::dot_attention", mutates_args=(), device_types="cpu")
def dot_attention(
    query: Tensor, key: Tensor, value: Tensor, mask: Optional[Tensor], scale: float
) -> tuple[Tensor, Tensor]:
    context, weights = _C.dot_attention_forward(query, key, value, mask, scale)
    return context, weights


@dot_attention.register_fake
def _dot_attention_fake(query, key, value, mask, scale):
    return _outputs_fake(query, key, value)


@torch.library.custom_op("pyseq::dot_attention_backward", mutates_args=(), device_types="cpu")
def dot_attention_backward(
    grad_context: Tensor,
    grad_weights: Optional[Tensor],
    query: Tensor,
    key: Tensor,
    value: Tensor,
    weights: Tensor,
    scale: float,
) -> tuple[Tensor, Tensor, Tensor]:
    g = _C.dot_attention_backward(grad_context, grad_weights, query, key, value, weights, scale)
    return g[0], g[1], g[2]


@dot_attention_backward.register_fake
def _dot_attention_backward_fake(grad_context, grad_weights, query, key, value, weights, scale):
    return query.new_empty(query.shape), key.new_empty(key.shape), value.new_empty(value.shape)


def _dot_setup(ctx, inputs, output):
    query, key, value, _mask, scale = inputs
    ctx.save_for_backward(query, key, value, output[1])
    ctx.scale = scale
    ctx.set_materialize_grads(False)


def _dot_backward(ctx, grad_context, grad_weights):
    query, key, value, weights = ctx.saved_tensors
    if grad_context is None and grad_weights is None:
        return None, None, None, None, None
    grad_context = _zero_or(grad_context, weights.new_empty(weights.shape[0], weights.shape[1], value.shape[2]))
    g = dot_attention_backward(
        grad_context, None if grad_weights is None else grad_weights.contiguous(), query, key, value, weights,
        ctx.scale,
    )
    return g[0], g[1], g[2], None, None


dot_attention.register_autograd(_dot_backward, setup_context=_dot_setup)
