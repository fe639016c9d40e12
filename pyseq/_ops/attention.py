"""Custom ops around the attention kernels (csrc/attention).

``pyseq::additive_attention(query_proj [B, Tq, A], key_proj [B, Tk, A], v [A], value [B, Tk, Dv], mask, key_exp2x,
key_maxabs)`` (the last two: None, or factors of key_proj cached for a decoding loop, see
``pyseq.functional.project_keys``) and
``pyseq::dot_attention(query [B, Tq, D], key [B, Tk, D], value, mask, scale)`` return ``(context [B, Tq, Dv],
weights [B, Tq, Tk])``; both outputs are differentiable (the weights feed coverage and location-aware terms). mask:
None or bool ``[B, Tk]`` / ``[B, Tq, Tk]``, True = attend. The backward ops recompute the additive tanh terms.
"""

from __future__ import annotations

import torch

from .checks import check_same_device

# The four ops are registered in C++ with their autograd kernels (csrc/attention/attention_ops.cpp: a decoder step
# calls attention once per output token, and a Python wrapper's per-call cost was 5-20% of a step); their fake
# kernels are here.
additive_attention = torch.ops.pyseq.additive_attention
dot_attention = torch.ops.pyseq.dot_attention


def _contiguous_like(t):
    """A gradient as the kernels return it: contiguous, whatever the strides of the input it belongs to."""
    return t.new_empty(t.shape)


def _outputs_fake(queries, keys, value):
    B, Tq, _ = queries.shape
    return queries.new_empty(B, Tq, value.shape[2]), queries.new_empty(B, Tq, keys.shape[1])


@torch.library.register_fake("pyseq::additive_attention")
def _additive_attention_fake(query_proj, key_proj, v, value, mask, key_exp2x, key_maxabs):
    check_same_device(
        "query_proj", query_proj, ("key_proj", key_proj), ("v", v), ("value", value), ("mask", mask),
        ("key_exp2x", key_exp2x), ("key_maxabs", key_maxabs),
    )
    return _outputs_fake(query_proj, key_proj, value)


@torch.library.register_fake("pyseq::additive_attention_backward")
def _additive_attention_backward_fake(
    grad_context, grad_weights, query_proj, key_proj, v, value, weights, key_exp2x, key_maxabs
):
    check_same_device(
        "query_proj", query_proj, ("grad_context", grad_context), ("grad_weights", grad_weights),
        ("key_proj", key_proj), ("v", v), ("value", value), ("weights", weights), ("key_exp2x", key_exp2x),
        ("key_maxabs", key_maxabs),
    )
    return _contiguous_like(query_proj), _contiguous_like(key_proj), _contiguous_like(v), _contiguous_like(value)


@torch.library.register_fake("pyseq::dot_attention")
def _dot_attention_fake(query, key, value, mask, scale):
    check_same_device("query", query, ("key", key), ("value", value), ("mask", mask))
    return _outputs_fake(query, key, value)


@torch.library.register_fake("pyseq::dot_attention_backward")
def _dot_attention_backward_fake(grad_context, grad_weights, query, key, value, weights, scale):
    check_same_device(
        "query", query, ("grad_context", grad_context), ("grad_weights", grad_weights), ("key", key),
        ("value", value), ("weights", weights),
    )
    return _contiguous_like(query), _contiguous_like(key), _contiguous_like(value)
