"""Custom ops around the CTC kernels (csrc/ctc).

``pyseq::ctc_loss`` returns the per-sequence negative log-likelihood and the forward variables its backward needs;
``pyseq::ctc_loss_backward`` is that backward, itself an op. The gradient is the true gradient of the loss
with respect to the log-probs as given (minus the posterior occupancy), not torch's ``exp(log_probs) - posterior``;
both give the same gradient for logits that go through ``log_softmax``.
"""

from __future__ import annotations

import torch

from .checks import check_same_device, float32_if_16_bit

# pyseq::ctc_loss(log_probs [T, N, C], targets [N, S] or 1-D concatenated, input_lengths [N], target_lengths [N],
# blank) -> (nll [N], log_alpha [N, T, 2 * S_max + 1]) and pyseq::ctc_loss_backward(grad_nll, log_probs, targets,
# input_lengths, target_lengths, nll, log_alpha, blank) -> d(sum grad_nll * nll) / d log_probs [T, N, C] are
# registered in C++ with their autograd kernel (csrc/ctc/ctc_ops.cpp); their fake kernels are here.
ctc_loss = torch.ops.pyseq.ctc_loss
# pyseq::ctc_greedy_decode(log_probs [T, N, C], input_lengths [N], blank) -> (tokens [N, T] int64, -1 after each
# sequence's; counts [N] int64) and pyseq::ctc_forced_align(log_probs, targets [N, S], input_lengths, target_lengths,
# blank) -> (labels [N, T] int64, scores [N, T]) are registered in C++ too, without autograd.
ctc_greedy_decode = torch.ops.pyseq.ctc_greedy_decode
ctc_forced_align = torch.ops.pyseq.ctc_forced_align


def _check_devices(log_probs, input_lengths, target_lengths=None, cpu_ok=(), **more):
    if log_probs.device.type != "cuda":  # CPU targets go with CUDA log-probs only
        cpu_ok = ()
    check_same_device(
        "log_probs", log_probs, ("input_lengths", input_lengths), ("target_lengths", target_lengths), *more.items(),
        cpu_ok=("input_lengths", "target_lengths", *cpu_ok),
    )


@torch.library.register_fake("pyseq::ctc_loss")
def _ctc_loss_fake(log_probs, targets, input_lengths, target_lengths, blank):
    # the CUDA loss reads its targets on the host, from the CPU or the device of log_probs
    _check_devices(log_probs, input_lengths, target_lengths, cpu_ok=("targets",), targets=targets)
    T, N = log_probs.shape[0], log_probs.shape[1]
    if targets.dim() == 2:
        s_max = targets.shape[1]
    else:  # the longest target of a concatenated batch is data-dependent
        s_max = torch.library.get_ctx().new_dynamic_size()
    dtype = float32_if_16_bit(log_probs)
    return log_probs.new_empty(N, dtype=dtype), log_probs.new_empty(N, T, 2 * s_max + 1, dtype=dtype)


@torch.library.register_fake("pyseq::ctc_loss_backward")
def _ctc_loss_backward_fake(grad_nll, log_probs, targets, input_lengths, target_lengths, nll, log_alpha, blank):
    _check_devices(log_probs, input_lengths, target_lengths, cpu_ok=("targets",), grad_nll=grad_nll, targets=targets,
                   nll=nll, log_alpha=log_alpha)
    # contiguous, as the kernel returns it, whatever the strides of log_probs (e.g. a transposed [N, T, C] tensor)
    return log_probs.new_empty(log_probs.shape, dtype=float32_if_16_bit(log_probs))


@torch.library.register_fake("pyseq::ctc_greedy_decode")
def _ctc_greedy_decode_fake(log_probs, input_lengths, blank):
    _check_devices(log_probs, input_lengths)
    T, N = log_probs.shape[0], log_probs.shape[1]
    return log_probs.new_empty(N, T, dtype=torch.long), log_probs.new_empty(N, dtype=torch.long)


@torch.library.register_fake("pyseq::ctc_forced_align")
def _ctc_forced_align_fake(log_probs, targets, input_lengths, target_lengths, blank):
    _check_devices(log_probs, input_lengths, target_lengths, targets=targets)
    T, N = log_probs.shape[0], log_probs.shape[1]
    return log_probs.new_empty(N, T, dtype=torch.long), log_probs.new_empty(N, T, dtype=float32_if_16_bit(log_probs))
