"""Linear-chain CRF: against brute-force enumeration, gradcheck, opcheck, compile and bad input (against pytorch-crf:
test_crf_vs_pytorch_crf.py)."""

import pytest
import torch

import pyseq
from pyseq import functional as F
from pyseq.crf import TransitionConstraints, allowed_transitions, apply_constraints

from reference import crf as ref

NEG_INF = float("-inf")


def random_crf(K, dtype=torch.float64, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    trans = torch.randn(K, K, generator=g, dtype=dtype) * scale
    start = torch.randn(K, generator=g, dtype=dtype) * scale
    end = torch.randn(K, generator=g, dtype=dtype) * scale
    return trans, start, end


def random_batch(B, T, K, dtype=torch.float64, scale=1.0, seed=1):
    g = torch.Generator().manual_seed(seed)
    em = torch.randn(B, T, K, generator=g, dtype=dtype) * scale
    tags = torch.randint(K, (B, T), generator=g)
    return em, tags


def forbid_some(trans, start, end, seed=2):
    """Constraints with a few forbidden transitions and tags, as -inf scores."""
    g = torch.Generator().manual_seed(seed)
    K = trans.shape[0]
    allowed = TransitionConstraints(
        torch.rand(K, generator=g) < 0.7, torch.rand(K, generator=g) < 0.7, torch.rand(K, K, generator=g) < 0.6
    )
    allowed.start[0] = allowed.end[0] = allowed.transitions[0, 0] = True  # some path of every length
    return apply_constraints(trans, start, end, allowed)


LENGTHS = [4, 0, 1, 3, 2]


@pytest.mark.parametrize("constrained", [False, True])
@pytest.mark.parametrize("K", [1, 3])
def test_log_partition_and_gradients_match_brute_force(K, constrained, device):
    trans, start, end = random_crf(K)
    if constrained and K > 1:
        trans, start, end = forbid_some(trans, start, end)
    em, _ = random_batch(len(LENGTHS), max(LENGTHS), K)
    params = [p.detach().to(device).requires_grad_() for p in (em, trans, start, end)]
    log_z = F.crf_log_partition(params[0], *params[1:], torch.tensor(LENGTHS))
    grads = [g.cpu() for g in torch.autograd.grad(log_z.sum(), params)]
    log_z = log_z.detach().cpu()

    expected_params = [p.detach().clone().requires_grad_() for p in (em, trans, start, end)]
    e, tr, s, en = expected_params
    expected = torch.stack([ref.log_partition(e[b, :L], tr, s, en) for b, L in enumerate(LENGTHS)])
    expected_grads = torch.autograd.grad(expected.sum(), expected_params, allow_unused=True)
    torch.testing.assert_close(log_z, expected.detach(), rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, expected_grads):
        want = torch.zeros_like(got) if want is None else torch.nan_to_num(want, nan=0.0)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_no_allowed_path_gives_minus_infinity_and_zero_gradient(device):
    trans, start, end = random_crf(3)
    allowed = TransitionConstraints(
        torch.tensor([True, False, False]), torch.tensor([False, True, False]), torch.eye(3, dtype=torch.bool)
    )  # start in 0, stay forever, end only in 1: no path of any length (CRF refuses it; functional gives -inf)
    trans, start, end = (t.to(device) for t in apply_constraints(trans, start, end, allowed))
    em, tags = (t.to(device) for t in random_batch(2, 4, 3))
    em.requires_grad_()
    log_z = F.crf_log_partition(em, trans, start, end)
    assert torch.isneginf(log_z).all()
    log_z.sum().backward()
    assert torch.equal(em.grad, torch.zeros_like(em))
    llh = F.crf_log_likelihood(em, tags, trans, start, end)
    assert torch.isneginf(llh).all()
    paths, scores = F.crf_viterbi(em, trans, start, end)
    assert torch.isneginf(scores).all() and (paths == -1).all()
    assert torch.equal(F.crf_marginals(em, trans, start, end), torch.zeros_like(em))
    with pytest.raises(ValueError, match="constraints allow no tag path"):
        pyseq.nn.CRF(3, constraints=allowed)


@pytest.mark.parametrize("constrained", [False, True])
def test_marginals_match_brute_force(constrained, device):
    K = 3
    trans, start, end = random_crf(K)
    if constrained:
        trans, start, end = forbid_some(trans, start, end)
    em, _ = random_batch(len(LENGTHS), max(LENGTHS), K)
    on = [t.to(device) for t in (em, trans, start, end)]
    got = F.crf_marginals(*on, torch.tensor(LENGTHS)).cpu()
    for b, L in enumerate(LENGTHS):
        expected = torch.zeros(max(LENGTHS), K, dtype=em.dtype)
        expected[:L] = ref.marginals(em[b, :L], trans, start, end)
        torch.testing.assert_close(got[b], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("constrained", [False, True])
@pytest.mark.parametrize("nbest", [1, 4, 100])
def test_viterbi_and_kbest_match_brute_force(nbest, constrained, device):
    K = 3
    trans, start, end = random_crf(K)
    if constrained:
        trans, start, end = forbid_some(trans, start, end)
    em, _ = random_batch(len(LENGTHS), max(LENGTHS), K)
    on = [t.to(device) for t in (em, trans, start, end)]
    paths, scores = (t.cpu() for t in F.crf_viterbi(*on, torch.tensor(LENGTHS), nbest=nbest))
    assert paths.shape == (len(LENGTHS), nbest, max(LENGTHS)) and scores.shape == (len(LENGTHS), nbest)
    for b, L in enumerate(LENGTHS):
        expected = ref.kbest(em[b, :L], trans, start, end, nbest)
        for r in range(nbest):
            if r < len(expected):
                assert scores[b, r].item() == pytest.approx(expected[r][0], rel=1e-12, abs=1e-12)
                assert tuple(paths[b, r, :L].tolist()) == expected[r][1]
            else:
                assert scores[b, r].item() == NEG_INF
                assert (paths[b, r] == -1).all()
            assert (paths[b, r, L:] == -1).all()


@pytest.mark.parametrize("cost", [0.0, 1.0, 2.5])
def test_hinge_loss_matches_brute_force(cost):
    K = 3
    trans, start, end = random_crf(K, scale=0.5)
    em, tags = random_batch(len(LENGTHS), max(LENGTHS), K, scale=0.5)
    params = [p.detach().clone().requires_grad_() for p in (em, trans, start, end)]
    loss = F.crf_hinge_loss(params[0], tags, *params[1:], torch.tensor(LENGTHS), cost=cost)
    grads = torch.autograd.grad(loss.sum(), params)
    expected_params = [p.detach().clone().requires_grad_() for p in (em, trans, start, end)]
    e, tr, s, en = expected_params
    expected = torch.stack(
        [ref.hinge(e[b, :L], tags[b, :L].tolist(), tr, s, en, cost) for b, L in enumerate(LENGTHS)]
    )
    expected_grads = torch.autograd.grad(expected.sum(), expected_params, allow_unused=True)
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-12, atol=1e-12)
    assert (loss >= 0).all()
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, torch.zeros_like(got) if want is None else want)


