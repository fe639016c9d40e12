"""CTC loss measurements: pyseq.functional.ctc_loss against torch.nn.functional.ctc_loss, forward and
forward+backward through log_softmax, float32."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

import pyseq

from harness import time_pair

# (T, N, C, S): the standard sizes.
SIZES = [(500, 32, 32, 100), (200, 16, 1000, 50), (1000, 8, 5000, 200)]


@dataclasses.dataclass
class Case:
    T: int
    N: int
    C: int
    S: int

    @property
    def label(self) -> str:
        return f"CTC T={self.T} N={self.N} C={self.C} S={self.S}"


def build(case: Case, seed: int = 0):
    """Logits and a batch whose lengths vary (input 80-100% of T, target 80-100% of S)."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(case.T, case.N, case.C, generator=gen)
    targets = torch.randint(1, case.C, (case.N, case.S), generator=gen)
    input_lengths = torch.randint(int(0.8 * case.T), case.T + 1, (case.N,), generator=gen)
    target_lengths = torch.randint(int(0.8 * case.S), case.S + 1, (case.N,), generator=gen)
    return logits, targets, input_lengths, target_lengths


def run_fn(loss_fn, logits, targets, input_lengths, target_lengths, backward: bool):
    if backward:
        x = logits.clone().requires_grad_()

        def run():
            x.grad = None
            loss_fn(x.log_softmax(2), targets, input_lengths, target_lengths).backward()

    else:
        lp = logits.log_softmax(2)

        def run():
            with torch.no_grad():
                loss_fn(lp, targets, input_lengths, target_lengths)

    return run


def check(logits, targets, input_lengths, target_lengths) -> None:
    results = []
    for loss_fn in (pyseq.functional.ctc_loss, F.ctc_loss):
        x = logits.clone().requires_grad_()
        loss = loss_fn(x.log_softmax(2), targets, input_lengths, target_lengths)
        loss.backward()
        results.append((loss.detach(), x.grad))
    for a, b in zip(*results):
        err = (a - b).abs().max().item()
        assert err <= 1e-4 * max(1.0, b.abs().max().item()), f"pyseq differs from torch by {err}"


def measure(case: Case, backward: bool, budget_s: float = 1.0) -> dict:
    data = build(case)
    check(*data)
    t_ours, t_ref = time_pair(run_fn(pyseq.functional.ctc_loss, *data, backward),
                              run_fn(F.ctc_loss, *data, backward), budget_s=budget_s)
    return {
        "case": case.label,
        "pass": "fwd+bwd" if backward else "fwd",
        "pyseq_ms": t_ours * 1e3,
        "torch_ms": t_ref * 1e3,
        "speedup": t_ref / t_ours,
    }


def all_cases():
    return [Case(*size) for size in SIZES]
