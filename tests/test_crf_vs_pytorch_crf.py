"""pyseq.nn.CRF against pytorch-crf's torchcrf.CRF: parameters, values, gradients, decodes, float32 accuracy.

pytorch-crf comes with requirements-dev.txt; where it cannot be installed (the GPU machines of `make gpu-check` have
no network) these tests are skipped, and the brute-force ones in test_crf.py still run.
"""

import pytest
import torch

import pyseq
from pyseq import functional as F
from pyseq.crf import allowed_transitions

torchcrf = pytest.importorskip("torchcrf", reason="pytorch-crf is not installed")


def pair(K, batch_first, seed=0, constraints=None):
    torch.manual_seed(seed)
    theirs = torchcrf.CRF(K, batch_first=batch_first)
    torch.manual_seed(seed)
    ours = pyseq.nn.CRF(K, batch_first=batch_first, constraints=constraints)
    return theirs, ours


def test_same_parameters_state_dict_and_repr_as_pytorch_crf():
    theirs, ours = pair(5, False)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value)
    assert repr(ours) == repr(theirs) == "CRF(num_tags=5)"
    constrained = pyseq.nn.CRF(3, constraints=allowed_transitions(["O", "B-X", "I-X"]))
    assert list(constrained.state_dict()) == list(theirs.state_dict())


@pytest.mark.filterwarnings("ignore:where received a uint8 condition tensor")
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "token_mean"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_and_gradients_match_pytorch_crf(batch_first, reduction, dtype):
    T, B, K = 13, 6, 7
    theirs, ours = pair(K, batch_first)
    theirs.to(dtype)
    ours.to(dtype)
    em = torch.randn(T, B, K, dtype=dtype)
    tags = torch.randint(K, (T, B))
    lengths = torch.tensor([13, 1, 7, 13, 2, 9])
    mask = (torch.arange(T).unsqueeze(1) < lengths).to(torch.uint8)
    if batch_first:
        em, tags, mask = em.transpose(0, 1).contiguous(), tags.t().contiguous(), mask.t().contiguous()
    results = []
    for crf in (theirs, ours):
        x = em.clone().requires_grad_()
        out = crf(x, tags, mask, reduction=reduction)
        params = [x, crf.transitions, crf.start_transitions, crf.end_transitions]
        results.append((out, torch.autograd.grad(out.sum(), params)))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(results[1][0], results[0][0], **tol)
    for got, want in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(got, want, **tol)


@pytest.mark.filterwarnings("ignore:where received a uint8 condition tensor")
@pytest.mark.parametrize("batch_first", [False, True])
def test_decode_matches_pytorch_crf(batch_first):
    T, B, K = 20, 8, 9
    theirs, ours = pair(K, batch_first)
    em = torch.randn(B, T, K) if batch_first else torch.randn(T, B, K)
    lengths = torch.tensor([20, 1, 5, 20, 19, 3, 11, 2])
    mask = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)
    mask = mask if batch_first else mask.t()
    assert ours.decode(em, mask) == theirs.decode(em, mask)
    assert ours.decode(em) == theirs.decode(em)
    tags, scores = ours.viterbi(em, mask)
    expected = theirs.decode(em, mask)
    for b, L in enumerate(lengths.tolist()):
        assert tags[b, :L].tolist() == expected[b] and (tags[b, L:] == -1).all()
    best = F.crf_score(
        em if batch_first else em.transpose(0, 1), tags.clamp(min=0), ours.transitions, ours.start_transitions,
        ours.end_transitions, lengths,
    )
    torch.testing.assert_close(scores, best.detach())


@pytest.mark.filterwarnings("ignore:where received a uint8 condition tensor")
@pytest.mark.parametrize("scale, soft_forbid", [(1.0, False), (40.0, False), (3.0, True)])
def test_float32_is_as_accurate_as_log_space(scale, soft_forbid):
    """float32 kernels (mixed probability/log space) against pytorch-crf's log-space recursion in float64, next to
    pytorch-crf itself in float32: long sequences, scores spread over hundreds of nats, and pytorch-crf-style "soft"
    constraints (-10000). The error of both float32 versions grows with the magnitude of the scores (log Z runs into
    the thousands here). pyseq keeps the forward and backward variables relative to a running shift summed in
    double: its log-likelihood (a float32 number in the thousands) is as accurate as pytorch-crf's, and its
    gradients (marginals) are several times more accurate (measured 20-60x)."""
    T, B, K = 113, 4, 20
    theirs, _ = pair(K, False, seed=3)
    with torch.no_grad():
        for p in theirs.parameters():
            p.mul_(scale * 10)
        if soft_forbid:
            theirs.transitions[torch.rand(K, K) < 0.5] = -10000.0
    ours = pyseq.nn.CRF(K)
    ours.load_state_dict(theirs.state_dict())
    reference = torchcrf.CRF(K).double()
    reference.load_state_dict(theirs.state_dict())
    em = torch.randn(T, B, K, dtype=torch.float64) * scale
    tags = torch.randint(K, (T, B))

    def run(crf, x):
        x = x.clone().requires_grad_()
        llh = crf(x, tags, reduction="none")
        llh.sum().backward()
        return llh.detach().double(), x.grad.double(), crf.transitions.grad.double()

    expected = run(reference, em)
    errors = {}
    for name, crf in (("theirs", theirs), ("ours", ours)):
        errors[name] = [(got - want).abs().max().item() for got, want in zip(run(crf, em.float()), expected)]
    (llh_ours, *grads_ours), (llh_theirs, *grads_theirs) = errors["ours"], errors["theirs"]
    assert llh_ours <= 1.5 * llh_theirs, errors
    for ours_err, theirs_err in zip(grads_ours, grads_theirs):
        assert ours_err <= theirs_err / 3, errors
