"""pytest-benchmark suite for the CRF (`make bench-pytest`): each benchmark first checks pyseq.nn.CRF against
pytorch-crf, then times it; pytorch-crf is timed under the same name with `impl=pytorch-crf`."""

import pytest
import torch

from crf_cases import all_cases, build, check, nll_fn

CASES = all_cases()


@pytest.mark.filterwarnings("ignore:where received a uint8 condition tensor")
@pytest.mark.parametrize("impl", ["pyseq", "pytorch-crf"])
@pytest.mark.parametrize("case", CASES, ids=[c.label.replace(" ", "-") for c in CASES])
def test_crf_nll(benchmark, case, impl):
    theirs, ours, emissions, tags, mask = build(case)
    check(theirs, ours, emissions, tags, mask)
    benchmark.group = f"{case.label} NLL fwd+bwd"
    benchmark(nll_fn(ours if impl == "pyseq" else theirs, emissions, tags, mask))


@pytest.mark.parametrize("impl", ["pyseq", "pytorch-crf"])
@pytest.mark.parametrize("case", CASES, ids=[c.label.replace(" ", "-") for c in CASES])
def test_crf_decode(benchmark, case, impl):
    theirs, ours, emissions, _, mask = build(case)
    crf = ours if impl == "pyseq" else theirs
    benchmark.group = f"{case.label} decode"
    with torch.no_grad():
        benchmark(lambda: crf.decode(emissions, mask))
