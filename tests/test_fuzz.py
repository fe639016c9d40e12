"""Property-based fuzzing of every family against its reference, with hypothesis: random sizes (including 0 and 1),
lengths, masks, constraints, strides and scales. The quick profile runs in `make test`; `make test-slow` runs the
long one (HYPOTHESIS_PROFILE=long, see conftest.py). Skipped where hypothesis is not installed."""

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import pyseq  # noqa: E402
from pyseq import functional as F  # noqa: E402
from reference import crf as crf_ref  # noqa: E402
from reference import ctc as ctc_ref  # noqa: E402
from test_attention import naive_additive, naive_dot  # noqa: E402

NEG_INF = float("-inf")


def generator(seed):
    return torch.Generator().manual_seed(seed)


def maybe_strided(x, how):
    """x itself, a slice of a larger padded tensor, or a transposed copy: the same values in another layout."""
    if how == 0:
        return x
    if how == 1:
        padded = torch.zeros(*(s + 2 for s in x.shape), dtype=x.dtype)
        padded[tuple(slice(0, s) for s in x.shape)] = x
        return padded[tuple(slice(0, s) for s in x.shape)]
    return x.transpose(0, 1).contiguous().transpose(0, 1)


@given(
    B=st.integers(1, 4),
    T=st.integers(0, 5),
    K=st.integers(1, 4),
    seed=st.integers(0, 2**31),
    constrained=st.booleans(),
    layout=st.integers(0, 2),
    scale=st.sampled_from([0.1, 1.0, 30.0]),
)
def test_crf_against_brute_force(B, T, K, seed, constrained, layout, scale):
    g = generator(seed)
    em = torch.randn(B, T, K, generator=g, dtype=torch.float64) * scale
    tr, s, e = (torch.randn(*shape, generator=g, dtype=torch.float64) * scale for shape in ((K, K), (K,), (K,)))
    if constrained:
        tr = tr.masked_fill(torch.rand(K, K, generator=g) < 0.3, NEG_INF)
        s = s.masked_fill(torch.rand(K, generator=g) < 0.3, NEG_INF)
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    tags = torch.randint(K, (B, T), generator=g)
    leaves = [maybe_strided(em, layout).detach().requires_grad_(), tr.detach().requires_grad_()]
    log_z = F.crf_log_partition(leaves[0], leaves[1], s, e, lengths)
    llh = F.crf_log_likelihood(leaves[0], tags, leaves[1], s, e, lengths)
    paths, scores = F.crf_viterbi(em, tr, s, e, lengths)
    for b in range(B):
        L = int(lengths[b])
        want_z = crf_ref.log_partition(em[b, :L], tr, s, e)
        torch.testing.assert_close(log_z[b].detach(), want_z, rtol=1e-9, atol=1e-9)
        want_best = crf_ref.kbest(em[b, :L], tr, s, e, 1)
        if L == 0:
            assert scores[b] == 0
        elif want_best and want_best[0][0] > NEG_INF:
            torch.testing.assert_close(scores[b], torch.tensor(want_best[0][0], dtype=torch.float64))
        else:
            assert scores[b] == NEG_INF
    finite = torch.isfinite(llh)
    if finite.any():
        (llh[finite].sum() + log_z[torch.isfinite(log_z)].sum()).backward()
        assert torch.isfinite(leaves[0].grad).all()


@given(
    T=st.integers(1, 7),
    N=st.integers(1, 3),
    C=st.integers(2, 5),
    S=st.integers(0, 4),
    seed=st.integers(0, 2**31),
    layout=st.integers(0, 2),
    reduction=st.sampled_from(["none", "sum", "mean"]),
    zero_infinity=st.booleans(),
)
def test_ctc_against_torch(T, N, C, S, seed, layout, reduction, zero_infinity):
    g = generator(seed)
    logits = torch.randn(T, N, C, generator=g, dtype=torch.float64)
    targets = torch.randint(1, C, (N, S), generator=g)
    input_lengths = torch.randint(0, T + 1, (N,), generator=g)
    target_lengths = torch.randint(0, S + 1, (N,), generator=g)
    args = (targets, input_lengths, target_lengths)
    kw = dict(reduction=reduction, zero_infinity=zero_infinity)
    x = maybe_strided(logits, layout).detach().requires_grad_()
    got = F.ctc_loss(x.log_softmax(2), *args, **kw)
    y = logits.clone().requires_grad_()
    want = torch.nn.functional.ctc_loss(y.log_softmax(2), *args, **kw)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    if torch.isfinite(want).all():
        got.sum().backward()
        want.sum().backward()
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-7, atol=1e-9)


