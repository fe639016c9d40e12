"""pytest-benchmark suite for the CTC loss (`make bench-pytest`): each benchmark first checks pyseq against
torch.nn.functional.ctc_loss, then times it; the torch reference is timed under the same name with `impl=torch`."""

import pytest
import torch.nn.functional as F

import pyseq
from ctc_cases import all_cases, build, check, run_fn

CASES = all_cases()


@pytest.mark.parametrize("impl", ["pyseq", "torch"])
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("case", CASES, ids=[c.label.replace(" ", "-") for c in CASES])
def test_ctc_loss(benchmark, case, backward, impl):
    data = build(case)
    check(*data)
    loss_fn = pyseq.functional.ctc_loss if impl == "pyseq" else F.ctc_loss
    benchmark.group = f"{case.label} {'fwd+bwd' if backward else 'fwd'}"
    benchmark(run_fn(loss_fn, *data, backward))
