"""CTC decoding and alignment (the loss is ``pyseq.functional.ctc_loss`` / ``pyseq.nn.CTCLoss``).

Batched C++ implementations: best-path (greedy) decoding and forced alignment (Viterbi over the CTC topology), plus
a helper that merges an alignment's frames into token spans.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
from torch import Tensor

from . import _C
from ._ops import ctc as _ctc_ops
from .functional._lengths import lengths_tensor

__all__ = ["greedy_decode", "beam_search", "forced_align", "merge_tokens", "Hypothesis", "NGramLM", "TokenSpan"]


def __dir__() -> list[str]:  # the public names, not the modules and types this module imports
    return sorted(__all__)


def _batched(log_probs: Tensor, input_lengths):
    if not isinstance(log_probs, Tensor) or log_probs.dim() not in (2, 3):
        dims = log_probs.dim() if isinstance(log_probs, Tensor) else type(log_probs).__name__
        raise RuntimeError(f"log_probs must be 3-D (T, N, C) or unbatched 2-D (T, C), got {dims}-D")
    if log_probs.dim() == 2:
        log_probs = log_probs.unsqueeze(1)
        input_lengths = [log_probs.shape[0]] if input_lengths is None else [int(input_lengths)]
    elif input_lengths is None:
        input_lengths = [log_probs.shape[0]] * log_probs.shape[1]
    if not torch.compiler.is_compiling() and log_probs.is_floating_point() and log_probs.isnan().any():
        # No class, path or alignment is the most likely under NaN scores (torch's argmax would pick the NaN).
        raise ValueError("log_probs holds NaN")
    return log_probs.detach(), lengths_tensor(input_lengths, "input_lengths")


def greedy_decode(log_probs: Tensor, input_lengths=None, blank: int = 0, padded: bool = False):
    """Best-path decoding: the most likely class at each frame, repeats collapsed, blanks removed.

    Args:
        log_probs: ``[T, N, C]`` (or unbatched ``[T, C]``) scores; any monotone transform of the probabilities.
        input_lengths: ``[N]`` frames per sequence (tensor or sequence of ints); all ``T`` when omitted.
        blank: the blank class.
        padded: return tensors instead of lists (for a model that decodes in its forward: torch.compile, export,
            ONNX).

    Returns:
        One list of class ids per sequence (a single list for unbatched input); with ``padded``, ``(tokens [N, T]
        int64, each sequence's classes first and -1 after them; counts [N] int64)`` (``[T]`` and a 0-d count for
        unbatched input).
    """
    unbatched = isinstance(log_probs, Tensor) and log_probs.dim() == 2
    lp, lengths = _batched(log_probs, input_lengths)
    tokens, counts = _ctc_ops.ctc_greedy_decode(lp, lengths, blank)
    if padded:
        return (tokens[0], counts[0]) if unbatched else (tokens, counts)
    out = [row[:count] for row, count in zip(tokens.tolist(), counts.tolist())]
    return out[0] if unbatched else out


@dataclasses.dataclass
class NGramLM:
    """A token-level n-gram language model for shallow fusion in :func:`beam_search` (applied inside the C++
    search).

    Args:
        order: the longest n-gram (2 for bigrams).
        log_probs: ``{(context..., token): log p}`` for n-grams of 1 to ``order`` tokens, context oldest first.
        backoffs: ``{(context...): log backoff weight}`` (ARPA semantics: a missing n-gram backs off to the shorter
            context and adds the weight of the context it left); missing contexts weigh 0.
        unk: log-prob of a token that has no unigram.
    """

    order: int
    log_probs: dict
    backoffs: dict = dataclasses.field(default_factory=dict)
    unk: float = float("-inf")

    def score(self, context, token: int) -> float:
        """log p(token | context) under the model (context: the preceding tokens, oldest first). The same
        definition the C++ search applies; here for reference and tests."""
        context = tuple(context)[-(self.order - 1) :] if self.order > 1 else ()
        backoff = 0.0
        for k in range(len(context), -1, -1):
            ngram = context[len(context) - k :] + (token,)
            if ngram in self.log_probs:
                return backoff + self.log_probs[ngram]
            if k > 0:
                backoff += self.backoffs.get(context[len(context) - k :], 0.0)
        return self.unk


class Hypothesis(NamedTuple):
    """A beam-search result: class ids and log-probability (summed over all the alignments that collapse to it)."""

    tokens: list[int]
    score: float


def _lm_tokens(key, table: str) -> list[int]:
    """An n-gram key of an NGramLM table as a list of class ids."""
    if not isinstance(key, tuple) or not all(isinstance(k, int) and not isinstance(k, bool) for k in key):
        raise TypeError(f"NGramLM.{table} keys must be tuples of int class ids, got {key!r}")
    return list(key)


def beam_search(
    log_probs: Tensor,
    input_lengths=None,
    beam_width: int = 8,
    blank: int = 0,
    nbest: int = 1,
    top_k: int = 0,
    threshold: float | None = None,
    lm: NGramLM | None = None,
    lm_weight: float = 0.5,
    insertion_bonus: float = 0.0,
) -> list[list[Hypothesis]]:
    """CTC prefix beam search, batched in C++: the ``nbest`` most likely labelings found with a beam of
    ``beam_width`` prefixes, each prefix keeping the probabilities of its alignments that end in a blank and in its
    last label (so alignments that collapse to the same prefix merge, and a repeated label needs a blank between).

    Args:
        log_probs: ``[T, N, C]`` (or unbatched ``[T, C]``) log-probabilities.
        input_lengths: ``[N]`` frames per sequence; all ``T`` when omitted.
        beam_width: prefixes kept after each frame.
        blank: the blank class.
        nbest: hypotheses returned per sequence (at most ``beam_width``).
        top_k: per-frame pruning: extend prefixes only with the ``top_k`` most likely classes (0: all).
        threshold: per-frame pruning: extend only with classes whose log-prob is at least this (None: all).
        lm, lm_weight, insertion_bonus: shallow fusion: each new token adds ``lm_weight * lm.score(prefix, token)
            + insertion_bonus`` to its prefix's score.

    Returns:
        For each sequence a list of :class:`Hypothesis` (tokens, score), best first (unbatched: one list). The score
        is the log-probability of the labeling plus, with a language model, its fusion terms.
    """
    unbatched = isinstance(log_probs, Tensor) and log_probs.dim() == 2
    lp, lengths = _batched(log_probs, input_lengths)
    if lm is None:
        ngrams, backoffs, order, unk = [], [], 0, 0.0
    else:
        ngrams = [(_lm_tokens(k, "log_probs"), float(v)) for k, v in lm.log_probs.items()]
        backoffs = [(_lm_tokens(k, "backoffs"), float(v)) for k, v in lm.backoffs.items()]
        order, unk = lm.order, float(lm.unk)
    found = _C.ctc_beam_search(lp.cpu(), lengths, beam_width, blank, nbest, top_k,
                               float("-inf") if threshold is None else float(threshold),
                               ngrams, backoffs, order, unk, float(lm_weight), float(insertion_bonus))
    out = [[Hypothesis(tokens, score) for tokens, score in hyps] for hyps in found]
    return out[0] if unbatched else out


def forced_align(log_probs: Tensor, targets: Tensor, input_lengths=None, target_lengths=None, blank: int = 0):
    """Most likely alignment of each target to its frames (Viterbi over the CTC topology), for a whole batch.

    Args:
        log_probs: ``[T, N, C]`` (or unbatched ``[T, C]``) log-probabilities.
        targets: ``[N, S]`` padded class ids (unbatched: ``[S]``), never the blank.
        input_lengths, target_lengths: ``[N]`` (tensors or sequences); all ``T`` / all ``S`` when omitted.
        blank: the blank class.

    Returns:
        ``(labels, scores)``: ``[N, T]`` int64, the class each frame is aligned to, and ``[N, T]`` its log-prob at
        that frame (unbatched: ``[T]`` each). Frames past a sequence's length hold the blank and score 0.

    Raises:
        ValueError: a target cannot be aligned to its frames (too long, or every alignment has probability 0), or
            log_probs holds NaN (as in every decoder here).
    """
    unbatched = isinstance(log_probs, Tensor) and log_probs.dim() == 2
    if unbatched:
        targets = targets.unsqueeze(0)
        if target_lengths is not None:
            target_lengths = [int(target_lengths)]
    lp, lengths = _batched(log_probs, input_lengths)
    if not isinstance(targets, Tensor) or targets.dim() != 2:
        raise RuntimeError("targets must be 2-D (N, S) padded class ids (unbatched: 1-D (S,))")
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise TypeError(f"targets must hold integer class ids, got {targets.dtype}")
    if target_lengths is None:
        target_lengths = [targets.shape[1]] * targets.shape[0]
    labels, scores = _ctc_ops.ctc_forced_align(lp, targets.to(torch.int64), lengths,
                                                lengths_tensor(target_lengths, "target_lengths"), blank)
    return (labels[0], scores[0]) if unbatched else (labels, scores)


@dataclasses.dataclass(frozen=True)
class TokenSpan:
    """A token of an alignment: ``token`` occupies frames ``[start, end)``; ``score`` is the mean of its frames'
    scores."""

    token: int
    start: int
    end: int
    score: float


def merge_tokens(tokens: Tensor, scores: Tensor, blank: int = 0) -> list[TokenSpan]:
    """Merges one sequence's frame alignment (``tokens``: the frame labels, ``scores``: ``[T]``, as from
    :func:`forced_align`; torchaudio's argument names) into token spans: runs of the same non-blank label. A repeated
    token appears as two spans (CTC separates repeats by a blank)."""
    if not isinstance(tokens, Tensor) or not isinstance(scores, Tensor):
        raise TypeError(f"tokens and scores must be tensors, got {type(tokens).__name__} and {type(scores).__name__}")
    if tokens.dim() != 1 or scores.shape != tokens.shape:
        raise ValueError(f"tokens and scores must be 1-D of the same length, got {list(tokens.shape)} and "
                         f"{list(scores.shape)}")
    labels = tokens.tolist()
    frame_scores = scores.tolist()
    spans = []
    start = 0
    for t in range(1, len(labels) + 1):
        if t == len(labels) or labels[t] != labels[start]:
            if labels[start] != blank:
                run = frame_scores[start:t]
                spans.append(TokenSpan(labels[start], start, t, sum(run) / len(run)))
            start = t
    return spans
