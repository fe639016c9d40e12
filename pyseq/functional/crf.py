"""Linear-chain CRF (pyseq.functional).

Shapes: emissions [B, T, K] (batch-major; a time-major tensor may be passed as .transpose(0, 1) and is read in
place), tags [B, T] int64, lengths [B] (each sequence covers steps 0 .. lengths[b] - 1; all T when omitted) or,
in its place, a mask [B, T] (bool or uint8) that is a prefix in each row: ones, then zeros,
transitions [K, K] (transitions[i, j] scores tag i followed by tag j), start_transitions and end_transitions [K].
The score of a path y of length L >= 1 is start[y_0] + sum_t emissions[t, y_t] + sum_{t>=1} transitions[y_{t-1},
y_t] + end[y_{L-1}]; a sequence of length 0 has one path, the empty one, with score 0. A score of -inf forbids a
tag or transition (pyseq.crf.apply_constraints writes constraints this way), exactly: a sequence with no allowed
path has log Z = -inf and no Viterbi path.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._ops import crf as _crf_ops
from ._lengths import lengths_tensor

__all__ = ["crf_log_partition", "crf_score", "crf_log_likelihood", "crf_marginals", "crf_viterbi", "crf_hinge_loss",
           "hmm_viterbi"]


def _crf_inputs(emissions: Tensor, transitions: Tensor, start: Tensor, end: Tensor, lengths):
    if not isinstance(emissions, Tensor) or emissions.dim() != 3:
        dims = emissions.dim() if isinstance(emissions, Tensor) else type(emissions).__name__
        raise ValueError(f"emissions must have dimension of 3 (batch, seq_length, num_tags), got {dims}")
    B, T, K = emissions.shape
    for name, t, shape in (
        ("transitions", transitions, (K, K)),
        ("start_transitions", start, (K,)),
        ("end_transitions", end, (K,)),
    ):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} for num_tags = {K}, got {tuple(t.shape)}")
    if emissions.stride(2) != 1:
        emissions = emissions.contiguous()
    if lengths is None:
        lengths = torch.full((B,), T, dtype=torch.int64)
    elif isinstance(lengths, Tensor) and lengths.dim() == 2:  # a [B, T] prefix mask goes to the kernels (bool)
        lengths = crf_mask_lengths(lengths)
    else:
        lengths = lengths_tensor(lengths, "lengths")
    return emissions, lengths


def _crf_tags(tags: Tensor, emissions: Tensor) -> Tensor:
    if not isinstance(tags, Tensor) or tags.shape != emissions.shape[:2]:
        shape = tuple(tags.shape) if isinstance(tags, Tensor) else type(tags).__name__
        raise ValueError(
            f"the first two dimensions of emissions and tags must match, got {tuple(emissions.shape[:2])} and {shape}"
        )
    if tags.dtype != torch.int64:
        if tags.dtype.is_floating_point or tags.dtype.is_complex or tags.dtype == torch.bool:
            raise TypeError(f"tags must hold integer tag ids, got {tags.dtype}")
        tags = tags.long()
    return tags


def crf_mask_lengths(mask: Tensor) -> Tensor:
    """A [B, T] mask of bool or any integer dtype as bool (nonzero = on)."""
    if mask.dtype == torch.bool:
        return mask
    if mask.dtype.is_floating_point or mask.dtype.is_complex:
        raise TypeError(f"mask must be bool or an integer dtype, got {mask.dtype}")
    return mask != 0


def crf_log_partition(
    emissions: Tensor, transitions: Tensor, start_transitions: Tensor, end_transitions: Tensor, lengths=None
) -> Tensor:
    """log Z: the log of the summed exponentiated scores of all tag paths, ``[B]``, by the forward algorithm.

    Differentiable: the gradient is the tag and transition marginals, computed by the backward recursion in C++.
    """
    emissions, lengths = _crf_inputs(emissions, transitions, start_transitions, end_transitions, lengths)
    log_z = _crf_ops.crf_log_partition(emissions, lengths, start_transitions, end_transitions, transitions)[0]
    return log_z


def crf_score(
    emissions: Tensor,
    tags: Tensor,
    transitions: Tensor,
    start_transitions: Tensor,
    end_transitions: Tensor,
    lengths=None,
) -> Tensor:
    """The score of the tag path ``tags [B, T]`` of each sequence, ``[B]`` (differentiable). Tags past a sequence's
    length are ignored; within it they must lie in ``[0, K)``."""
    emissions, lengths = _crf_inputs(emissions, transitions, start_transitions, end_transitions, lengths)
    tags = _crf_tags(tags, emissions)
    return _crf_ops.crf_path_score(emissions, tags, lengths, start_transitions, end_transitions, transitions)


def crf_log_likelihood(
    emissions: Tensor,
    tags: Tensor,
    transitions: Tensor,
    start_transitions: Tensor,
    end_transitions: Tensor,
    lengths=None,
) -> Tensor:
    """log P(tags | emissions) = score(tags) - log Z, ``[B]``, in one op whose backward writes the path indicators
    minus the marginals in one pass. A forbidden tag path gets -inf (and no gradient)."""
    emissions, lengths = _crf_inputs(emissions, transitions, start_transitions, end_transitions, lengths)
    tags = _crf_tags(tags, emissions)
    llh, _, _ = _crf_ops.crf_log_likelihood(
        emissions, tags, lengths, start_transitions, end_transitions, transitions
    )
    return llh


def crf_marginals(
    emissions: Tensor, transitions: Tensor, start_transitions: Tensor, end_transitions: Tensor, lengths=None
) -> Tensor:
    """Tag marginals ``P(y_t = k | x)``: ``[B, T, K]``, zero past each length and for sequences with no allowed path.
    Not differentiable (backward through it raises)."""
    emissions, lengths = _crf_inputs(emissions, transitions, start_transitions, end_transitions, lengths)
    return _crf_ops.crf_marginals(emissions, lengths, start_transitions, end_transitions, transitions)


def crf_viterbi(
    emissions: Tensor,
    transitions: Tensor,
    start_transitions: Tensor,
    end_transitions: Tensor,
    lengths=None,
    nbest: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Viterbi decoding in C++.

    Returns ``(tags [B, T] int64, scores [B])`` for ``nbest=None``, or ``(tags [B, nbest, T], scores [B, nbest])``
    holding the ``nbest`` highest-scoring distinct paths, best first. Tags past a sequence's length are -1; a rank
    beyond the number of allowed paths (or a sequence with none) has tags -1 and score -inf. Not differentiable
    (``crf_score`` of the decoded tags is).
    """
    emissions, lengths = _crf_inputs(emissions, transitions, start_transitions, end_transitions, lengths)
    k = 1 if nbest is None else nbest
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"nbest must be a positive integer, got {nbest!r}")
    paths, scores = _crf_ops.crf_viterbi(
        emissions.detach(), lengths, start_transitions.detach(), end_transitions.detach(), transitions.detach(), k
    )
    if nbest is None:
        return paths[:, 0], scores[:, 0]
    return paths, scores