def test_hmm_viterbi_is_viterbi_over_scaled_likelihoods():
    S = 3
    g = torch.Generator().manual_seed(5)
    log_post = torch.randn(2, 4, S, generator=g, dtype=torch.float64).log_softmax(-1)
    log_trans = torch.randn(S, S, generator=g, dtype=torch.float64).log_softmax(-1)
    log_init = torch.randn(S, generator=g, dtype=torch.float64).log_softmax(-1)
    log_prior = torch.randn(S, generator=g, dtype=torch.float64).log_softmax(-1)
    states, scores = F.hmm_viterbi(log_post, log_trans, log_init, log_prior, prior_scale=0.7, lengths=[4, 2])
    for b, L in enumerate([4, 2]):
        expected = ref.kbest(log_post[b, :L] - 0.7 * log_prior, log_trans, log_init, torch.zeros(S, dtype=torch.float64), 1)
        assert tuple(states[b, :L].tolist()) == expected[0][1]
        assert scores[b].item() == pytest.approx(expected[0][0])


def test_empty_sequences_have_one_empty_path(device):
    crf = pyseq.nn.CRF(4, batch_first=True).double().to(device)
    em, tags = (t.to(device) for t in random_batch(3, 5, 4))
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool, device=device)
    llh = crf(em, tags, mask, reduction="none")
    assert llh[1].item() == 0.0
    assert crf.decode(em, mask)[1] == []
    assert crf.marginals(em, mask)[1].abs().sum() == 0
    torch.testing.assert_close(llh[[0, 2]], crf(em[[0, 2]], tags[[0, 2]], mask[[0, 2]], reduction="none"))
    # T = 0: every sequence is empty
    assert crf(em[:, :0], tags[:, :0], reduction="sum").item() == 0.0
    assert crf.decode(em[:, :0]) == [[], [], []]


