"""The ops of the CRF kernels (csrc/crf), registered in C++ with their autograd (csrc/crf/crf_ops.cpp); their fake
kernels are here.

Every op takes emissions ``[B, T, K]`` (batch-major; a time-major tensor may be passed as ``.transpose(0, 1)``, the
kernels read it in place), ``lengths``: ``[B]`` int64 or a prefix mask ``[B, T]`` (bool, read in place, checked in
C++), and the transition scores ``start [K]``, ``end [K]``, ``transitions [K, K]``:

- ``pyseq::crf_log_partition(emissions, lengths, start, end, transitions) -> (log_z [B], log_alpha [T, B, Kp],
  alpha_shift [T, B] float64)``: the forward variables (log_alpha + alpha_shift; Kp is K rounded up to whole 64-byte
  vectors), kept for the backward, whose gradient is the marginals (``pyseq::crf_log_partition_backward``);
- ``pyseq::crf_path_score(emissions, tags [B, T] int64, lengths, start, end, transitions) -> [B]`` and its backward;
- ``pyseq::crf_log_likelihood(emissions, tags, lengths, start, end, transitions) -> (llh [B], log_alpha,
  alpha_shift)``, the training hot path, and its backward;
- ``pyseq::crf_marginals(...) -> P(y_t = k | x) [B, T, K]`` (0 past each length) and ``pyseq::crf_viterbi(...,
  nbest) -> (paths [B, nbest, T] int64, -1 past each length; scores [B, nbest], -inf for missing ranks)``, not
  differentiable (their results never require grad).

Outputs shaped like the emissions (gradients, marginals) are contiguous whatever the emissions' strides.
"""

from __future__ import annotations

import torch

from .checks import check_same_device, float32_if_16_bit

crf_log_partition = torch.ops.pyseq.crf_log_partition
crf_path_score = torch.ops.pyseq.crf_path_score
crf_log_likelihood = torch.ops.pyseq.crf_log_likelihood
crf_marginals = torch.ops.pyseq.crf_marginals
crf_viterbi = torch.ops.pyseq.crf_viterbi


def _check_devices(emissions, lengths, start=None, end=None, transitions=None, **more):
    check_same_device(
        "emissions", emissions, ("lengths", lengths), ("start_transitions", start), ("end_transitions", end),
        ("transitions", transitions), *more.items(), cpu_ok=("lengths",),
    )


def _gradients_fake(emissions):
    """The gradients for (emissions, start, end, transitions): contiguous, whatever the strides of the inputs."""
    K, dtype = emissions.shape[2], float32_if_16_bit(emissions)
    return (
        emissions.new_empty(emissions.shape, dtype=dtype), emissions.new_empty(K, dtype=dtype),
        emissions.new_empty(K, dtype=dtype), emissions.new_empty(K, K, dtype=dtype),
    )


def _forward_fake(emissions):
    """(a value per sequence [B], log_alpha [T, B, Kp], alpha_shift [T, B] float64), Kp: K in whole 64-byte vectors."""
    B, T, K = emissions.shape
    dtype = float32_if_16_bit(emissions)
    lanes = 64 // dtype.itemsize
    padded = (K + lanes - 1) // lanes * lanes
    return (
        emissions.new_empty(B, dtype=dtype), emissions.new_empty(T, B, padded, dtype=dtype),
        emissions.new_empty(T, B, dtype=torch.float64),
    )


@torch.library.register_fake("pyseq::crf_log_partition")
def _crf_log_partition_fake(emissions, lengths, start, end, transitions):
    _check_devices(emissions, lengths, start, end, transitions)
    return _forward_fake(emissions)


@torch.library.register_fake("pyseq::crf_log_partition_backward")
def _crf_log_partition_backward_fake(grad_log_z, emissions, lengths, start, end, transitions, log_alpha, alpha_shift):
    _check_devices(emissions, lengths, start, end, transitions, grad_log_z=grad_log_z, log_alpha=log_alpha)
    return _gradients_fake(emissions)


@torch.library.register_fake("pyseq::crf_path_score")
def _crf_path_score_fake(emissions, tags, lengths, start, end, transitions):
    _check_devices(emissions, lengths, start, end, transitions, tags=tags)
    return emissions.new_empty(emissions.shape[0], dtype=float32_if_16_bit(emissions))


@torch.library.register_fake("pyseq::crf_path_score_backward")
def _crf_path_score_backward_fake(grad_score, emissions, tags, lengths):
    _check_devices(emissions, lengths, grad_score=grad_score, tags=tags)
    return _gradients_fake(emissions)


@torch.library.register_fake("pyseq::crf_log_likelihood")
def _crf_log_likelihood_fake(emissions, tags, lengths, start, end, transitions):
    _check_devices(emissions, lengths, start, end, transitions, tags=tags)
    return _forward_fake(emissions)


@torch.library.register_fake("pyseq::crf_log_likelihood_backward")
def _crf_log_likelihood_backward_fake(
    grad_llh, emissions, tags, lengths, start, end, transitions, llh, log_alpha, alpha_shift
):
    _check_devices(emissions, lengths, start, end, transitions, grad_llh=grad_llh, tags=tags, llh=llh)
    return _gradients_fake(emissions)


@torch.library.register_fake("pyseq::crf_marginals")
def _crf_marginals_fake(emissions, lengths, start, end, transitions):
    _check_devices(emissions, lengths, start, end, transitions)
    return emissions.new_empty(emissions.shape, dtype=float32_if_16_bit(emissions))


@torch.library.register_fake("pyseq::crf_viterbi")
def _crf_viterbi_fake(emissions, lengths, start, end, transitions, nbest):
    _check_devices(emissions, lengths, start, end, transitions)
    B, T, _ = emissions.shape
    return emissions.new_empty(B, nbest, T, dtype=torch.long), emissions.new_empty(B, nbest, dtype=float32_if_16_bit(emissions))
