"""Custom ops around the CRF kernels (csrc/crf).

Every op takes emissions ``[B, T, K]`` (batch-major; a time-major tensor may be passed as ``.transpose(0, 1)``, the
kernels read it in place), ``lengths``: ``[B]`` int64 or a prefix mask ``[B, T]`` (bool/uint8, read in place,
checked in C++), and the transition scores ``start [K]``, ``end [K]``, ``transitions [K, K]``.
``pyseq::crf_log_likelihood``, ``pyseq::crf_log_partition`` and ``pyseq::crf_path_score`` have autograd (the
gradient of log Z is the marginals, computed by the backward recursion); ``pyseq::crf_marginals`` and
``pyseq::crf_viterbi`` have none (decoding and posteriors are not differentiable here).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _C
from .checks import check_same_device


def _check_devices(emissions, lengths, start=None, end=None, transitions=None, **more):
    check_same_device(
        "emissions", emissions, ("lengths", lengths), ("start_transitions", start), ("end_transitions", end),
        ("transitions", transitions), *more.items(), cpu_ok=("lengths",),
    )


@torch.library.custom_op("pyseq::crf_log_partition", mutates_args=(), device_types="cpu")
def crf_log_partition(
    emissions: Tensor, lengths: Tensor, start: Tensor, end: Tensor, transitions: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns (log_z [B], log_alpha [T, B, Kp], alpha_shift [T, B] float64): the forward variables (log_alpha +
    alpha_shift; Kp is K rounded up to whole 64-byte vectors), kept for the backward."""
    log_z, log_alpha, alpha_shift = _C.crf_log_partition(emissions, lengths, start, end, transitions)
    return log_z, log_alpha, alpha_shift


@crf_log_partition.register_fake
def _crf_log_partition_fake(emissions, lengths, start, end, transitions):
    _check_devices(emissions, lengths, start, end, transitions)
    B, T, K = emissions.shape
    lanes = 64 // emissions.element_size()
    padded = (K + lanes - 1) // lanes * lanes
    return emissions.new_empty(B), emissions.new_empty(T, B, padded), emissions.new_empty(T, B, dtype=torch.float64)


