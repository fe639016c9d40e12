"""The CUDA emulation build (make cuda-emulate): every kernel of every family runs on the CPU through the emulator.

The family tests run their `device` tests on the emulated device and their GPU tests (`gpu` fixture) on the emulated
GPU; each emulated op call runs under the three schedules of pyseq.cuda_emulation.SCHEDULES and must give the same
bits under each. Here: that this reaches every kernel the .cu files define and every op that has a CUDA kernel, and
that the emulator's own checks hold (tests/cuda_emulation/emulator_selftest.cu, built beside the extension).
"""

import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

import pyseq
import pyseq.cuda_emulation as emulation
from pyseq import functional as F

pytestmark = pytest.mark.skipif(not emulation.available(), reason="not the emulation build (make cuda-emulate)")

CSRC = Path(__file__).resolve().parents[1] / "csrc"


def defined_kernels():
    """The __global__ functions of every *_cuda.cu file."""
    pattern = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(")
    return {name for path in CSRC.glob("*/*_cuda.cu") for name in pattern.findall(path.read_text())}


def run_every_family():
    """One small call of each op that launches a kernel, forward and backward, under the emulation."""
    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()

    lp = randn(12, 3, 40).log_softmax(2)
    targets = torch.randint(1, 40, (3, 5), generator=g)
    il, tl = torch.tensor([12, 10, 8]), torch.tensor([5, 4, 3])
    F.ctc_loss(lp, targets, il, tl).backward()
    pyseq.ctc.greedy_decode(lp.detach(), il)
    pyseq.ctc.forced_align(lp.detach(), targets, il, tl)

    em, trans, start, end = randn(2, 6, 40), randn(40, 40), randn(40), randn(40)
    tags, lengths = torch.randint(40, (2, 6), generator=g), torch.tensor([6, 4])
    ops = torch.ops.pyseq
    ops.crf_log_likelihood(em, tags, lengths, start, end, trans)[0].sum().backward()
    ops.crf_path_score(em, tags, lengths, start, end, trans).sum().backward()
    ops.crf_marginals(em.detach(), lengths, start.detach(), end.detach(), trans.detach())
    ops.crf_viterbi(em.detach(), lengths, start.detach(), end.detach(), trans.detach(), 1)

    q, k, v, value = randn(2, 3, 8), randn(2, 40, 8), randn(8), randn(2, 40, 5)
    F.additive_attention(q, k, v, value)[0].sum().backward()
    F.dot_attention(randn(2, 3, 5), value, value)[0].sum().backward()

    memory = randn(2, 40, 6)
    key, beta, gate, shift, gamma = randn(2, 1, 6), randn(2, 1), randn(2, 1), randn(2, 1, 3), randn(2, 1)
    previous = randn(2, 1, 40).softmax(-1)
    weights = F.ntm_address(memory, key, beta.exp(), gate.sigmoid(), shift.softmax(-1), 1 + gamma.exp(), previous)
    weights.sum().backward()
    F.ntm_write(memory, randn(2, 40).softmax(-1), randn(2, 6).sigmoid(), randn(2, 6)).sum().backward()

    indices, word_lengths = torch.randint(0, 9, (40, 5), generator=g), torch.randint(0, 6, (40,), generator=g)
    bags = F.position_encoded_bag(indices, randn(5, 6), word_lengths, table=randn(9, 6)).view(2, 20, 6)
    mask = torch.rand(2, 20, generator=g) < 0.8
    F.memory_hops(randn(2, 6), bags, bags * 2, mask, 3, randn(6, 6))[0].sum().backward()

    lstm = pyseq.nn.LSTM(4, 40)
    x = torch.randn(5, 2, 4, generator=g, requires_grad=True)
    lstm(x)[0].sum().backward()
    pyseq.nn.ClockworkRNN(4, 40, periods=(1, 2, 4, 8))(x)[0].sum().backward()
    pyseq.nn.SCRN(4, 40, 8)(x)[0].sum().backward()
    pyseq.set_cuda_recurrent_kernel("persistent")
    try:
        pyseq.nn.GRU(4, 40)(x)[0].sum().backward()
    finally:
        pyseq.set_cuda_recurrent_kernel("steps")


def test_every_kernel_is_launched():
    kernels = defined_kernels()
    assert len(kernels) >= 20, kernels
    emulation.launched_kernels(forget=True)
    with emulation.emulate():
        run_every_family()
    assert emulation.launched_kernels() == kernels


def test_every_op_with_a_cuda_kernel_is_emulated():
    """The ops of the glue's registrations: all of pyseq's differentiable and decoding ops that run on CUDA (the
    beam-search decoder, the k-best Viterbi beyond the kernel and the HMM have CPU kernels only)."""
    assert pyseq.build_info()["cuda_emulation"] and not pyseq.build_info()["cuda"]
    ops = set(emulation.emulated_ops())
    assert {"ctc_loss", "ctc_loss_backward", "ctc_greedy_decode", "ctc_forced_align", "crf_log_partition",
            "crf_log_partition_backward", "crf_log_likelihood", "crf_log_likelihood_backward", "crf_marginals",
            "crf_path_score", "crf_path_score_backward", "crf_viterbi", "additive_attention",
            "additive_attention_backward", "dot_attention", "dot_attention_backward", "ntm_address",
            "ntm_address_backward", "ntm_write", "ntm_write_backward", "ntm_step", "ntm_step_backward", "rnn_layer",
            "rnn_layer_backward", "position_encoded_bag", "position_encoded_bag_backward", "memory_hops",
            "memory_hops_backward", "clockwork_rnn", "clockwork_rnn_backward", "scrn", "scrn_backward"} == ops
    for name in ops:
        emulated, op = (str(getattr(ns, name).default._schema) for ns in (torch.ops.pyseq_emulated, torch.ops.pyseq))
        assert emulated.replace("pyseq_emulated::", "pyseq::") == op


def test_schedules_are_checked_bitwise():
    """Each emulated call runs under every schedule; a result that changes with the schedule raises."""
    assert emulation._bitwise_equal((torch.tensor([1.0, float("nan")]), 3), (torch.tensor([1.0, float("nan")]), 3))
    assert not emulation._bitwise_equal(torch.tensor([0.0]), torch.tensor([-0.0]))
    with pytest.raises(ValueError, match="forward, reverse or random"):
        with emulation.schedule("sideways"):
            torch.ops.pyseq_emulated.crf_viterbi(torch.zeros(1, 1, 1), torch.tensor([1]), torch.zeros(1),
                                                 torch.zeros(1), torch.zeros(1, 1), 1)


@pytest.mark.parametrize("variant", ["plain", "asan", "ucontext"])
def test_emulator_selftest(variant):
    """Indexing, barriers, every warp intrinsic and its mask checks, divergence and deadlock reports, shared memory
    (NaN fill, the 48 KiB limit), atomics, cooperative launches, under every schedule; with the x86-64 fiber switch,
    under AddressSanitizer, and with the portable ucontext fibers."""
    folder = os.environ.get("PYSEQ_EMULATOR_SELFTEST_DIR")
    if not folder:
        pytest.skip("PYSEQ_EMULATOR_SELFTEST_DIR is not set (make cuda-emulate sets it)")
    result = subprocess.run([str(Path(folder) / f"emulator_selftest_{variant}")], capture_output=True, text=True,
                            env={**os.environ, "ASAN_OPTIONS": "detect_leaks=1"}, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all checks passed" in result.stdout


def test_shared_memory_overrun_is_caught_under_asan():
    folder = os.environ.get("PYSEQ_EMULATOR_SELFTEST_DIR")
    if not folder:
        pytest.skip("PYSEQ_EMULATOR_SELFTEST_DIR is not set (make cuda-emulate sets it)")
    result = subprocess.run([str(Path(folder) / "emulator_selftest_asan"), "oob"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0 and "heap-buffer-overflow" in result.stderr, result.stdout + result.stderr
