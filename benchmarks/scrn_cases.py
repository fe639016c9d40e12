"""SCRN measurements, float32: pyseq.nn.SCRN's layer (the input projections, the context state's scan, the context's
product with P over the sequence, then the fused hidden-layer time loop) against the paper's equations as a torch
composition (the input projections, then per step the context update, the products with P and R and the sigmoid):
forward, and forward+backward of the sum of the outputs."""

from __future__ import annotations

import dataclasses

import torch

import pyseq

from harness import check_layer, comparison, layer_run, time_pair

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


def measure(case: Case, backward: bool, budget_s: float = 1.0) -> dict:
    torch.manual_seed(0)
    layer = pyseq.nn.SCRN(case.I, case.H, case.C)
    x = torch.randn(case.T, case.B, case.I)
    check_layer(lambda x: layer(x)[0], lambda x: composed(layer, x), x, list(layer.parameters()))
    parameters = list(layer.parameters())
    t_ours, t_ref = time_pair(layer_run(lambda x: layer(x)[0], x, parameters, backward),
                              layer_run(lambda x: composed(layer, x), x, parameters, backward), budget_s=budget_s)
    return comparison(case.label, "fwd+bwd" if backward else "fwd", t_ours, t_ref)


def all_cases():
    return [Case(*size) for size in SIZES]
