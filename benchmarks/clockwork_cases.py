"""Clockwork RNN measurements, float32: pyseq.nn.ClockworkRNN's layer (input projection, then the fused time loop
that computes only the active modules) against (a) the paper's equations as a torch composition (the input
projection, then per step the masked recurrent product of the active modules and the update), and (b) a pyseq tanh
RNN of the same hidden size, which does all of the recurrent work every step: forward, and forward+backward of the
sum of the outputs."""

from __future__ import annotations

import dataclasses

import torch

import pyseq

from harness import check_layer, comparison, layer_run, time_pair

# (T, B, input, modules, module width): the size, exponential periods 1, 2, 4, ..., 128.
SIZES = [(320, 32, 32, 8, 32)]


@dataclasses.dataclass
class Case:
    T: int
    B: int
    I: int
    modules: int
    width: int

    @property
    def H(self) -> int:
        return self.modules * self.width

    @property
    def periods(self) -> tuple[int, ...]:
        return tuple(2 ** i for i in range(self.modules))

    def label(self, reference: str) -> str:
        return (f"clockwork T={self.T} B={self.B} I={self.I} {self.modules}x{self.width} units vs {reference}")


def composed(layer: pyseq.nn.ClockworkRNN, x: torch.Tensor) -> torch.Tensor:
    """The paper's equations in torch ops, as a user would write them: the connectivity mask on W_hh, and per step
    the product of the active modules' rows with the state."""
    H, width = layer.hidden_size, layer.hidden_size // len(layer.periods)
    w_hh = layer.weight_hh * layer.connectivity()
    projected = torch.nn.functional.linear(x, layer.weight_ih, layer.bias_ih + layer.bias_hh)
    h = x.new_zeros(x.shape[1], H)
    outputs = []
    for t in range(x.shape[0]):
        active = sum(1 for p in layer.periods if t % p == 0) * width  # exponential periods: a prefix of the modules
        new = torch.tanh(projected[t, :, :active] + h @ w_hh[:active].t())
        h = torch.cat([new, h[:, active:]], 1)
        outputs.append(h)
    return torch.stack(outputs)


def measure(case: Case, backward: bool, budget_s: float = 1.0, reference: str = "torch") -> dict:
    """reference "torch": the composition; "rnn": pyseq.nn.RNN(I, H) with tanh."""
    torch.manual_seed(0)
    layer = pyseq.nn.ClockworkRNN(case.I, case.H, case.periods)
    x = torch.randn(case.T, case.B, case.I)
    check_layer(lambda x: layer(x)[0], lambda x: composed(layer, x), x, (layer.weight_hh, layer.weight_ih))
    ours = layer_run(lambda x: layer(x)[0], x, list(layer.parameters()), backward)
    if reference == "torch":
        ref = layer_run(lambda x: composed(layer, x), x, list(layer.parameters()), backward)
        name = "torch composition"
    else:
        rnn = pyseq.nn.RNN(case.I, case.H)
        ref = layer_run(lambda x: rnn(x)[0], x, list(rnn.parameters()), backward)
        name = f"pyseq tanh RNN H={case.H}"
    t_ours, t_ref = time_pair(ours, ref, budget_s=budget_s)
    return comparison(case.label(name), "fwd+bwd" if backward else "fwd", t_ours, t_ref)


def measure_against_rnn(case: Case, backward: bool, budget_s: float = 1.0) -> dict:
    return measure(case, backward, budget_s, reference="rnn")


def all_cases():
    return [Case(*size) for size in SIZES]
