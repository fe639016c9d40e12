"""The op registry: every pyseq op has a kernel for the CPU and, in a build with CUDA sources, for CUDA, apart from
the families whose CUDA kernels are still to be written (listed here, so that the list cannot go stale)."""

import pytest
import torch

from pyseq import _C

# Ops with a CPU kernel and, so far, no CUDA kernel. An op leaves this list when its CUDA kernel lands.
WITHOUT_CUDA_KERNEL = {
    "pyseq::additive_attention", "pyseq::additive_attention_backward", "pyseq::dot_attention",
    "pyseq::dot_attention_backward",
    "pyseq::crf_log_likelihood", "pyseq::crf_log_likelihood_backward", "pyseq::crf_log_partition",
    "pyseq::crf_log_partition_backward", "pyseq::crf_marginals", "pyseq::crf_path_score",
    "pyseq::crf_path_score_backward", "pyseq::crf_viterbi",
    "pyseq::ctc_forced_align", "pyseq::ctc_greedy_decode", "pyseq::ctc_loss", "pyseq::ctc_loss_backward",
}


def pyseq_ops():
    return sorted(name for name in torch._C._dispatch_get_all_op_names() if name.startswith("pyseq::"))


def has_kernel(op, key):
    return torch._C._dispatch_has_kernel_for_dispatch_key(op, key)


def test_every_op_has_a_cpu_kernel():
    ops = pyseq_ops()
    assert "pyseq::rnn_layer" in ops and len(ops) >= 18
    assert [op for op in ops if not has_kernel(op, "CPU")] == []
    assert WITHOUT_CUDA_KERNEL <= set(ops), sorted(WITHOUT_CUDA_KERNEL - set(ops))


def test_every_op_has_a_cuda_kernel_where_built_with_cuda():
    if not _C.with_cuda:
        pytest.skip("this build has no CUDA sources")
    missing = {op for op in pyseq_ops() if not has_kernel(op, "CUDA")}
    assert missing == WITHOUT_CUDA_KERNEL, {
        "without a CUDA kernel, not listed": sorted(missing - WITHOUT_CUDA_KERNEL),
        "listed, but has one now": sorted(WITHOUT_CUDA_KERNEL - missing),
    }