@given(T=st.integers(0, 6), C=st.integers(2, 4), seed=st.integers(0, 2**31))
def test_ctc_greedy_and_alignment_against_brute_force(T, C, seed):
    g = generator(seed)
    lp = torch.randn(T, 1, C, generator=g, dtype=torch.float64).log_softmax(2)
    assert pyseq.ctc.greedy_decode(lp)[0] == ctc_ref.greedy(lp[:, 0], T)
    if T == 0:  # the reference enumerates frames; T = 0 is in test_reliability.py
        return
    S = int(torch.randint(0, T, (1,), generator=g))
    target = torch.randint(1, C, (1, S), generator=g)
    best = ctc_ref.best_alignment_score(lp[:, 0], target[0].tolist())
    if best == NEG_INF:
        with pytest.raises(ValueError):
            pyseq.ctc.forced_align(lp, target)
    else:
        labels, frame_scores = pyseq.ctc.forced_align(lp, target)
        torch.testing.assert_close(frame_scores.sum(), torch.tensor(best, dtype=torch.float64))
        assert ctc_ref.collapse(labels[0].tolist(), 0) == target[0].tolist()


@given(
    mode=st.sampled_from(["LSTM", "GRU", "RNN"]),
    T=st.integers(1, 5),
    B=st.integers(1, 4),
    I=st.integers(1, 5),
    H=st.integers(1, 6),
    layers=st.integers(1, 2),
    bidirectional=st.booleans(),
    batch_first=st.booleans(),
    packed=st.booleans(),
    seed=st.integers(0, 2**31),
    layout=st.integers(0, 2),
)
def test_recurrent_against_torch(mode, T, B, I, H, layers, bidirectional, batch_first, packed, seed, layout):
    torch.manual_seed(seed)
    kw = dict(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, dtype=torch.float64)
    ours = getattr(pyseq.nn, mode)(I, H, **kw)
    ref = getattr(torch.nn, mode)(I, H, **kw)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(B, T, I, dtype=torch.float64) if batch_first else torch.randn(T, B, I, dtype=torch.float64)
    x = maybe_strided(x, layout)
    lengths = torch.randint(1, T + 1, (B,))
    inputs = []
    for _ in range(2):
        leaf = x.detach().clone().requires_grad_()
        inp = (torch.nn.utils.rnn.pack_padded_sequence(leaf, lengths, batch_first=batch_first, enforce_sorted=False)
               if packed else leaf)
        inputs.append((leaf, inp))
    out_ours, out_ref = ours(inputs[0][1])[0], ref(inputs[1][1])[0]
    if packed:
        out_ours, out_ref = out_ours.data, out_ref.data
    torch.testing.assert_close(out_ours, out_ref, rtol=1e-10, atol=1e-10)
    out_ours.sum().backward()
    out_ref.sum().backward()
    torch.testing.assert_close(inputs[0][0].grad, inputs[1][0].grad, rtol=1e-9, atol=1e-10)
    for p, q in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-10)


@given(
    kind=st.sampled_from(["additive", "dot"]),
    B=st.integers(1, 3),
    Tq=st.integers(0, 4),
    Tk=st.integers(1, 5),
    D=st.integers(1, 6),
    Dv=st.integers(1, 3),
    mask_kind=st.sampled_from([None, 2, 3]),
    seed=st.integers(0, 2**31),
    layout=st.integers(0, 2),
    scale=st.sampled_from([0.1, 1.0, 20.0]),
)
def test_attention_against_naive(kind, B, Tq, Tk, D, Dv, mask_kind, seed, layout, scale):
    g = generator(seed)
    q, k = (torch.randn(B, n, D, generator=g, dtype=torch.float64) * scale for n in (Tq, Tk))
    v = torch.randn(D, generator=g, dtype=torch.float64)
    value = torch.randn(B, Tk, Dv, generator=g, dtype=torch.float64)
    mask = None
    if mask_kind is not None:
        mask = torch.rand(*((B, Tk) if mask_kind == 2 else (B, Tq, Tk)), generator=g) < 0.6
    leaves = [maybe_strided(t, layout).detach().requires_grad_() for t in (q, k, value)]
    refs = [t.detach().clone().requires_grad_() for t in (q, k, value)]
    if kind == "additive":
        got = F.additive_attention(leaves[0], leaves[1], v, leaves[2], mask=mask, return_weights=True)
        want = naive_additive(refs[0], refs[1], v, refs[2], mask)
    else:
        got = F.dot_attention(leaves[0], leaves[1], leaves[2], mask=mask, scale=1.0, return_weights=True)
        want = naive_dot(refs[0], refs[1], refs[2], mask)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    if Tq == 0:  # nothing to differentiate (the naive composition has no graph either)
        return
    weights = torch.linspace(-1, 1, got[0].numel(), dtype=torch.float64)
    (got[0].flatten() * weights).sum().backward()
    (want[0].flatten() * weights).sum().backward()
    for a, b in zip(leaves, refs):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-9)