@torch.library.custom_op("pyseq::crf_log_partition_backward", mutates_args=(), device_types="cpu")
def crf_log_partition_backward(
    grad_log_z: Tensor,
    emissions: Tensor,
    lengths: Tensor,
    start: Tensor,
    end: Tensor,
    transitions: Tensor,
    log_alpha: Tensor,
    alpha_shift: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients of sum(grad_log_z * log_z) for (emissions, start, end, transitions)."""
    g = _C.crf_log_partition_backward(grad_log_z, emissions, lengths, start, end, transitions, log_alpha, alpha_shift)
    return g[0], g[1], g[2], g[3]


@crf_log_partition_backward.register_fake
def _crf_log_partition_backward_fake(grad_log_z, emissions, lengths, start, end, transitions, log_alpha, alpha_shift):
    _check_devices(emissions, lengths, start, end, transitions, grad_log_z=grad_log_z, log_alpha=log_alpha)
    return _gradients_fake(emissions)


def _gradients_fake(emissions):
    """The gradients for (emissions, start, end, transitions): contiguous, whatever the strides of the inputs."""
    K = emissions.shape[2]
    return emissions.new_empty(emissions.shape), emissions.new_empty(K), emissions.new_empty(K), emissions.new_empty(K, K)


def _log_partition_setup(ctx, inputs, output):
    emissions, lengths, start, end, transitions = inputs
    _log_z, log_alpha, alpha_shift = output
    ctx.save_for_backward(emissions, lengths, start, end, transitions, log_alpha, alpha_shift)
    ctx.mark_non_differentiable(log_alpha, alpha_shift)
    ctx.set_materialize_grads(False)


def _log_partition_backward(ctx, grad_log_z, _grad_log_alpha, _grad_alpha_shift):
    if grad_log_z is None:
        return None, None, None, None, None
    emissions, lengths, start, end, transitions, log_alpha, alpha_shift = ctx.saved_tensors
    g_em, g_start, g_end, g_trans = crf_log_partition_backward(
        grad_log_z.contiguous(), emissions, lengths, start, end, transitions, log_alpha, alpha_shift
    )
    return g_em, None, g_start, g_end, g_trans


crf_log_partition.register_autograd(_log_partition_backward, setup_context=_log_partition_setup)


@torch.library.custom_op("pyseq::crf_path_score", mutates_args=(), device_types="cpu")
def crf_path_score(
    emissions: Tensor, tags: Tensor, lengths: Tensor, start: Tensor, end: Tensor, transitions: Tensor
) -> Tensor:
    """tags [B, T] int64. Returns the score of each sequence's tag path: [B]."""
    return _C.crf_path_score(emissions, tags, lengths, start, end, transitions)


@crf_path_score.register_fake
def _crf_path_score_fake(emissions, tags, lengths, start, end, transitions):
    _check_devices(emissions, lengths, start, end, transitions, tags=tags)
    return emissions.new_empty(emissions.shape[0])


@torch.library.custom_op("pyseq::crf_path_score_backward", mutates_args=(), device_types="cpu")
def crf_path_score_backward(
    grad_score: Tensor, emissions: Tensor, tags: Tensor, lengths: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients of sum(grad_score * score) for (emissions, start, end, transitions)."""
    g = _C.crf_path_score_backward(grad_score, emissions, tags, lengths, emissions.shape[2])
    return g[0], g[1], g[2], g[3]


@crf_path_score_backward.register_fake
def _crf_path_score_backward_fake(grad_score, emissions, tags, lengths):
    _check_devices(emissions, lengths, grad_score=grad_score, tags=tags)
    return _gradients_fake(emissions)


def _path_score_setup(ctx, inputs, output):
    emissions, tags, lengths, _start, _end, _transitions = inputs
    ctx.save_for_backward(emissions, tags, lengths)
    ctx.set_materialize_grads(False)


def _path_score_backward(ctx, grad_score):
    if grad_score is None:
        return None, None, None, None, None, None
    emissions, tags, lengths = ctx.saved_tensors
    g_em, g_start, g_end, g_trans = crf_path_score_backward(grad_score.contiguous(), emissions, tags, lengths)
    return g_em, None, None, g_start, g_end, g_trans


crf_path_score.register_autograd(_path_score_backward, setup_context=_path_score_setup)


# pyseq::crf_log_likelihood(emissions, tags, lengths, start, end, transitions) -> (llh [B], log_alpha, alpha_shift)
# and its backward are registered in C++ with their autograd kernel (csrc/crf/crf_ops.cpp: the training hot path,
# without the Python wrapper's per-call cost); their fake kernels are here.
crf_log_likelihood = torch.ops.pyseq.crf_log_likelihood


@torch.library.register_fake("pyseq::crf_log_likelihood")
def _crf_log_likelihood_fake(emissions, tags, lengths, start, end, transitions):
    _check_devices(emissions, lengths, start, end, transitions, tags=tags)
    return _crf_log_partition_fake(emissions, lengths, start, end, transitions)


@torch.library.register_fake("pyseq::crf_log_likelihood_backward")
def _crf_log_likelihood_backward_fake(
    grad_llh, emissions, tags, lengths, start, end, transitions, llh, log_alpha, alpha_shift
):
    _check_devices(emissions, lengths, start, end, transitions, grad_llh=grad_llh, tags=tags, llh=llh)
    return _gradients_fake(emissions)


@torch.library.custom_op("pyseq::crf_marginals", mutates_args=(), device_types="cpu")
def crf_marginals(emissions: Tensor, lengths: Tensor, start: Tensor, end: Tensor, transitions: Tensor) -> Tensor:
    """P(y_t = k | x): [B, T, K], 0 past each length."""
    return _C.crf_marginals(emissions, lengths, start, end, transitions)


@crf_marginals.register_fake
def _crf_marginals_fake(emissions, lengths, start, end, transitions):
    _check_devices(emissions, lengths, start, end, transitions)
    return emissions.new_empty(emissions.shape)


@torch.library.custom_op("pyseq::crf_viterbi", mutates_args=(), device_types="cpu")
def crf_viterbi(
    emissions: Tensor, lengths: Tensor, start: Tensor, end: Tensor, transitions: Tensor, nbest: int
) -> tuple[Tensor, Tensor]:
    """Returns (paths [B, nbest, T] int64, -1 past each length; scores [B, nbest], -inf for missing ranks)."""
    paths, scores = _C.crf_viterbi(emissions, lengths, start, end, transitions, nbest)
    return paths, scores


@crf_viterbi.register_fake
def _crf_viterbi_fake(emissions, lengths, start, end, transitions, nbest):
    _check_devices(emissions, lengths, start, end, transitions)
    B, T, _ = emissions.shape
    return emissions.new_empty(B, nbest, T, dtype=torch.long), emissions.new_empty(B, nbest)
