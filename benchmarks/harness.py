"""Timing helpers shared by the benchmark suites: pyseq and its reference run alternately in one process, on the
same threads, after warm-up; medians are compared."""

from __future__ import annotations

import platform
import statistics
import time

import torch


# The spread of every measurement so far: (interquartile range) / median of its repeated timings, the larger of the
# two sides'. On an idle machine it stays within a few percent; run.py warns when many are wide.
SPREADS: list[float] = []


def _record_spread(*samples: list[float]) -> None:
    spreads = []
    for times in samples:
        if len(times) >= 4:
            q1, _, q3 = statistics.quantiles(times, n=4)
            spreads.append((q3 - q1) / statistics.median(times))
    if spreads:
        SPREADS.append(max(spreads))


def _once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_pair(ours, ref, budget_s: float = 1.0, min_repeats: int = 5, max_repeats: int = 200):
    """Median seconds of `ours` and `ref`, called alternately. The repeat count fills about `budget_s` per side."""
    for fn in (ours, ref, ours, ref):  # warm-up: allocator, thread pools, oneDNN primitive caches
        fn()
    slowest = max(_once(ours), _once(ref))
    repeats = int(min(max_repeats, max(min_repeats, budget_s / max(slowest, 1e-6))))
    times_ours, times_ref = [], []
    for _ in range(repeats):
        times_ours.append(_once(ours))
        times_ref.append(_once(ref))
    _record_spread(times_ours, times_ref)
    return statistics.median(times_ours), statistics.median(times_ref)


def layer_run(model, x: torch.Tensor, parameters, backward: bool):
    """A timed call of a layer: model(x) under no_grad, or its outputs' sum back-propagated to `parameters`."""

    def run():
        if backward:
            for p in parameters:
                p.grad = None
            model(x).sum().backward()
        else:
            with torch.no_grad():
                model(x)

    return run


def check_layer(ours, reference, x: torch.Tensor, parameters) -> None:
    """Same outputs and gradients of `parameters` for the outputs' sum (float32 tolerance)."""
    results = []
    for model in (ours, reference):
        out = model(x)
        results.append([out, *torch.autograd.grad(out.sum(), parameters)])
    for a, b in zip(*results):
        err = (a - b).abs().max().item()
        assert err <= 1e-4 * max(1.0, b.abs().max().item()), f"pyseq differs from the composition by {err}"


def comparison(case: str, pass_name: str, t_ours: float, t_ref: float) -> dict:
    """One table row: pyseq's and the reference's median seconds as milliseconds, and reference / pyseq."""
    return {
        "case": case,
        "pass": pass_name,
        "pyseq_ms": t_ours * 1e3,
        "torch_ms": t_ref * 1e3,
        "speedup": t_ref / t_ours,
    }


def time_one(fn, budget_s: float = 0.5, min_repeats: int = 5, max_repeats: int = 500) -> float:
    fn()
    fn()
    repeats = int(min(max_repeats, max(min_repeats, budget_s / max(_once(fn), 1e-6))))
    times = [_once(fn) for _ in range(repeats)]
    _record_spread(times)
    return statistics.median(times)


def gemm_rate(dtype: torch.dtype = torch.float32, n: int = 2048) -> float:
    """GFLOP/s of torch's GEMM at n x n x n in `dtype`: the machine's practical multiply-add rate on these threads
    (float32: FMA; bfloat16: the bfloat16 dot product where the CPU has one)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n**3 / time_one(lambda: torch.mm(a, b)) / 1e9


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