def test_time_major_input_is_read_in_place():
    K = 6
    trans, start, end = random_crf(K)
    em, tags = random_batch(5, 9, K)
    time_major = em.transpose(0, 1).contiguous()
    view = time_major.transpose(0, 1)  # [B, T, K] with batch stride K
    assert not view.is_contiguous()
    x = view.detach().clone().requires_grad_()  # clone keeps the strides
    y = em.clone().requires_grad_()
    a = F.crf_log_likelihood(x, tags, trans, start, end)
    b = F.crf_log_likelihood(y, tags, trans, start, end)
    torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
    a.sum().backward()
    b.sum().backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(F.crf_marginals(view, trans, start, end), F.crf_marginals(em, trans, start, end))


# ---- constraints ---------------------------------------------------------------------------------------------


def test_allowed_transitions_bio():
    c = allowed_transitions(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"], "BIO")
    assert c.start.tolist() == [True, True, False, True, False]
    assert c.end.tolist() == [True] * 5
    expected = [
        # to: O     B-PER  I-PER  B-LOC  I-LOC
        [True, True, False, True, False],  # from O
        [True, True, True, True, False],  # from B-PER
        [True, True, True, True, False],  # from I-PER
        [True, True, False, True, True],  # from B-LOC
        [True, True, False, True, True],  # from I-LOC
    ]
    assert c.transitions.tolist() == expected


def test_allowed_transitions_iobes_bioul_and_iob1():
    labels = ["O", "B-X", "I-X", "E-X", "S-X"]
    c = allowed_transitions(labels, "IOBES")
    assert c.start.tolist() == [True, True, False, False, True]
    assert c.end.tolist() == [True, False, False, True, True]
    assert c.transitions.tolist() == [
        [True, True, False, False, True],
        [False, False, True, True, False],
        [False, False, True, True, False],
        [True, True, False, False, True],
        [True, True, False, False, True],
    ]
    bioul = allowed_transitions(["O", "B-X", "I-X", "L-X", "U-X"], "BIOUL")
    bmes = allowed_transitions(["O", "B-X", "M-X", "E-X", "S-X"], "bmes")
    for a, b, d in zip(bioul, bmes, c):
        assert torch.equal(a, d) and torch.equal(b, d)
    with pytest.raises(ValueError, match="is not a BMES tag"):
        allowed_transitions(["O", "I-X"], "BMES")
    iob1 = allowed_transitions(["O", "I-X", "B-X"], "IOB1")
    assert iob1.start.tolist() == [True, True, False]
    assert iob1.transitions.tolist() == [[True, True, False], [True, True, True], [True, True, True]]


def is_valid_bio(labels, path):
    prev = "O"
    for k in path:
        tag = labels[k]
        if tag.startswith("I-") and prev[2:] != tag[2:]:
            return False
        prev = tag
    return True


def test_constrained_crf_never_decodes_an_invalid_sequence_and_matches_brute_force():
    labels = ["O", "B-A", "I-A", "B-B", "I-B"]
    constraints = allowed_transitions(labels, "BIO")
    torch.manual_seed(0)
    crf = pyseq.nn.CRF(len(labels), batch_first=True, constraints=constraints).double()
    em = torch.randn(6, 5, len(labels), dtype=torch.float64) * 3
    em[..., 2] += 4  # push towards I-A, which is often forbidden
    for path in crf.decode(em):
        assert is_valid_bio(labels, path)
    for paths in crf.decode(em, nbest=5):
        assert len(paths) == 5 and all(is_valid_bio(labels, p) for p in paths)
    trans, start, end = crf.scores()
    for b in range(3):
        best = ref.kbest(em[b], trans, start, end, 5)
        assert [list(p) for _, p in best] == crf.decode(em, nbest=5)[b]
    tags = torch.tensor([[1, 2, 0, 3, 4]] * 6)
    llh = crf(em, tags, reduction="none")
    expected = torch.stack([ref.path_scores(em[b, :5], trans, start, end)[1] for b in range(6)])
    gold = ref.path_scores(em[0], trans, start, end)[0].index((1, 2, 0, 3, 4))
    torch.testing.assert_close(llh, (expected[:, gold] - expected.logsumexp(1)).detach())
    invalid = torch.tensor([[0, 2, 2, 0, 0]] * 6)  # O -> I-A is forbidden
    assert torch.isneginf(crf(em, invalid, reduction="none")).all()
    llh.sum().backward()
    assert torch.isfinite(crf.transitions.grad).all()
    assert (crf.transitions.grad[~constraints.transitions] == 0).all()


# ---- gradcheck, opcheck, compile -------------------------------------------------------------------------------


def test_gradcheck():
    K = 4
    trans, start, end = (p.requires_grad_() for p in random_crf(K))
    em, tags = random_batch(3, 5, K)
    em.requires_grad_()
    lengths = torch.tensor([5, 2, 0])

    def llh(em, trans, start, end):
        return F.crf_log_likelihood(em, tags, trans, start, end, lengths)

    def hinge(em, trans, start, end):
        return F.crf_hinge_loss(em, tags, trans, start, end, lengths)

    assert torch.autograd.gradcheck(llh, (em, trans, start, end))
    assert torch.autograd.gradcheck(hinge, (em, trans, start, end))


def test_opcheck(device):
    K = 4
    trans, start, end = (t.to(device) for t in random_crf(K))
    em, tags = (t.to(device) for t in random_batch(3, 5, K))
    lengths = torch.tensor([5, 2, 0])
    ops = torch.ops.pyseq
    em_g = em.clone().requires_grad_()
    torch.library.opcheck(ops.crf_log_partition.default, (em_g, lengths, start, end, trans))
    torch.library.opcheck(ops.crf_path_score.default, (em_g, tags, lengths, start, end, trans))
    torch.library.opcheck(ops.crf_log_likelihood.default, (em_g, tags, lengths, start, end, trans))
    llh, alpha, shift = ops.crf_log_likelihood(em, tags, lengths, start, end, trans)
    torch.library.opcheck(
        ops.crf_log_likelihood_backward.default,
        (torch.ones(3, dtype=em.dtype), em, tags, lengths, start, end, trans, llh, alpha, shift),
    )
    _, alpha, shift = ops.crf_log_partition(em, lengths, start, end, trans)
    torch.library.opcheck(
        ops.crf_log_partition_backward.default, (torch.ones(3, dtype=em.dtype), em, lengths, start, end, trans, alpha, shift)
    )
    torch.library.opcheck(ops.crf_path_score_backward.default, (torch.ones(3, dtype=em.dtype), em, tags, lengths))
    torch.library.opcheck(ops.crf_marginals.default, (em, lengths, start, end, trans))
    torch.library.opcheck(ops.crf_viterbi.default, (em, lengths, start, end, trans, 3))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool, device=device)
    torch.library.opcheck(ops.crf_log_likelihood.default, (em_g, tags, mask, start, end, trans))


