"""SCRN measurements, float32: pyseq.nn.SCRN's layer (the input projections, the context state's scan, the context's
product with P over the sequence, then the fused hidden-layer time loop) against the paper's equations as a torch
composition (the input projections, then per step the context update, the products with P and R and the sigmoid):
forward, and forward+backward of the sum of the outputs."""

from __future__ import annotations

import dataclasses

import torch

import pyseq

from harness import comparison, time_pair

# (T, B, input, hidden, context): the size, with an input of 128 features (a word embedding's width).
SIZES = [(100, 32, 128, 256, 64)]


@dataclasses.dataclass
class Case:
    T: int
    B: int
    I: int
    H: int
    C: int

    @property
    def label(self) -> str:
        return f"SCRN T={self.T} B={self.B} I={self.I} hidden={self.H} context={self.C}"


def composed(layer: pyseq.nn.SCRN, x: torch.Tensor) -> torch.Tensor:
    """The paper's equations in torch ops, as a user would write them."""
    a = layer.alpha
    projected = torch.nn.functional.linear(x, layer.weight_ih, layer.bias)
    context_in = torch.nn.functional.linear(x, layer.weight_ic) * (1 - a)
    h = x.new_zeros(x.shape[1], layer.hidden_size)
    s = x.new_zeros(x.shape[1], layer.context_size)
    outputs = []
    for t in range(x.shape[0]):
        s = context_in[t] + a * s
        h = torch.sigmoid(projected[t] + s @ layer.weight_ch.t() + h @ layer.weight_hh.t())
        outputs.append(torch.cat([h, s], 1))
    return torch.stack(outputs)


def run_fn(model, x: torch.Tensor, parameters, backward: bool):
    def run():
        if backward:
            for p in parameters:
                p.grad = None
            model(x).sum().backward()
        else:
            with torch.no_grad():
                model(x)

    return run


def check(layer, x) -> None:
    """Same outputs and weight gradients as the composition (float32 tolerance)."""
    results = []
    for model in (lambda x: layer(x)[0], lambda x: composed(layer, x)):
        out = model(x)
        results.append([out, *torch.autograd.grad(out.sum(), list(layer.parameters()))])
    for a, b in zip(*results):
        err = (a - b).abs().max().item()
        assert err <= 1e-4 * max(1.0, b.abs().max().item()), f"pyseq differs from the composition by {err}"


def measure(case: Case, backward: bool, budget_s: float = 1.0) -> dict:
    torch.manual_seed(0)
    layer = pyseq.nn.SCRN(case.I, case.H, case.C)
    x = torch.randn(case.T, case.B, case.I)
    check(layer, x)
    parameters = list(layer.parameters())
    t_ours, t_ref = time_pair(run_fn(lambda x: layer(x)[0], x, parameters, backward),
                              run_fn(lambda x: composed(layer, x), x, parameters, backward), budget_s=budget_s)
    return comparison(case.label, "fwd+bwd" if backward else "fwd", t_ours, t_ref)


def all_cases():
    return [Case(*size) for size in SIZES]
