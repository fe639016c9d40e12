"""Recurrent-layer measurements: pyseq.nn.LSTM/GRU/RNN against torch.nn's, forward (no grad) and forward+backward,
plus the time torch's own GEMM takes for the same matrix products (the floor a GEMM-based design cannot beat)."""

from __future__ import annotations

import dataclasses

import torch

import pyseq

from harness import comparison, time_one, time_pair

# (T, B, I, H): the standard sizes, then one decoder step (a model that feeds one time step per call). Single
# layer, unidirectional, float32.
SIZES = [(100, 32, 256, 256), (100, 64, 512, 512), (200, 1, 128, 128), (1, 1, 256, 256)]
CELLS = ["LSTM", "GRU", "RNN"]
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


@dataclasses.dataclass
class Case:
    cell: str
    T: int
    B: int
    I: int
    H: int

    @property
    def label(self) -> str:
        return f"{self.cell} T={self.T} B={self.B} I={self.I} H={self.H}"

    def flops(self, backward: bool) -> float:
        """Matrix-product FLOPs: input projection and recurrent product forward; backward adds the input, state
        and weight gradients, twice the forward's."""
        forward = 2 * self.T * self.B * GATES[self.cell] * self.H * (self.I + self.H)
        return 3 * forward if backward else forward


def build(case: Case, seed: int = 0):
    torch.manual_seed(seed)
    ours = getattr(pyseq.nn, case.cell)(case.I, case.H)
    ref = getattr(torch.nn, case.cell)(case.I, case.H)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(case.T, case.B, case.I)
    return ours, ref, x


def forward_fn(module, x):
    def run():
        with torch.no_grad():
            module(x)

    return run


def train_fn(module, x):
    x = x.clone().requires_grad_()

    def run():
        out, h = module(x)
        # A loss that touches every output so that the whole backward runs.
        (out.sum() + h[0].sum() if isinstance(h, tuple) else out.sum() + h.sum()).backward()

    return run


def check(ours, ref, x, rtol: float = 1e-4) -> None:
    """pyseq must agree with torch (outputs and input/weight gradients) before it is timed."""
    results = []
    for module in (ours, ref):
        xg = x.clone().requires_grad_()
        out, _ = module(xg)
        out.sum().backward()
        results.append([out.detach(), xg.grad] + [p.grad.clone() for p in module.parameters()])
        module.zero_grad()
    for a, b in zip(*results):
        err = (a - b).abs().max().item()
        assert err <= rtol * max(1.0, b.abs().max().item()), f"pyseq differs from torch by {err}"


def gemm_floor(case: Case, backward: bool) -> float:
    """Seconds torch.mm takes for the matrix products of the layer at these shapes, in the order a fused layer does
    them: the whole-sequence input projection, then T per-step recurrent products (forward); the per-step state
    gradient products and the whole-sequence input and weight gradients (backward)."""
    T, B, I, H, G = case.T, case.B, case.I, case.H, GATES[case.cell]
    x, w_ih_t = torch.randn(T * B, I), torch.randn(I, G * H)
    h, w_hh_t, h_prev = torch.randn(B, H), torch.randn(H, G * H), torch.randn(T * B, H)
    gates, step_gates = torch.empty(T * B, G * H), torch.empty(B, G * H)
    dgates, w_hh, w_ih = torch.randn(T * B, G * H), torch.randn(G * H, H), torch.randn(G * H, I)
    dh, dx, dw_ih, dw_hh = torch.empty(B, H), torch.empty(T * B, I), torch.empty(G * H, I), torch.empty(G * H, H)

    def forward():
        torch.mm(x, w_ih_t, out=gates)
        for _ in range(T):
            torch.mm(h, w_hh_t, out=step_gates)

    def backward_products():
        for t in range(T):
            torch.mm(dgates[t * B : (t + 1) * B], w_hh, out=dh)
        torch.mm(dgates, w_ih, out=dx)
        torch.mm(dgates.t(), x, out=dw_ih)
        torch.mm(dgates.t(), h_prev, out=dw_hh)

    seconds = time_one(forward)
    if backward:
        seconds += time_one(backward_products)
    return seconds


def measure(case: Case, backward: bool, budget_s: float = 1.0) -> dict:
    ours, ref, x = build(case)
    check(ours, ref, x)
    make = train_fn if backward else forward_fn
    t_ours, t_ref = time_pair(make(ours, x), make(ref, x), budget_s=budget_s)
    floor = gemm_floor(case, backward)
    flops = case.flops(backward)
    return {
        **comparison(case.label, "fwd+bwd" if backward else "fwd", t_ours, t_ref),
        "pyseq_gflops": flops / t_ours / 1e9,
        "torch_gflops": flops / t_ref / 1e9,
        "gemm_gflops": flops / floor / 1e9,
        "gemm_ms": floor * 1e3,
    }


def all_cases():
    return [Case(cell, *size) for size in SIZES for cell in CELLS]


# Under CPU bfloat16 autocast (the sizes of the mixed-precision targets): float32 modules, float32 input.
AUTOCAST_SIZES = [(100, 32, 256, 256), (100, 64, 512, 512), (200, 1, 128, 128)]


def autocast_cases():
    return [Case(cell, *size) for size in AUTOCAST_SIZES for cell in CELLS]


def under_autocast(fn):
    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fn()

    return run


def matrix_product_flops(case: Case, backward: bool) -> float:
    """FLOPs of a layer's matrix products: the forward's x @ W_ih^T and h @ W_hh^T over the sequence; the backward
    twice that (the input and state gradients, and the weight gradients)."""
    forward = 2 * case.T * case.B * GATES[case.cell] * case.H * (case.I + case.H)
    return 3 * forward if backward else forward


def measure_autocast(case: Case, backward: bool, budget_s: float = 1.0, bf16_gflops: float | None = None) -> dict:
    """pyseq and torch.nn under torch.autocast("cpu", torch.bfloat16), after checking that their outputs agree to
    bfloat16's resolution. With bf16_gflops (torch's bfloat16 GEMM rate), also the floor: the time of the layer's
    matrix products at that rate."""
    ours, ref, x = build(case)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, _ = ours(x)
        b, _ = ref(x)
    err = (a.float() - b.float()).abs().max().item()
    assert err <= 5e-2 * max(1.0, b.float().abs().max().item()), f"pyseq differs from torch by {err} under autocast"
    make = train_fn if backward else forward_fn
    t_ours, t_ref = time_pair(under_autocast(make(ours, x)), under_autocast(make(ref, x)), budget_s=budget_s)
    row = comparison(case.label + " bf16 autocast", "fwd+bwd" if backward else "fwd", t_ours, t_ref)
    if bf16_gflops:
        row["floor_ms"] = matrix_product_flops(case, backward) / bf16_gflops / 1e6
    return row


# (B, H) for the recurrent step measured alone.
STEP_SIZES = [(16, 256), (32, 256), (64, 512)]


def measure_step(cell: str, B: int, H: int, T: int = 100, budget_s: float = 1.0) -> dict:
    """The recurrent part of a layer on its own: inference with input size 1, so that the input projection is
    negligible and the time is the per-step product plus the fused cell update. GF/s counts the product's FLOPs."""
    torch.manual_seed(0)
    module = getattr(pyseq.nn, cell)(1, H)
    x = torch.randn(T, B, 1)
    seconds = time_one(forward_fn(module, x), budget_s=budget_s)
    return {
        "case": f"{cell} B={B} H={H} T={T}",
        "ms": seconds * 1e3,
        "gflops": 2 * T * B * GATES[cell] * H * H / seconds / 1e9,
    }
