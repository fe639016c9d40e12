"""The CTC loss (pyseq.functional)."""

from __future__ import annotations

import torch
from torch import Tensor

from .._ops import ctc as _ctc_ops
from ._lengths import lengths_tensor

__all__ = ["ctc_loss"]


def ctc_loss(
    log_probs: Tensor,
    targets: Tensor,
    input_lengths,
    target_lengths,
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = False,
) -> Tensor:
    """Connectionist temporal classification loss, a drop-in for ``torch.nn.functional.ctc_loss``.

    Args:
        log_probs: ``[T, N, C]`` (or unbatched ``[T, C]``) log-probabilities, usually ``log_softmax`` output;
            float32 or float64 (bfloat16 and float16 are computed in float32, and the loss is float32).
        targets: ``[N, S]`` padded, or 1-D ``[sum(target_lengths)]`` concatenated (unbatched: ``[S]``); class ids
            in ``[0, C)``, never the blank. Under ``torch.compile``, padded only.
        input_lengths, target_lengths: ``[N]`` tensors (int32/int64) or sequences of ints (unbatched: scalars).
        blank: the blank class.
        reduction: ``'none'`` (``[N]``), ``'sum'``, or ``'mean'`` (each loss divided by its target length clamped to
            1, then averaged over the batch).
        zero_infinity: zero the losses (and gradients) of sequences that have no alignment (target too long for
            its input); otherwise their loss is ``inf`` and their gradient zero.

    The gradient is the true gradient with respect to ``log_probs`` as given: minus the posterior occupancy of
    each class at each frame. torch returns ``exp(log_probs) - posterior``, which equals it only after a
    ``log_softmax``; through a ``log_softmax`` both give the same gradient for the logits, and pyseq's stays right
    for scores that are not normalized (label priors, temperature, blank penalties).
    """
    if reduction not in ("none", "sum", "mean"):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    if not isinstance(log_probs, Tensor) or log_probs.dim() not in (2, 3):
        dims = log_probs.dim() if isinstance(log_probs, Tensor) else type(log_probs).__name__
        raise RuntimeError(f"log_probs must be 3-D (T, N, C) or unbatched 2-D (T, C), got {dims}-D")
    unbatched = log_probs.dim() == 2
    if unbatched:
        log_probs = log_probs.unsqueeze(1)
        targets = targets.unsqueeze(0)
        input_lengths = [int(input_lengths)]
        target_lengths = [int(target_lengths)]
    if targets.dim() == 1 and torch.compiler.is_compiling():
        # The forward variables' size depends on the longest target, which a concatenated batch only tells at run
        # time; a compiled graph needs it from the shapes.
        raise RuntimeError("under torch.compile, pass ctc_loss targets padded as (N, S) rather than concatenated")
    input_lengths = lengths_tensor(input_lengths, "input_lengths")
    target_lengths = lengths_tensor(target_lengths, "target_lengths")
    nll, _ = _ctc_ops.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank)
    if zero_infinity:
        nll = torch.where(torch.isinf(nll), torch.zeros_like(nll), nll)
    if reduction == "none":
        return nll.squeeze(0) if unbatched else nll
    if reduction == "sum":
        return nll.sum()
    return (nll / target_lengths.clamp(min=1).to(nll.dtype)).mean()
