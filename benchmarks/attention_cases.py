"""Attention measurements, float32: pyseq's fused additive attention against the naive composition of torch ops
(which builds the [B, Tq, Tk, A] tensor), and dot attention against the naive composition and against
torch.nn.functional.scaled_dot_product_attention. Time side by side (harness.time_pair), and peak memory of one call
(the process's resident-set high-water mark, reset before each call; see peak_bytes)."""

from __future__ import annotations

import ctypes
import dataclasses

import torch
import torch.nn.functional as F

import pyseq

from harness import comparison, time_pair

# (B, Tq, Tk, A, Dv): the standard sizes; the last one is one decoder step.
SIZES = [(32, 50, 100, 256, 256), (16, 100, 400, 256, 256), (32, 1, 400, 256, 256)]


@dataclasses.dataclass
class Case:
    B: int
    Tq: int
    Tk: int
    A: int
    Dv: int

    @property
    def label(self) -> str:
        return f"B={self.B} Tq={self.Tq} Tk={self.Tk} A={self.A} Dv={self.Dv}"


def build(case: Case, seed: int = 0):
    """Queries and keys (already projected for additive attention), score vector, values and a key mask whose
    lengths are 80-100% of Tk."""
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(case.B, case.Tq, case.A, generator=g)
    key = torch.randn(case.B, case.Tk, case.A, generator=g)
    v = torch.randn(case.A, generator=g) / case.A**0.5
    value = torch.randn(case.B, case.Tk, case.Dv, generator=g)
    lengths = torch.randint(int(0.8 * case.Tk), case.Tk + 1, (case.B,), generator=g)
    mask = torch.arange(case.Tk) < lengths.unsqueeze(1)  # [B, Tk]
    return query, key, v, value, mask


def naive_additive(query_proj, key_proj, v, value, mask):
    scores = torch.tanh(query_proj.unsqueeze(2) + key_proj.unsqueeze(1)) @ v  # [B, Tq, Tk, A] -> [B, Tq, Tk]
    weights = torch.softmax(scores.masked_fill(~mask.unsqueeze(1), float("-inf")), -1)
    return weights @ value, weights


def naive_dot(query, key, value, mask, scale):
    scores = scale * query @ key.transpose(1, 2)
    weights = torch.softmax(scores.masked_fill(~mask.unsqueeze(1), float("-inf")), -1)
    return weights @ value, weights


def pyseq_additive(query_proj, key_proj, v, value, mask):
    return pyseq.functional.additive_attention(query_proj, key_proj, v, value, mask, return_weights=True)


def pyseq_dot(query, key, value, mask, scale, return_weights=True):
    return pyseq.functional.dot_attention(query, key, value, mask, scale, return_weights=return_weights)


def sdpa(query, key, value, mask, scale):
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask.unsqueeze(1), scale=scale), None


def run_fn(fn, inputs, backward: bool, n_grad: int):
    """A closure running fn(*inputs) (no grad), or forward and backward to the first n_grad inputs through the
    context and, where fn returns them, the weights."""
    if not backward:

        def run():
            with torch.no_grad():
                fn(*inputs)

        return run
    xs = [x.clone().requires_grad_() if i < n_grad else x for i, x in enumerate(inputs)]

    def run():
        for x in xs[:n_grad]:
            x.grad = None
        context, weights = fn(*xs)
        loss = context.sum() if weights is None else context.sum() + weights.square().sum()
        loss.backward()

    return run


def check(ours, ref, inputs, n_grad: int) -> None:
    """Same outputs and gradients of the first n_grad inputs (float32 tolerance)."""
    results = []
    for fn in (ours, ref):
        xs = [x.clone().requires_grad_() if i < n_grad else x for i, x in enumerate(inputs)]
        context, weights = fn(*xs)
        loss = context.sum() if weights is None else context.sum() + weights.square().sum()
        results.append([context] + (list(torch.autograd.grad(loss, xs[:n_grad])) if n_grad else []))
    for a, b in zip(*results):
        err = (a - b).abs().max().item()
        assert err <= 1e-3 * max(1.0, b.abs().max().item()), f"pyseq differs from the reference by {err}"


def peak_bytes(fn) -> int:
    """Bytes by which one call of fn raises the resident set above where it started: the high-water mark is reset
    first (/proc/self/clear_refs), free heap memory returned to the system (malloc_trim), and blocks of 128 KB or
    more are mapped and unmapped one by one (set_exact_peak_memory), so the mark follows the live tensors."""
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    start = _status_bytes("VmRSS:")
    fn()
    return _status_bytes("VmHWM:") - start


def set_exact_peak_memory() -> None:
    """Fix glibc's mmap threshold at 128 KB (M_MMAP_THRESHOLD). Process-wide and for good: call it after the
    timings, since mapping every large block afresh costs page faults in every later call."""
    ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def comparisons(case: Case):
    """(name, pyseq fn, reference fn, inputs, number of differentiable inputs, reference name) of each comparison at
    this size; one with no differentiable inputs is measured forward only."""
    query, key, v, value, mask = build(case)
    scale = case.A**-0.5
    decoding = []
    if case.Tq == 1:
        # In a decoding loop the keys are projected once, with their tanh factors (pyseq.functional.project_keys);
        # the naive composition reuses its projected keys the same way. Forward only: decoding.
        keys = pyseq.functional.project_keys(key)
        decoding.append((
            f"additive, keys cached {case.label}",
            lambda q, k, v_, val, m: pyseq.functional.additive_attention(q, keys, v_, val, m, return_weights=True),
            naive_additive,
            (query, key, v, value, mask),
            0,
            "naive",
        ))
    return decoding + [
        (f"additive {case.label}", pyseq_additive, naive_additive, (query, key, v, value, mask), 4, "naive"),
        (
            f"dot+weights {case.label}",
            lambda q, k, val, m: pyseq_dot(q, k, val, m, scale),
            lambda q, k, val, m: naive_dot(q, k, val, m, scale),
            (query, key, value, mask),
            3,
            "naive",
        ),
        (
            f"dot {case.label}",
            lambda q, k, val, m: pyseq_dot(q, k, val, m, scale, return_weights=False),
            lambda q, k, val, m: sdpa(q, k, val, m, scale),
            (query, key, value, mask),
            3,
            "SDPA",
        ),
    ]


def measure(name, ours, ref, inputs, n_grad, ref_name, backward: bool, budget_s: float = 1.0) -> dict:
    check(ours, ref, inputs, n_grad)
    t_ours, t_ref = time_pair(run_fn(ours, inputs, backward, n_grad), run_fn(ref, inputs, backward, n_grad),
                              budget_s=budget_s)
    row = comparison(name, "fwd+bwd" if backward else "fwd", t_ours, t_ref)
    row["reference"] = ref_name
    return row


def add_memory(row: dict, ours, ref, inputs, n_grad, backward: bool) -> None:
    """Peak memory of one call of each side, in MB, into the row (after set_exact_peak_memory)."""
    row["pyseq_mb"] = peak_bytes(run_fn(ours, inputs, backward, n_grad)) / 2**20
    row["ref_mb"] = peak_bytes(run_fn(ref, inputs, backward, n_grad)) / 2**20
    row["memory_ratio"] = row["ref_mb"] / max(row["pyseq_mb"], 1e-3)


def all_cases():
    return [Case(*size) for size in SIZES]
