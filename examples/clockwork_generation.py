"""Sequence generation with a Clockwork RNN (Koutnik et al. 2014, section 4.1): a network with no input learns to
emit one fixed signal of 320 steps, here a synthesized snippet of sound (three notes' harmonics under decaying
envelopes, plus a slow swell). The Clockwork RNN (pyseq.nn.ClockworkRNN, 8 modules with periods 1, 2, 4, ..., 128)
is compared with a tanh RNN and an LSTM (pyseq.nn.RNN, pyseq.nn.LSTM) of about the same number of parameters, each
followed by a linear read-out, trained the same way (Adam on the mean squared error of the whole sequence, the best of
three learning rates). The networks see only a constant zero input: what they emit comes from their own dynamics,
and the Clockwork RNN's slow modules give it the long time scales that the others must learn to keep.

    python examples/clockwork_generation.py           # full run
    python examples/clockwork_generation.py --quick   # the short run the tests use

The last line printed is a JSON object: mse_clockwork, mse_rnn, mse_lstm (the mean squared error of the emitted
signal after training, best learning rate), parameters (each network's trainable parameters that its layer reads),
learning_rates (the best one of each), steps, seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from torch import nn

import pyseq

T = 320
LEARNING_RATES = (1e-3, 3e-3, 1e-2)


def target_signal(steps: int = T) -> torch.Tensor:
    """[steps]: the snippet, scaled to [-1, 1]. Notes start at steps 0, 110 and 210 with their own decaying
    envelopes; each is a fundamental and two harmonics; a slow swell spans the whole snippet."""
    t = torch.arange(steps, dtype=torch.float64)
    signal = 0.3 * torch.sin(2 * math.pi * t / steps)
    for start, period in ((0, 23.0), (110, 17.0), (210, 29.0)):
        age = (t - start).clamp_min(0)
        envelope = (t >= start) * torch.exp(-age / 70)
        note = sum(a * torch.sin(2 * math.pi * k * age / period) for k, a in ((1, 1.0), (2, 0.4), (3, 0.2)))
        signal = signal + envelope * note
    return (signal / signal.abs().max()).float()


class Generator(nn.Module):
    """A recurrent layer over a constant zero input of one feature, then a linear read-out: [T] values."""

    def __init__(self, kind: str, hidden: int):
        super().__init__()
        if kind == "clockwork":
            self.layer = pyseq.nn.ClockworkRNN(1, hidden, periods=tuple(2 ** i for i in range(8)))
        elif kind == "rnn":
            self.layer = pyseq.nn.RNN(1, hidden)
        else:
            self.layer = pyseq.nn.LSTM(1, hidden)
        self.readout = nn.Linear(hidden, 1)
        self.register_buffer("silence", torch.zeros(T, 1, 1))

    def forward(self) -> torch.Tensor:
        return self.readout(self.layer(self.silence)[0]).view(-1)

    def parameter_count(self) -> int:
        """The parameters the network reads: for the Clockwork RNN the recurrent matrix's block-triangular part, and
        one bias (the layer adds its two biases, as the RNN and the LSTM do, so one of each pair is counted)."""
        count = sum(p.numel() for p in self.readout.parameters())
        for name, p in self.layer.named_parameters():
            if name.startswith("bias_hh"):
                continue  # the layers add it to bias_ih
            if name == "weight_hh" and isinstance(self.layer, pyseq.nn.ClockworkRNN):
                count += int(self.layer.connectivity().sum())
            else:
                count += p.numel()
        return count


# Hidden sizes that give each network about 2,500 parameters (Generator.parameter_count).
HIDDEN = {"clockwork": 64, "rnn": 48, "lstm": 24}


def train(kind: str, lr: float, steps: int, seed: int) -> tuple[float, Generator]:
    torch.manual_seed(seed)
    model = Generator(kind, HIDDEN[kind])
    target = target_signal()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        loss = nn.functional.mse_loss(model(), target)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        return float(nn.functional.mse_loss(model(), target)), model


def run(quick: bool = False, seed: int = 0, log=print) -> dict:
    started = time.perf_counter()
    steps = 400 if quick else 3000
    result: dict = {"parameters": {}, "learning_rates": {}}
    for kind in ("clockwork", "rnn", "lstm"):
        best = None
        for lr in LEARNING_RATES:
            mse, model = train(kind, lr, steps, seed)
            log(f"{kind} lr={lr}: mse {mse:.5f}")
            if best is None or mse < best[0]:
                best = (mse, lr, model)
        result[f"mse_{kind}"] = best[0]
        result["learning_rates"][kind] = best[1]
        result["parameters"][kind] = best[2].parameter_count()
    result.update(steps=steps, seconds=time.perf_counter() - started)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (what the tests use)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick, seed=args.seed)))


if __name__ == "__main__":
    main()
