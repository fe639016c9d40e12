"""Linear-chain CRF module, a drop-in for pytorch-crf's ``torchcrf.CRF`` with its dynamic programs in C++."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import functional as F
from ..functional.crf import crf_mask_lengths
from ..crf import TransitionConstraints, apply_constraints
from ._torchscript import NotScriptable


def _check_reduction(reduction: str) -> None:
    if reduction not in ("none", "sum", "mean", "token_mean"):
        raise ValueError(f"invalid reduction: {reduction}")


def _reduce(values: Tensor, reduction: str, emissions: Tensor, mask: Tensor | None) -> Tensor:
    """Per-sequence values [B] reduced as pytorch-crf does; token_mean divides by the unmasked tokens."""
    if reduction == "none":
        return values
    if reduction == "sum":
        return values.sum()
    if reduction == "mean":
        return values.mean()
    tokens = emissions.shape[0] * emissions.shape[1] if mask is None else mask.sum().to(values.dtype)
    return values.sum() / tokens


class CRF(NotScriptable, nn.Module):
    """Conditional random field over tag sequences: ``pytorch-crf``'s ``CRF`` with the same parameters
    (``start_transitions [K]``, ``end_transitions [K]``, ``transitions [K, K]``, initialized the same way),
    ``forward`` (log-likelihood) and ``decode`` (list of tag lists), plus k-best decoding, a tensor Viterbi, tag
    marginals, transition constraints and a structured-SVM loss.

    Args:
        num_tags: number of tags ``K``.
        batch_first: inputs are ``(batch, seq_length, ...)`` instead of ``(seq_length, batch, ...)``.
        constraints: optional :class:`pyseq.crf.TransitionConstraints` (for example from
            :func:`pyseq.crf.allowed_transitions`); forbidden transitions get probability 0 in training and are
            never decoded. Construction raises ``ValueError`` when the constraints allow no path at all; a
            sequence whose length admits no allowed path gets log Z = -inf (log-likelihood -inf) and no decode.

    Masks: ``mask (seq_length, batch)`` (or ``(batch, seq_length)`` with ``batch_first``), bool or any integer dtype
    (nonzero = on), must be a prefix per sequence (ones, then zeros). Unlike pytorch-crf, a sequence may be empty
    (all zeros, including the first step): it has one path, the empty one, with score 0, so its log-likelihood is 0
    and it decodes to ``[]``.
    """

    def __init__(self, num_tags: int, batch_first: bool = False, constraints: TransitionConstraints | None = None):
        if num_tags <= 0:
            raise ValueError(f"invalid number of tags: {num_tags}")
        super().__init__()
        self.num_tags = num_tags
        self.batch_first = batch_first
        self.start_transitions = nn.Parameter(torch.empty(num_tags))
        self.end_transitions = nn.Parameter(torch.empty(num_tags))
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
        if constraints is not None:
            constraints = TransitionConstraints(*constraints).check(num_tags)
            # Not persistent: the state_dict keeps pytorch-crf's three keys.
            self.register_buffer("allowed_start", constraints.start, persistent=False)
            self.register_buffer("allowed_end", constraints.end, persistent=False)
            self.register_buffer("allowed_transitions", constraints.transitions, persistent=False)
        self.constrained = constraints is not None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform in [-0.1, 0.1], in pytorch-crf's order (the same seed gives the same parameters)."""
        nn.init.uniform_(self.start_transitions, -0.1, 0.1)
        nn.init.uniform_(self.end_transitions, -0.1, 0.1)
        nn.init.uniform_(self.transitions, -0.1, 0.1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_tags={self.num_tags})"

    def scores(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(transitions, start_transitions, end_transitions)`` with the constraints applied (-inf where forbidden)."""
        if not self.constrained:
            return self.transitions, self.start_transitions, self.end_transitions
        allowed = TransitionConstraints(self.allowed_start, self.allowed_end, self.allowed_transitions)
        return apply_constraints(self.transitions, self.start_transitions, self.end_transitions, allowed)

    def _inputs(self, emissions: Tensor, tags: Tensor | None = None, mask: Tensor | None = None):
        """Validates like pytorch-crf and returns batch-major views of emissions, tags and mask."""
        if not isinstance(emissions, Tensor) or emissions.dim() != 3:
            dims = emissions.dim() if isinstance(emissions, Tensor) else type(emissions).__name__
            raise ValueError(f"emissions must have dimension of 3, got {dims}")
        if emissions.size(2) != self.num_tags:
            raise ValueError(f"expected last dimension of emissions is {self.num_tags}, got {emissions.size(2)}")
        if tags is not None and (not isinstance(tags, Tensor) or emissions.shape[:2] != tags.shape):
            shape = tuple(tags.shape) if isinstance(tags, Tensor) else type(tags).__name__
            raise ValueError(
                "the first two dimensions of emissions and tags must match, "
                f"got {tuple(emissions.shape[:2])} and {shape}"
            )
        if mask is not None:
            if not isinstance(mask, Tensor) or emissions.shape[:2] != mask.shape:
                shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
                raise ValueError(
                    "the first two dimensions of emissions and mask must match, "
                    f"got {tuple(emissions.shape[:2])} and {shape}"
                )
        if not self.batch_first:
            emissions = emissions.transpose(0, 1)
            tags = None if tags is None else tags.transpose(0, 1)
            mask = None if mask is None else mask.transpose(0, 1)
        if mask is None:
            return emissions, tags, None
        return emissions, tags, crf_mask_lengths(mask)  # the kernels take the prefix mask as the lengths (and check it)

    def forward(self, emissions: Tensor, tags: Tensor, mask: Tensor | None = None, reduction: str = "sum") -> Tensor:
        """Log-likelihood of ``tags`` given ``emissions`` (not its negative; minimize ``-crf(...)``).

        Args:
            emissions: ``(seq_length, batch, num_tags)`` (``batch_first``: ``(batch, seq_length, num_tags)``).
            tags: ``(seq_length, batch)`` int64 (``batch_first``: ``(batch, seq_length)``).
            mask: bool/uint8 of the shape of ``tags``, a prefix per sequence; all ones when omitted.
            reduction: ``none`` (``(batch,)``), ``sum``, ``mean`` (over the batch) or ``token_mean`` (over the
                unmasked tokens).
        """
        _check_reduction(reduction)
        emissions, tags, mask = self._inputs(emissions, tags, mask)
        return _reduce(F.crf_log_likelihood(emissions, tags, *self.scores(), mask), reduction, emissions, mask)

    def decode(self, emissions: Tensor, mask: Tensor | None = None, nbest: int | None = None) -> list:
        """Viterbi decoding: a list (over the batch) of tag lists; with ``nbest=k``, a list over the batch of up to
        ``k`` tag lists each, best first. A sequence with no allowed path decodes to ``[]`` (no paths with nbest)."""
        em, _, mask = self._inputs(emissions, None, mask)
        tags, scores = F.crf_viterbi(em, *self.scores(), mask, nbest=1 if nbest is None else nbest)
        lengths = [em.shape[1]] * em.shape[0] if mask is None else mask.sum(1).tolist()
        found = (scores != float("-inf")).tolist()  # NaN scores (NaN input) keep their path
        paths = tags.tolist()
        out = [
            [path[:length] for path, ok in zip(per_seq, ok_seq) if ok]
            for per_seq, ok_seq, length in zip(paths, found, lengths)
        ]
        if nbest is None:
            return [seq[0] if seq else [] for seq in out]
        return out

    def viterbi(self, emissions: Tensor, mask: Tensor | None = None, nbest: int | None = None):
        """Tensor Viterbi: ``(tags [batch, seq_length] int64, scores [batch])`` (batch-major whatever
        ``batch_first``), tags -1 past each length; with ``nbest=k``: ``(tags [batch, k, seq_length],
        scores [batch, k])``, missing ranks -1 / -inf."""
        emissions, _, mask = self._inputs(emissions, None, mask)
        return F.crf_viterbi(emissions, *self.scores(), mask, nbest=nbest)

    def marginals(self, emissions: Tensor, mask: Tensor | None = None) -> Tensor:
        """``P(y_t = k | x)`` in the layout of ``emissions``; zero at masked steps. Not differentiable: the result
        does not require grad."""
        em, _, mask = self._inputs(emissions, None, mask)
        out = F.crf_marginals(em, *self.scores(), mask)
        return out if self.batch_first else out.transpose(0, 1)

    def hinge_loss(
        self, emissions: Tensor, tags: Tensor, mask: Tensor | None = None, cost: float = 1.0, reduction: str = "sum"
    ) -> Tensor:
        """Structured-SVM loss (margin-rescaled, Hamming cost ``cost`` per wrong tag), to minimize; see
        :func:`pyseq.functional.crf_hinge_loss`. Reductions as in ``forward``."""
        _check_reduction(reduction)
        emissions, tags, mask = self._inputs(emissions, tags, mask)
        return _reduce(F.crf_hinge_loss(emissions, tags, *self.scores(), mask, cost=cost), reduction, emissions, mask)
