"""CTC loss module: a drop-in for ``torch.nn.CTCLoss``."""

from __future__ import annotations

from torch import Tensor, nn

from .. import functional as F
from ._torchscript import NotScriptable

__all__ = ["CTCLoss"]


class CTCLoss(NotScriptable, nn.Module):
    r"""Connectionist temporal classification loss on pyseq's kernels; same arguments as ``torch.nn.CTCLoss``.

    ``CTCLoss(blank=0, reduction='mean', zero_infinity=False)``;
    ``forward(log_probs [T, N, C], targets [N, S] or 1-D, input_lengths [N], target_lengths [N])``.
    See :func:`pyseq.functional.ctc_loss` for the shapes, reductions and the gradient it returns.
    """

    def __init__(self, blank: int = 0, reduction: str = "mean", zero_infinity: bool = False):
        super().__init__()
        self.blank = blank
        self.reduction = reduction
        self.zero_infinity = zero_infinity

    def forward(self, log_probs: Tensor, targets: Tensor, input_lengths, target_lengths) -> Tensor:
        return F.ctc_loss(
            log_probs, targets, input_lengths, target_lengths, self.blank, self.reduction, self.zero_infinity
        )

    def extra_repr(self) -> str:
        return f"blank={self.blank}, reduction={self.reduction!r}, zero_infinity={self.zero_infinity}"
