"""The CRF CUDA path (csrc/crf/crf_cuda.*).

On a GPU and on the emulated GPU (the `gpu` fixture; make cuda-emulate): every op's glue and kernels against the CPU
kernels (values, forward variables and gradients, with constraints, NaN, empty and strided input, bad input), at
sizes beyond one block of threads, determinism, 16-bit emissions. The tests of test_crf.py run there too (their
`device` fixture). (That the CUDA kernels are registered: test_ops.py.)
"""

import pytest
import torch

import pyseq
from pyseq.crf import TransitionConstraints, apply_constraints

ops = torch.ops.pyseq


def problem(B, T, K, dtype=torch.float64, scale=1.0, constrained=False, seed=0):
    """Emissions, tags, lengths (one full, one empty), start, end, transitions; with `constrained`, forbidden tags and
    transitions as -inf, and sequence 2's first emission forbidden everywhere (no allowed path)."""
    g = torch.Generator().manual_seed(seed)
    em = torch.randn(B, T, K, generator=g, dtype=dtype) * scale
    tags = torch.randint(K, (B, T), generator=g)
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    lengths[0] = T
    if B > 1:
        lengths[1] = 0
    trans, start, end = (torch.randn(*shape, generator=g, dtype=dtype) * scale for shape in ((K, K), (K,), (K,)))
    if constrained and K > 1:
        allowed = TransitionConstraints(torch.rand(K, generator=g) < 0.7, torch.rand(K, generator=g) < 0.7,
                                        torch.rand(K, K, generator=g) < 0.6)
        allowed.start[0] = allowed.end[0] = allowed.transitions[0, 0] = True
        trans, start, end = apply_constraints(trans, start, end, allowed)
        if B > 2 and lengths[2] > 0:
            em[2, 0] = float("-inf")
    return em, tags, lengths, start, end, trans


def close(got, expected, dtype):
    # float64: the same math up to summation order; float32: a few units of the last place over T steps.
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, equal_nan=True, **tol)


CASES = [(B, T, K, scale, constrained) for B, T, K, scale, constrained in [
    (1, 1, 1, 1.0, False), (5, 7, 3, 1.0, True), (4, 9, 17, 1.0, False), (6, 12, 5, 30.0, True), (3, 20, 70, 3.0, True),
    (4, 30, 4, 80.0, False),  # large scores: the exact log-space fallbacks and the pairwise scale limit
]]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("B,T,K,scale,constrained", CASES)
def test_kernels_match_cpu(gpu, dtype, B, T, K, scale, constrained):
    em, tags, lengths, start, end, trans = problem(B, T, K, dtype, scale, constrained, seed=B + T + K)
    scores = (start, end, trans)
    log_z, alpha, shift = ops.crf_log_partition(em, lengths, *scores)
    got = gpu.run(ops.crf_log_partition, em, lengths, *scores)
    close([got[0]], [log_z], dtype)
    valid = alpha.isfinite()  # the forward variables agree where finite, and are -inf at the same cells
    assert torch.equal(got[1].isfinite(), valid)
    close([got[1][valid], got[2]], [alpha[valid], shift], dtype)

    grad = torch.linspace(-1.0, 1.5, B, dtype=dtype)
    grad[-1] = 0
    close(gpu.run(ops.crf_log_partition_backward, grad, em, lengths, *scores, alpha, shift),
          ops.crf_log_partition_backward(grad, em, lengths, *scores, alpha, shift), dtype)

    llh, alpha, shift = ops.crf_log_likelihood(em, tags, lengths, *scores)
    got = gpu.run(ops.crf_log_likelihood, em, tags, lengths, *scores)
    close([got[0]], [llh], dtype)
    close(gpu.run(ops.crf_log_likelihood_backward, grad, em, tags, lengths, *scores, llh, alpha, shift),
          ops.crf_log_likelihood_backward(grad, em, tags, lengths, *scores, llh, alpha, shift), dtype)

    close([gpu.run(ops.crf_marginals, em, lengths, *scores)], [ops.crf_marginals(em, lengths, *scores)], dtype)
    close([gpu.run(ops.crf_path_score, em, tags, lengths, *scores)], [ops.crf_path_score(em, tags, lengths, *scores)],
          dtype)
    close(gpu.run(ops.crf_path_score_backward, grad, em, tags, lengths),
          ops.crf_path_score_backward(grad, em, tags, lengths), dtype)
    for nbest in (1, 3):
        paths, best = gpu.run(ops.crf_viterbi, em, lengths, *scores, nbest)
        expected_paths, expected_best = ops.crf_viterbi(em, lengths, *scores, nbest)
        assert torch.equal(paths, expected_paths)
        close([best], [expected_best], dtype)


