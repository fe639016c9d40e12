"""Custom ops around the CTC kernels (csrc/ctc).

``pyseq::ctc_loss`` returns the per-sequence negative log-likelihood and the forward variables its backward needs;
``pyseq::ctc_loss_backward`` is that backward, itself a custom op. The gradient is the true gradient of the loss
with respect to the log-probs as given (minus the posterior occupancy), not torch's ``exp(log_probs) - posterior``;
both give the same gradient for logits that go through ``log_softmax``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _C


@torch.library.custom_op("pyseq::ctc_loss", mutates_args=(), device_types="cpu")
def ctc_loss(
    log_probs: Tensor, targets: Tensor, input_lengths: Tensor, target_lengths: Tensor, blank: int
) -> tuple[Tensor, Tensor]:
    """log_probs [T, N, C]; targets [N, S] or 1-D concatenated; lengths [N] int64.
    Returns (nll [N], log_alpha [N, T, 2 * S_max + 1])."""
    nll, log_alpha = _C.ctc_loss_forward(log_probs, targets, input_lengths, target_lengths, blank)
    return nll, log_alpha


@ctc_loss.register_fake
def _ctc_loss_fake(log_probs, targets, input_lengths, target_lengths, blank):
    T, N = log_probs.shape[0], log_probs.shape[1]
    if targets.dim() == 2:
        s_max = targets.shape[1]
    else:  # the longest target of a concatenated batch is data-dependent
        s_max = torch.library.get_ctx().new_dynamic_size()
    return log_probs.new_empty(N), log_probs.new_empty(N, T, 2 * s_max + 1)


@torch.library.custom_op("pyseq::ctc_loss_backward", mutates_args=(), device_types="cpu")
def ctc_loss_backward(
    grad_nll: Tensor,
    log_probs: Tensor,
    targets: Tensor,
    input_lengths: Tensor,
    target_lengths: Tensor,
    nll: Tensor,
    log_alpha: Tensor,
    blank: int,
) -> Tensor:
    """Returns d(sum grad_nll * nll) / d log_probs: [T, N, C]."""
    return _C.ctc_loss_backward(grad_nll, log_probs, targets, input_lengths, target_lengths, nll, log_alpha, blank)


@ctc_loss_backward.register_fake
def _ctc_loss_backward_fake(grad_nll, log_probs, targets, input_lengths, target_lengths, nll, log_alpha, blank):
    return torch.empty_like(log_probs)


def _setup_context(ctx, inputs, output):
    log_probs, targets, input_lengths, target_lengths, blank = inputs
    nll, log_alpha = output
    ctx.save_for_backward(log_probs, targets, input_lengths, target_lengths, nll, log_alpha)
    ctx.blank = blank
    ctx.mark_non_differentiable(log_alpha)
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_nll, _grad_log_alpha):
    if grad_nll is None:
        return None, None, None, None, None
    log_probs, targets, input_lengths, target_lengths, nll, log_alpha = ctx.saved_tensors
    grad = ctc_loss_backward(
        grad_nll.contiguous(), log_probs, targets, input_lengths, target_lengths, nll, log_alpha, ctx.blank
    )
    return grad, None, None, None, None


ctc_loss.register_autograd(_backward, setup_context=_setup_context)
