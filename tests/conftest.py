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


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    """Runs a test on each device: the CPU always, CUDA where torch has a GPU (skipped elsewhere)."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch.device(request.param)


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
