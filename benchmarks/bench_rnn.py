"""pytest-benchmark suite for the recurrent layers (`make bench-pytest`): each benchmark first checks pyseq against
torch, then times it; the torch reference is timed under the same name with `impl=torch`."""

import pytest

from rnn_cases import all_cases, build, check, forward_fn, train_fn

CASES = all_cases()


@pytest.mark.parametrize("impl", ["pyseq", "torch"])
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("case", CASES, ids=[c.label.replace(" ", "-") for c in CASES])
def test_rnn(benchmark, case, backward, impl):
    ours, ref, x = build(case)
    check(ours, ref, x)
    module = ours if impl == "pyseq" else ref
    benchmark.group = f"{case.label} {'fwd+bwd' if backward else 'fwd'}"
    benchmark((train_fn if backward else forward_fn)(module, x))
