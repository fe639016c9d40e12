"""CTC loss measurements: pyseq.functional.ctc_loss against torch.nn.functional.ctc_loss, forward and
forward+backward through log_softmax, float32."""

from __future__ import annotations

import dataclasses
import logging

import torch
import torch.nn.functional as F

import pyseq

from harness import comparison, time_pair

# (T, N, C, S): the standard sizes, and few classes with long inputs (a character or phone recogniser).
SIZES = [(500, 32, 32, 100), (200, 16, 1000, 50), (1000, 8, 5000, 200), (400, 20, 48, 80)]


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
    return comparison(case.label, "fwd+bwd" if backward else "fwd", t_ours, t_ref)


def all_cases():
    return [Case(*size) for size in SIZES]


# Decoding: (T, N, C) for greedy and beam search; the Python reference search is slow, so the batch is small.
DECODE_SIZE = (200, 4, 32)
BEAM_WIDTHS = [8, 32]


def _reference():
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "tests"))
    from reference import ctc as reference

    return reference


def decode_inputs(seed: int = 0):
    T, N, C = DECODE_SIZE
    gen = torch.Generator().manual_seed(seed)
    # Peaked frames, as a trained model gives: the beam then tracks a few competing prefixes.
    log_probs = (3 * torch.randn(T, N, C, generator=gen, dtype=torch.float64)).log_softmax(2)
    return log_probs, torch.full((N,), T, dtype=torch.int64)


def measure_beam(beam_width: int, budget_s: float = 1.0) -> dict:
    """pyseq.ctc.beam_search against the plain-Python prefix beam search of the tests (same algorithm), which must
    return the same n-best hypotheses first."""
    reference = _reference()
    log_probs, lengths = decode_inputs()
    N = log_probs.shape[1]

    def ours():
        return pyseq.ctc.beam_search(log_probs, lengths, beam_width=beam_width, nbest=4)

    def ref():
        return [reference.prefix_beam_search(log_probs[:, n], beam_width, nbest=4) for n in range(N)]

    for hyps, expected in zip(ours(), ref()):
        assert [h.tokens for h in hyps] == [tokens for tokens, _ in expected], "beam search differs from reference"
    t_ours, t_ref = time_pair(ours, ref, budget_s=budget_s, min_repeats=3)
    T, N, C = DECODE_SIZE
    return comparison(f"beam search width {beam_width} T={T} N={N} C={C} vs Python", "decode", t_ours, t_ref)


def measure_greedy(budget_s: float = 1.0) -> dict:
    reference = _reference()
    log_probs, lengths = decode_inputs()
    N = log_probs.shape[1]
    T = log_probs.shape[0]

    def ours():
        return pyseq.ctc.greedy_decode(log_probs, lengths)

    def ref():
        return [reference.greedy(log_probs[:, n], T) for n in range(N)]

    assert ours() == ref()
    t_ours, t_ref = time_pair(ours, ref, budget_s=budget_s)
    _, N, C = DECODE_SIZE
    return comparison(f"greedy decode T={T} N={N} C={C} vs Python", "decode", t_ours, t_ref)


def measure_align(budget_s: float = 1.0) -> dict:
    """Batched forced alignment against the same function called one sequence at a time."""
    case = Case(*SIZES[0])
    logits, targets, input_lengths, target_lengths = build(case)
    log_probs = logits.log_softmax(2)

    def batched():
        return pyseq.ctc.forced_align(log_probs, targets, input_lengths, target_lengths)

    def one_by_one():
        return [pyseq.ctc.forced_align(log_probs[: input_lengths[n], n], targets[n, : target_lengths[n]])
                for n in range(case.N)]

    labels, _ = batched()
    for n, (row, _) in enumerate(one_by_one()):
        assert torch.equal(labels[n, : input_lengths[n]], row)
    t_ours, t_ref = time_pair(batched, one_by_one, budget_s=budget_s)
    label = f"forced align T={case.T} N={case.N} C={case.C} S={case.S} vs per sequence"
    return comparison(label, "align", t_ours, t_ref)


def measure_pyctcdecode(beam_width: int, budget_s: float = 1.0):
    """pyseq.ctc.beam_search against pyctcdecode's beam search on the same log-probs, for speed only: pyctcdecode
    prunes by its own defaults (per-frame token and beam log-prob cut-offs) and works on text, so its hypotheses
    are not compared. None when pyctcdecode is not installed."""
    # pyctcdecode logs warnings that do not apply to a speed comparison without a language model and without word
    # spaces ("kenlm not installed", "Space token missing"): quiet them.
    logging.getLogger("pyctcdecode").setLevel(logging.ERROR)
    try:
        from pyctcdecode import build_ctcdecoder
    except ImportError:
        return None
    log_probs, lengths = decode_inputs()
    T, N, C = DECODE_SIZE
    decoder = build_ctcdecoder([""] + [chr(0x4E00 + i) for i in range(C - 1)])  # blank, then one character a class
    frames = [log_probs[:, n].float().numpy() for n in range(N)]

    def ours():
        return pyseq.ctc.beam_search(log_probs, lengths, beam_width=beam_width)

    def ref():
        return [decoder.decode_beams(f, beam_width=beam_width) for f in frames]

    t_ours, t_ref = time_pair(ours, ref, budget_s=budget_s, min_repeats=3)
    return comparison(f"beam search width {beam_width} T={T} N={N} C={C} vs pyctcdecode", "decode", t_ours, t_ref)