def test_compile_fullgraph():
    crf = pyseq.nn.CRF(5, constraints=allowed_transitions(["O", "B-A", "I-A", "B-B", "I-B"]))
    em = torch.randn(7, 3, 5)
    tags = torch.tensor([[0, 1, 2, 0, 3, 4, 4]] * 3).t().contiguous()
    mask = torch.arange(7).unsqueeze(1) < torch.tensor([7, 4, 1])

    def step(em, tags, mask):
        return -crf(em, tags, mask), crf.viterbi(em, mask)[0]

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    x = em.clone().requires_grad_()
    loss, paths = compiled(x, tags, mask)
    loss.backward()
    y = em.clone().requires_grad_()
    expected_loss, expected_paths = step(y, tags, mask)
    expected_loss.backward()
    torch.testing.assert_close(loss, expected_loss)
    torch.testing.assert_close(x.grad, y.grad)
    assert torch.equal(paths, expected_paths)


def test_marginals_and_viterbi_on_inputs_that_require_grad():
    """Not differentiable: results that do not require grad, eager and compiled (a training step that also logs
    the posteriors or the best path)."""
    crf = pyseq.nn.CRF(5)
    em = torch.randn(7, 3, 5, requires_grad=True)

    def posteriors_and_path(em):
        return crf.marginals(em), crf.viterbi(em)

    eager = posteriors_and_path(em)
    compiled = torch.compile(posteriors_and_path, backend="aot_eager", fullgraph=True)(em)
    assert not eager[0].requires_grad and not eager[1][1].requires_grad
    torch.testing.assert_close(compiled[0], eager[0])
    assert torch.equal(compiled[1][0], eager[1][0])
    torch.testing.assert_close(eager[0], crf.marginals(em.detach()))


