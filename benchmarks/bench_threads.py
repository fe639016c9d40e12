"""More threads than cores: an LSTM at (T=100, B=32, H=256), inference and training, pyseq and torch.nn side by side
at 1 and 2 threads, at the cores this process may use, and at 4x that (what torch.set_num_threads gives in a
container that sees the host's cores). pyseq's recurrent thread team never outnumbers the usable cores; torch's own
GEMMs still use every thread asked for, on both sides.

    python benchmarks/bench_threads.py
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from harness import cpu_model, time_pair  # noqa: E402

import pyseq  # noqa: E402

T, B, H = 100, 32, 256


def main() -> int:
    cores = pyseq._C.usable_cores()
    counts = sorted({1, 2, cores, 4 * cores})
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, {cores} usable; torch {torch.__version__}; "
          f"LSTM T={T} B={B} H={H}, float32")
    torch.manual_seed(0)
    ours, theirs = pyseq.nn.LSTM(H, H), torch.nn.LSTM(H, H)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(T, B, H)
    x_grad = x.clone().requires_grad_()

    def infer(m):
        def run():
            with torch.no_grad():
                m(x)
        return run

    def train(m):
        return lambda: m(x_grad)[0].sum().backward()

    print("| pass | threads | pyseq ms | torch ms | pyseq vs its 2-thread time |")
    print("|---|---|---|---|---|")
    for name, make in (("inference", infer), ("training", train)):
        at_two = None
        for threads in counts:
            torch.set_num_threads(threads)
            t_ours, t_ref = time_pair(make(ours), make(theirs), budget_s=2.0)
            at_two = t_ours if threads == 2 else at_two
            ratio = f"{t_ours / at_two:.2f}x" if at_two and threads >= 2 else "-"
            print(f"| {name} | {threads} | {t_ours * 1e3:.1f} | {t_ref * 1e3:.1f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
