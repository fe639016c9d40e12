"""Memory-network measurements, float32: the hot path of an end-to-end memory network with adjacent tying (the
story's K + 1 position-encoded bags, the question's bag, K hops) through pyseq's fused ops
(pyseq.functional.position_encoded_bag, memory_hops), against the same written as the paper's equations in torch ops
(an embedding lookup of every word, times the position encoding, summed per sentence; per hop a batched product, a
masked softmax, a weighted read, the update): forward, and forward+backward of the final state."""

from __future__ import annotations

import dataclasses

import torch

import pyseq

from harness import comparison, time_pair

# (B, sentences, words, d, hops, vocabulary): the size; bAbI's vocabularies are a few hundred words.
SIZES = [(32, 50, 12, 64, 3, 200)]


@dataclasses.dataclass
class Case:
    B: int
    S: int
    W: int
    D: int
    K: int
    V: int

    @property
    def label(self) -> str:
        return f"memory network B={self.B} S={self.S} W={self.W} d={self.D} hops={self.K}"


def build(case: Case, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    story = torch.randint(1, case.V, (case.B, case.S, case.W), generator=g)
    lengths = torch.randint(3, case.W + 1, (case.B, case.S), generator=g)
    sentences = torch.randint(case.S // 2, case.S + 1, (case.B, 1), generator=g)
    lengths = lengths * (torch.arange(case.S) < sentences)  # stories of different lengths: empty sentences after
    return {
        "tables": torch.randn(case.K + 1, case.V, case.D, generator=g) * 0.1,
        "story": story, "lengths": lengths, "mask": lengths > 0,
        "question": torch.randint(1, case.V, (case.B, 6), generator=g),
        "encoding": pyseq.functional.position_encoding(case.W, case.D),
        "question_encoding": pyseq.functional.position_encoding(6, case.D),
    }


def fused(x, tables):
    f = pyseq.functional
    memories = torch.stack([f.position_encoded_bag(x["story"], x["encoding"], x["lengths"], table=t) for t in tables])
    u = f.position_encoded_bag(x["question"], x["question_encoding"], table=tables[0])
    return f.memory_hops(u, memories[:-1], memories[1:], x["mask"], tables.shape[0] - 1)[0]


def composed(x, tables):
    """The paper's equations as torch ops."""
    valid = (torch.arange(x["story"].shape[2]) < x["lengths"].unsqueeze(2)).unsqueeze(3)  # [B, S, W, 1]
    memories = [(t[x["story"]] * x["encoding"] * valid).sum(2) for t in tables]  # [B, S, d] each
    u = (tables[0][x["question"]] * x["question_encoding"]).sum(1)
    keep = x["mask"]
    for k in range(tables.shape[0] - 1):
        scores = torch.bmm(memories[k], u.unsqueeze(2)).squeeze(2).masked_fill(~keep, float("-inf"))
        p = torch.softmax(scores, 1).nan_to_num(0.0)
        u = u + torch.bmm(p.unsqueeze(1), memories[k + 1]).squeeze(1)
    return u


def run_fn(model, x: dict, backward: bool):
    tables = x["tables"].clone().requires_grad_(backward)

    def run():
        if backward:
            tables.grad = None
            model(x, tables).square().sum().backward()
        else:
            with torch.no_grad():
                model(x, tables)

    return run


def check(x: dict) -> None:
    """Same final state and table gradient (float32 tolerance)."""
    results = []
    for model in (fused, composed):
        tables = x["tables"].clone().requires_grad_()
        u = model(x, tables)
        results.append([u, torch.autograd.grad(u.square().sum(), tables)[0]])
    for a, b in zip(*results):
        err = (a - b).abs().max().item()
        assert err <= 1e-4 * max(1.0, b.abs().max().item()), f"pyseq differs from the composition by {err}"


def measure(case: Case, backward: bool, budget_s: float = 1.0) -> dict:
    x = build(case)
    check(x)
    t_ours, t_ref = time_pair(run_fn(fused, x, backward), run_fn(composed, x, backward), budget_s=budget_s)
    return comparison(case.label, "fwd+bwd" if backward else "fwd", t_ours, t_ref)


def all_cases():
    return [Case(*size) for size in SIZES]