def crf_hinge_loss(
    emissions: Tensor,
    tags: Tensor,
    transitions: Tensor,
    start_transitions: Tensor,
    end_transitions: Tensor,
    lengths=None,
    cost: float = 1.0,
) -> Tensor:
    """Structured-SVM (margin-rescaled) loss, ``[B]``: ``max_y [score(y) + cost * hamming(y, tags)] - score(tags)``.

    The maximum is found by cost-augmented Viterbi (``cost`` added to every non-gold tag's emission); the loss is
    >= 0, and zero once the gold path beats every other path by a margin of ``cost`` per wrong tag. Its (sub)gradient
    flows through the two path scores. A forbidden gold path gives +inf; a NaN among the scores a sequence reads, NaN.
    """
    emissions, lengths = _crf_inputs(emissions, transitions, start_transitions, end_transitions, lengths)
    tags = _crf_tags(tags, emissions)
    B, T, K = emissions.shape
    valid = lengths.bool() if lengths.dim() == 2 else torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)  # [B, T]
    gold = tags.masked_fill(~valid, 0)
    args = (lengths, start_transitions, end_transitions, transitions)
    gold_score = _crf_ops.crf_path_score(emissions, gold, *args)  # also checks the tags against [0, K)
    with torch.no_grad():
        wrong_tag = torch.ones_like(emissions, dtype=torch.bool).scatter_(2, gold.unsqueeze(2), False)
        augmented = emissions.detach() + cost * (wrong_tag & valid.unsqueeze(2)).to(emissions.dtype)
        best, best_scores = crf_viterbi(augmented, transitions, start_transitions, end_transitions, lengths)
        hamming = ((best != gold) & valid).sum(1).to(emissions.dtype)
    best_score = _crf_ops.crf_path_score(emissions, best.clamp(min=0), *args)
    loss = best_score + cost * hamming - gold_score
    loss = torch.where(best_scores.isnan(), best_scores, loss)  # a NaN score makes the maximum NaN
    return torch.where(best_scores == float("-inf"), torch.full_like(loss, float("inf")), loss)


def hmm_viterbi(
    log_posteriors: Tensor,
    log_transitions: Tensor,
    log_initial: Tensor,
    log_priors: Tensor | None = None,
    prior_scale: float = 1.0,
    lengths=None,
) -> tuple[Tensor, Tensor]:
    """Viterbi for hybrid DNN-HMM decoding: the best state sequence under the scaled likelihoods
    ``log P(state | x) - prior_scale * log P(state)``.

    Args:
        log_posteriors: ``[B, T, S]`` the network's state log-posteriors.
        log_transitions: ``[S, S]`` ``log P(s_t = j | s_{t-1} = i)``; log_initial: ``[S]``.
        log_priors: ``[S]`` log state priors (omit to decode the posteriors as they are).
        lengths: ``[B]`` frames per sequence.

    Returns ``(states [B, T] int64, -1 past each length; scores [B])``.
    """
    emissions = log_posteriors if log_priors is None else log_posteriors - prior_scale * log_priors
    final = log_initial.new_zeros(log_initial.shape)
    return crf_viterbi(emissions, log_transitions, log_initial, final, lengths)