# ---- bad input -------------------------------------------------------------------------------------------------


def test_bad_input():
    crf = pyseq.nn.CRF(3)
    em = torch.randn(4, 2, 3)
    tags = torch.zeros(4, 2, dtype=torch.long)
    cases = [
        (lambda: pyseq.nn.CRF(0), ValueError, "invalid number of tags: 0"),
        (lambda: crf(em[0], tags), ValueError, "emissions must have dimension of 3, got 2"),
        (lambda: crf(torch.randn(4, 2, 5), tags), ValueError, "expected last dimension of emissions is 3, got 5"),
        (lambda: crf(em, tags[:3]), ValueError, "the first two dimensions of emissions and tags must match"),
        (lambda: crf(em, tags, mask=torch.ones(3, 2, dtype=torch.bool)), ValueError, "emissions and mask must match"),
        (lambda: crf(em, tags, mask=torch.ones(4, 2)), TypeError, "mask must be bool or an integer dtype, got torch.float32"),
        (
            lambda: crf(em, tags, mask=torch.tensor([[1, 1], [0, 1], [1, 1], [0, 0]], dtype=torch.bool)),
            ValueError,
            "mask must be a prefix in each sequence .* sequence 0 has a one at step 2 after a zero at step 1",
        ),
        (lambda: crf(em, tags, reduction="avg"), ValueError, "invalid reduction: avg"),
        (lambda: crf(em, tags + 3), ValueError, r"tags must be in \[0, num_tags = 3\), got 3 at step 0 of sequence 0"),
        (lambda: crf(em, tags - 1), ValueError, r"tags must be in \[0, num_tags = 3\), got -1"),
        (lambda: crf(em, tags.float()), TypeError, "tags must hold integer tag ids"),
        (lambda: crf.decode(em, nbest=0), ValueError, "nbest must be a positive integer, got 0"),
        (lambda: crf(em.double(), tags), TypeError, "start_transitions must have the dtype of emissions"),
        (lambda: crf(em.long(), tags), TypeError, "emissions must be float32 or float64"),
        (
            lambda: F.crf_log_partition(em, torch.zeros(3, 4), torch.zeros(3), torch.zeros(3)),
            ValueError,
            r"transitions must have shape \(3, 3\) for num_tags = 3, got \(3, 4\)",
        ),
        (
            lambda: F.crf_log_partition(em, torch.zeros(3, 3), torch.zeros(3), torch.zeros(3), lengths=[3, 5, 1, 1]),
            RuntimeError,
            r"lengths must be in \[0, seq_length = 2\], got 3 for sequence 0",
        ),
        (lambda: allowed_transitions(["O", "X-A"]), ValueError, "tag 'X-A' is not a BIO tag"),
        (lambda: allowed_transitions(["O"], "BILOU2"), ValueError, "unknown tagging scheme"),
        (
            lambda: pyseq.nn.CRF(2, constraints=(torch.ones(2, dtype=torch.bool),) * 3),
            ValueError,
            r"constraints.transitions must have shape \(2, 2\)",
        ),
        (
            lambda: pyseq.nn.CRF(2, constraints=(torch.ones(2), torch.ones(2), torch.ones(2, 2))),
            TypeError,
            "constraints.start must be a bool tensor",
        ),
    ]
    for fn, error, message in cases:
        with pytest.raises(error, match=message):
            fn()


def test_marginals_are_not_differentiable():
    crf = pyseq.nn.CRF(3)
    em = torch.randn(4, 2, 3, requires_grad=True)
    with pytest.raises(RuntimeError):
        crf.marginals(em).sum().backward()
