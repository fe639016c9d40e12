import os

import pytest
import torch


def pytest_configure(config):
    # Same thread count in every run so that timings and reductions do not depend on the machine's default.
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:  # the fuzz tests skip themselves
        return
    # test_fuzz.py: a quick profile for `make test`, a long one for `make test-slow` (HYPOTHESIS_PROFILE=long).
    common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
    settings.register_profile("quick", max_examples=30, **common)
    settings.register_profile("long", max_examples=600, **common)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "quick"))


@pytest.fixture(params=["avx512 helpers", "portable"])
def cpu_paths(request):
    """Runs a test with pyseq's AVX-512 intrinsic helpers on (where the CPU has them) and switched off."""
    import pyseq

    pyseq._C.set_avx512_helpers(request.param != "portable")
    yield request.param
    pyseq._C.set_avx512_helpers(True)


def _emulation_build():
    import pyseq.cuda_emulation

    return pyseq.cuda_emulation.available()


# The build of make cuda-emulate adds a third device: the CUDA glue and kernels run on the CPU by the emulator.
DEVICES = ["cpu", "cuda"] + (["emulated"] if _emulation_build() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    """Runs a test on each device: the CPU always, CUDA where torch has a GPU (skipped elsewhere), and in the
    emulation build the emulated CUDA kernels (CPU tensors; pyseq's ops routed to the kernels, each call checked under
    several thread schedules)."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if request.param == "emulated":
        import pyseq.cuda_emulation

        with pyseq.cuda_emulation.emulate():
            yield torch.device("cpu")
        return
    yield torch.device(request.param)


class Gpu:
    """Where a test of the CUDA path runs its pyseq calls: `put` moves a tensor there, and the calls go inside
    `with gpu:`. On CUDA tensors move to the GPU; on the emulated GPU they stay on the CPU and the block routes pyseq's
    ops to the emulated CUDA kernels."""

    def __init__(self, kind):
        self.kind = kind
        self._mode = None

    def put(self, t):
        return t.cuda() if self.kind == "cuda" else t

    def run(self, op, *args):
        """op on this GPU: its tensor arguments moved there, its results (a tensor or a sequence) back on the CPU."""
        with self:
            out = op(*(self.put(a) if isinstance(a, torch.Tensor) else a for a in args))
        return [t.cpu() for t in out] if isinstance(out, (tuple, list)) else out.cpu()

    def __enter__(self):
        if self.kind == "emulated":
            import pyseq.cuda_emulation

            self._mode = pyseq.cuda_emulation.emulate()
            self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        if self._mode is not None:
            self._mode.__exit__(*exc)
            self._mode = None


@pytest.fixture(params=["cuda"] + (["emulated"] if _emulation_build() else []))
def gpu(request):
    """Runs a test of the CUDA path on a GPU (where torch has one) and, in the emulation build, on the emulated GPU."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return Gpu(request.param)


def pytest_terminal_summary(terminalreporter):
    """The skips grouped by reason, so that a run's skip count explains itself (most are the CUDA tests on a
    machine without a GPU)."""
    import collections

    reasons = collections.Counter()
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    if reasons:
        terminalreporter.write_sep("-", f"{sum(reasons.values())} skipped, by reason")
        for reason, count in reasons.most_common():
            terminalreporter.write_line(f"{count:5d}  {reason}")
