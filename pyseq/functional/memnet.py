"""End-to-end memory networks (pyseq.functional): Sukhbaatar, Szlam, Weston and Fergus (2015).

A story's sentences become memories by position-encoded bags of their words' embeddings; a question's embedding
attends over them in K hops, each reading a weighted sum of the memories and adding it to the question's state.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._ops import memnet as _memnet_ops

__all__ = ["position_encoding", "position_encoded_bag", "memory_hops"]


def position_encoding(words: int, dim: int, *, dtype: torch.dtype | None = None, device=None) -> Tensor:
    """The position encoding of the paper's section 4.1 as weights ``[words, dim]``: ``l[j, k] = (1 - j / J) -
    (k / d) (1 - 2 j / J)`` for word j = 1..J (J = ``words``) and element k = 1..d (d = ``dim``), so that a bag of
    words keeps their order."""
    if words < 0 or dim < 0:
        raise ValueError(f"words and dim must be non-negative, got {words} and {dim}")
    j = torch.arange(1, words + 1, dtype=torch.float64, device=device).unsqueeze(1) / max(words, 1)
    k = torch.arange(1, dim + 1, dtype=torch.float64, device=device).unsqueeze(0) / max(dim, 1)
    return ((1 - j) - k * (1 - 2 * j)).to(dtype or torch.get_default_dtype())


def position_encoded_bag(words: Tensor, weights: Tensor, lengths: Tensor | None = None,
                         table: Tensor | None = None) -> Tensor:
    """The position-encoded bags of words of sentences: ``out[..., :] = sum_{j < lengths[...]} weights[j] *
    vector(word j)``, gathered and summed in one op (no ``[..., W, D]`` tensor of word vectors with indices).

    Args:
        words: the words of each sentence, either indices ``[..., W]`` int64 into ``table`` ``[V, D]``, or their
            vectors ``[..., W, D]`` (``table`` None).
        weights: ``[W, D]``, the weight of each word position (``position_encoding(W, D)``, or learned).
        lengths: ``[...]`` int64, the words of each sentence (each in [0, W]; the words past it are ignored);
            None: every sentence has W words.

    Returns ``[..., D]``. Differentiable in ``table`` (or the word vectors) and ``weights``; the table's gradient
    sums each word's positions in a fixed order (deterministic).
    """
    if not isinstance(words, Tensor) or not isinstance(weights, Tensor):
        raise TypeError("words and weights must be tensors")
    if table is None:
        if not words.is_floating_point() or words.dim() < 2:
            raise ValueError(f"words must be indices [..., W] with a table, or word vectors [..., W, D] (floating), "
                             f"got {words.dim()}-D {words.dtype} without a table")
        lead, W, D = words.shape[:-2], words.shape[-2], words.shape[-1]
        table = words.reshape(-1, D)
        indices = torch.arange(table.shape[0], device=words.device).view(-1, W)
    else:
        if words.dtype != torch.int64 or words.dim() < 1:
            raise TypeError(f"words must be int64 indices [..., W] with a table, got {words.dim()}-D {words.dtype}")
        lead, W = words.shape[:-1], words.shape[-1]
        indices = words.reshape(-1, W)
    if lengths is None:
        lengths = torch.full(lead, W, dtype=torch.int64, device=indices.device)
    elif not isinstance(lengths, Tensor) or lengths.shape != lead:
        raise ValueError(f"lengths must be a tensor of shape {list(lead)} (one per sentence), got "
                         f"{list(lengths.shape) if isinstance(lengths, Tensor) else type(lengths).__name__}")
    out = _memnet_ops.position_encoded_bag(table, indices, weights, lengths.reshape(-1))
    return out.view(*lead, out.shape[-1])


def memory_hops(u: Tensor, memory_in: Tensor, memory_out: Tensor, mask: Tensor | None = None, hops: int = 1,
                H: Tensor | None = None, softmax: bool = True) -> tuple[Tensor, Tensor]:
    """K hops of attention over memories, fused in one op (scores, masked softmax, weighted read, update; the
    backward too). Per hop k: ``p = softmax(memory_in[k] u_k)`` over the sentences the mask keeps,
    ``o = p memory_out[k]``, ``u_{k+1} = H u_k + o`` (``u_k + o`` without H).

    Args:
        u: ``[B, D]``, the question's embedding u_0.
        memory_in, memory_out: ``[B, S, D]`` (the same memories every hop: layer-wise tying) or ``[K, B, S, D]`` (one
            pair per hop: adjacent tying, where memory_out of hop k is memory_in of hop k + 1).
        mask: ``[B, S]`` bool, True where a sentence is there; None: every sentence. A batch entry with no sentence
            reads nothing (zero weights).
        hops: K >= 1.
        H: ``[D, D]`` or None.
        softmax: False: the weights are the scores themselves (0 where the mask drops a sentence), the paper's
            linear start, with which training begins before the softmax is put back.

    Returns ``(u_K [B, D], weights [K, B, S])``: the state after the last hop (the answer layer's input) and every
    hop's attention weights. Differentiable in u, both memories, H and through the weights.
    """
    if not isinstance(u, Tensor) or not isinstance(memory_in, Tensor) or not isinstance(memory_out, Tensor):
        raise TypeError("u, memory_in and memory_out must be tensors")
    if isinstance(hops, bool) or not isinstance(hops, int):
        raise TypeError(f"hops must be an int, got {type(hops).__name__}")
    states, weights = _memnet_ops.memory_hops(u, memory_in, memory_out, mask, hops, H, bool(softmax))
    return states[-1], weights
