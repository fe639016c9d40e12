"""pytest-benchmark suite for attention (`make bench-pytest`): each benchmark first checks pyseq against its
reference (the naive composition, or scaled_dot_product_attention), then times it; the reference is timed under the
same name with `impl=reference`."""

import pytest

from attention_cases import all_cases, check, comparisons, run_fn

CASES = [(case, comparison) for case in all_cases() for comparison in comparisons(case)]


@pytest.mark.parametrize("impl", ["pyseq", "reference"])
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("comparison", [c for _, c in CASES], ids=[c[0].replace(" ", "-") for _, c in CASES])
def test_attention(benchmark, comparison, backward, impl):
    name, ours, ref, inputs, n_grad, ref_name = comparison
    if backward and not n_grad:
        pytest.skip("measured forward only (decoding)")
    check(ours, ref, inputs, n_grad)
    benchmark.group = f"{name} {'fwd+bwd' if backward else 'fwd'} vs {ref_name}"
    benchmark(run_fn(ours if impl == "pyseq" else ref, inputs, backward, n_grad))
