"""Neural Turing Machine memory (pyseq.functional).

Shapes: memory [B, N, M] (N rows of width M), H heads per call. Graves, Wayne and Danihelka (2014), equations 3-9.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._ops import ntm as _ntm_ops
from .._ops.checks import check_same_device

__all__ = ["ntm_address", "ntm_read", "ntm_step", "ntm_write"]


def ntm_address(memory: Tensor, key: Tensor, beta: Tensor, gate: Tensor, shift: Tensor, gamma: Tensor,
                prev_weights: Tensor) -> Tensor:
    """The addressing of H heads, fused per head: content weights by cosine similarity sharpened by a key strength,
    interpolation with the previous weights, circular shift, sharpening.

    Args:
        memory: ``[B, N, M]``. key: ``[B, H, M]``. beta (key strength, > 0), gate (in [0, 1]), gamma (>= 1):
            ``[B, H]``. shift: ``[B, H, S]``, a distribution over S = 2r + 1 shifts, centred: index s moves weight by
            s - r rows, circularly. prev_weights: ``[B, H, N]``.

    Returns the weights ``[B, H, N]``: ``w_c = softmax(beta * K(key, memory rows))`` with ``K`` the cosine similarity
    of ``torch.nn.functional.cosine_similarity`` (eps 1e-8), ``w_g = gate w_c + (1 - gate) prev_weights``,
    ``w_s[i] = sum_s shift[s] w_g[(i - s + r) mod N]``, ``w = w_s^gamma / sum(w_s^gamma)`` (computed as
    ``(w_s / max w_s)^gamma``, normalized: the same weights without the underflow to 0 / 0 of ``w_s^gamma`` in
    float32 for flat weights and a large gamma). Differentiable in every input.
    """
    return _ntm_ops.ntm_address(memory, key, beta, gate, shift, gamma, prev_weights)


def ntm_read(memory: Tensor, weights: Tensor) -> Tensor:
    """The read vectors of H heads: ``weights [B, H, N] @ memory [B, N, M] -> [B, H, M]`` (a batched GEMM)."""
    check_same_device("memory", memory, ("weights", weights))  # torch.bmm lets a meta tensor and a CPU one mix
    return torch.bmm(weights, memory)


def ntm_step(memory: Tensor, params: Tensor, prev_weights: Tensor, read_heads: int,
             write_heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """One step of an NTM's heads in one op (what ``pyseq.nn.NTM`` runs per time step): the activations of the heads'
    parameters as a controller's linear layer emits them, the addressing of every head against the memory as it is
    at the start of the step, the read heads' reads, then the write heads' writes in turn. One autograd node per
    step instead of the two dozen small ops of the same written in Python.

    Args:
        memory: ``[B, N, M]``. prev_weights: ``[B, R + W, N]``, read heads first.
        params: ``[B, (R + W) (M + 3 + S) + W 2 M]``: for each head (read heads first) its key (M), key strength
            (softplus of the entry), gate (sigmoid), sharpening (1 + softplus) and S shift logits (softmax; S odd);
            then for each write head its erase vector (sigmoid, M) and add vector (tanh, M).
        read_heads, write_heads: R >= 0 and W >= 0, at least one head.

    Returns ``(weights [B, R + W, N], reads [B, R, M], memory [B, N, M])``: the new weights of every head, the read
    vectors (``ntm_read``), and the memory after the writes (``ntm_write`` of each write head in turn). Differentiable
    in memory, params and prev_weights.
    """
    return _ntm_ops.ntm_step(memory, params, prev_weights, read_heads, write_heads)


def ntm_write(memory: Tensor, weights: Tensor, erase: Tensor, add: Tensor) -> Tensor:
    """One write head, erase then add, in one pass over the memory: ``memory * (1 - weights erase^T) + weights
    add^T``. memory ``[B, N, M]``, weights ``[B, N]``, erase (in [0, 1]) and add ``[B, M]``; returns the new memory
    ``[B, N, M]`` (the input is not modified). Differentiable in every input."""
    return _ntm_ops.ntm_write(memory, weights, erase, add)