def test_nan_mask_and_time_major_input(gpu):
    em, tags, lengths, start, end, trans = problem(5, 8, 4, seed=3)
    em[0, 2, 1] = float("nan")  # within sequence 0: its results are NaN; sequence 3 only past its length
    lengths[3] = 4
    em[3, 6, 0] = float("nan")
    mask = torch.arange(8) < lengths.unsqueeze(1)
    em_t = em.transpose(0, 1).contiguous().transpose(0, 1)  # time-major storage, read in place
    scores = (start, end, trans)
    log_z, alpha, shift = ops.crf_log_partition(em_t, mask, *scores)
    got = gpu.run(ops.crf_log_partition, em_t, mask, *scores)
    close([got[0]], [log_z], torch.float64)
    assert log_z[0].isnan() and not log_z[3].isnan()
    grad = torch.ones(5, dtype=em.dtype)
    close(gpu.run(ops.crf_log_partition_backward, grad, em_t, mask, *scores, alpha, shift),
          ops.crf_log_partition_backward(grad, em_t, mask, *scores, alpha, shift), torch.float64)
    llh, alpha, shift = ops.crf_log_likelihood(em_t, tags, mask, *scores)
    close(gpu.run(ops.crf_log_likelihood_backward, grad, em_t, tags, mask, *scores, llh, alpha, shift),
          ops.crf_log_likelihood_backward(grad, em_t, tags, mask, *scores, llh, alpha, shift), torch.float64)
    close(gpu.run(ops.crf_viterbi, em_t, mask, *scores, 1)[1:], ops.crf_viterbi(em_t, mask, *scores, 1)[1:],
          torch.float64)
    trans_nan = trans.clone()
    trans_nan[1, 2] = float("nan")  # every sequence with steps reads it
    close([gpu.run(ops.crf_log_partition, em, lengths, start, end, trans_nan)[0]],
          [ops.crf_log_partition(em, lengths, start, end, trans_nan)[0]], torch.float64)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_scores_far_apart(gpu, dtype):
    """Scores spread over thousands: the backward's beta takes its exact log-space fallback, a sum over every tag's
    w (crf_pair_and_beta), which the barrier at the top of each backward step keeps from the next step's writes."""
    em, tags, lengths, start, end, trans = problem(3, 12, 40, dtype, scale=1000.0, seed=11)
    scores = (start, end, trans)
    grad = torch.linspace(0.5, 1.5, 3, dtype=dtype)
    llh, alpha, shift = ops.crf_log_likelihood(em, tags, lengths, *scores)
    close(gpu.run(ops.crf_log_likelihood_backward, grad, em, tags, lengths, *scores, llh, alpha, shift),
          ops.crf_log_likelihood_backward(grad, em, tags, lengths, *scores, llh, alpha, shift), dtype)
    close([gpu.run(ops.crf_marginals, em, lengths, *scores)], [ops.crf_marginals(em, lengths, *scores)], dtype)


def test_bad_input(gpu):
    em, tags, lengths, start, end, trans = problem(3, 5, 4)
    with pytest.raises(ValueError, match="tags must be in \\[0, num_tags = 4\\)"):
        gpu.run(ops.crf_log_likelihood, em, tags + 4, lengths, start, end, trans)
    with pytest.raises(RuntimeError, match="transitions must have shape"):
        gpu.run(ops.crf_log_partition, em, lengths, start, end, trans[:3])
    with pytest.raises(ValueError, match="mask must be a prefix"):
        gpu.run(ops.crf_marginals, em, torch.tensor([[1, 0, 1, 0, 0]] * 3, dtype=torch.bool), start, end, trans)


# ---- at scale -----------------------------------------------------------------------------------------------------

def llh_and_grads(em, tags, lengths, scores):
    params = [p.detach().clone().requires_grad_() for p in (em, *scores)]
    llh = pyseq.functional.crf_log_likelihood(params[0], tags, params[3], params[1], params[2], lengths)
    return [llh.detach()] + list(torch.autograd.grad(llh.sum(), params))


@pytest.mark.parametrize("B,T,K", [(64, 100, 20), (16, 200, 50), (3, 10, 1100 // 2), (5, 7, 1000)])
def test_cuda_matches_cpu(gpu, B, T, K):
    em, tags, lengths, start, end, trans = problem(B, T, K, torch.float32, constrained=True)
    cpu = llh_and_grads(em, tags, lengths, (start, end, trans))
    scores = (gpu.put(start), gpu.put(end), gpu.put(trans))
    with gpu:
        cuda = llh_and_grads(gpu.put(em), gpu.put(tags), lengths, scores)
        marginals = ops.crf_marginals(gpu.put(em), lengths, *scores)
        viterbi = [ops.crf_viterbi(gpu.put(em), gpu.put(lengths), *scores, nbest) for nbest in (1, 2)]
    for a, b in zip(cuda, cpu):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(marginals.cpu(), ops.crf_marginals(em, lengths, start, end, trans), rtol=1e-4,
                               atol=1e-5)
    for nbest, (paths, best) in zip((1, 2), viterbi):
        expected_paths, expected_best = ops.crf_viterbi(em, lengths, start, end, trans, nbest)
        assert torch.equal(paths.cpu(), expected_paths)
        torch.testing.assert_close(best.cpu(), expected_best, rtol=1e-5, atol=1e-4)


def test_cuda_is_deterministic_and_takes_16_bit_emissions(gpu):
    em, tags, lengths, start, end, trans = problem(32, 50, 30, torch.float32)
    on = (gpu.put(em), gpu.put(tags), lengths, (gpu.put(start), gpu.put(end), gpu.put(trans)))
    em16 = em.to(torch.bfloat16)
    with gpu:
        for a, b in zip(llh_and_grads(*on), llh_and_grads(*on)):
            assert torch.equal(a, b)
        got = llh_and_grads(gpu.put(em16), *on[1:])
        expected = llh_and_grads(gpu.put(em16.float()), *on[1:])
    assert got[0].dtype == torch.float32 and got[1].dtype == torch.bfloat16
    torch.testing.assert_close(got[0], expected[0])
    torch.testing.assert_close(got[1].float(), expected[1].to(torch.bfloat16).float())
