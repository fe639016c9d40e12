"""CRF measurements: pyseq.nn.CRF against pytorch-crf's torchcrf.CRF (same parameters), float32, time-major
inputs (both modules' default layout): negative log-likelihood forward+backward, and Viterbi decoding."""

from __future__ import annotations

import dataclasses

import torch
import torchcrf

import pyseq

from harness import comparison, time_pair

# (T, B, K): the standard sizes.
SIZES = [(50, 32, 9), (100, 64, 20), (200, 16, 50)]


@dataclasses.dataclass
class Case:
    T: int
    B: int
    K: int

    @property
    def label(self) -> str:
        return f"CRF T={self.T} B={self.B} K={self.K}"


def build(case: Case, seed: int = 0):
    """Both modules with the same parameters; emissions, tags and a mask whose lengths vary (80-100% of T, the first
    sequence full, as pytorch-crf needs the first step of every sequence)."""
    gen = torch.Generator().manual_seed(seed)
    theirs = torchcrf.CRF(case.K)
    ours = pyseq.nn.CRF(case.K)
    ours.load_state_dict(theirs.state_dict())
    emissions = torch.randn(case.T, case.B, case.K, generator=gen)
    tags = torch.randint(case.K, (case.T, case.B), generator=gen)
    lengths = torch.randint(int(0.8 * case.T), case.T + 1, (case.B,), generator=gen)
    lengths[0] = case.T
    mask = torch.arange(case.T).unsqueeze(1) < lengths
    return theirs, ours, emissions, tags, mask


def nll_fn(crf, emissions, tags, mask):
    x = emissions.clone().requires_grad_()

    def run():
        x.grad = None
        crf.zero_grad(set_to_none=True)
        (-crf(x, tags, mask)).backward()
        return x

    return run


def check(theirs, ours, emissions, tags, mask) -> None:
    """Same loss and gradients (float32 tolerance), same decodes."""
    x_theirs = nll_fn(theirs, emissions, tags, mask)()
    x_ours = nll_fn(ours, emissions, tags, mask)()
    assert torch.allclose(x_ours.grad, x_theirs.grad, rtol=1e-4, atol=1e-5), "emission gradients differ"
    assert torch.allclose(ours.transitions.grad, theirs.transitions.grad, rtol=1e-4, atol=1e-3)
    with torch.no_grad():
        a, b = ours(emissions, tags, mask), theirs(emissions, tags, mask)
    assert torch.allclose(a, b, rtol=1e-5), f"log-likelihoods differ: {a} vs {b}"
    assert ours.decode(emissions, mask) == theirs.decode(emissions, mask), "decodes differ"


def measure_nll(case: Case, budget_s: float = 1.0) -> dict:
    theirs, ours, emissions, tags, mask = build(case)
    check(theirs, ours, emissions, tags, mask)
    t_ours, t_ref = time_pair(nll_fn(ours, emissions, tags, mask), nll_fn(theirs, emissions, tags, mask),
                              budget_s=budget_s)
    return comparison(case.label, "NLL fwd+bwd", t_ours, t_ref)


def measure_decode(case: Case, budget_s: float = 1.0, tensor_output: bool = False) -> dict:
    """decode (lists of tags, like pytorch-crf's), or with tensor_output the tensor Viterbi, against pytorch-crf's
    decode."""
    theirs, ours, emissions, _, mask = build(case)
    ours_fn = (lambda: ours.viterbi(emissions, mask)) if tensor_output else (lambda: ours.decode(emissions, mask))
    with torch.no_grad():
        t_ours, t_ref = time_pair(ours_fn, lambda: theirs.decode(emissions, mask), budget_s=budget_s)
    return comparison(case.label, "viterbi (tensor)" if tensor_output else "decode", t_ours, t_ref)


def all_cases():
    return [Case(*size) for size in SIZES]
