import pytest
import torch


def pytest_configure(config):
    # Same thread count in every run so that timings and reductions do not depend on the machine's default.
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(params=["avx512 helpers", "portable"])
def cpu_paths(request):
    """Runs a test with pyseq's AVX-512 intrinsic helpers on (where the CPU has them) and switched off."""
    import pyseq

    pyseq._C.set_avx512_helpers(request.param != "portable")
    yield request.param
    pyseq._C.set_avx512_helpers(True)
