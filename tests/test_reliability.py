"""Reliability across families: strided and expanded inputs, empty sequences through the decoders, mixed devices,
NaN propagation, masks of any integer dtype, rejected input, bitwise determinism (thread count, grad mode) and the
bound on scratch memory. Each test names the case it keeps out."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import pyseq
from pyseq import functional as F

NAN = float("nan")


def grads_of(fn, *inputs):
    """fn's output and the gradients of (output * fixed weights).sum() for every input."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*leaves)
    out = out if isinstance(out, torch.Tensor) else out[0]
    weights = torch.linspace(-1, 2, out.numel(), dtype=out.dtype).reshape(out.shape)
    return (out.detach(), *torch.autograd.grad((out * weights).sum(), leaves))


def layouts(x):
    """The same values as x [B, T, F] in other layouts: a slice of a tensor padded in every dimension, a slice along
    time of a longer tensor, and a time-major tensor transposed."""
    B, T, D = x.shape
    padded = torch.zeros(B, T + 3, D + 2, dtype=x.dtype)
    padded[:, :T, :D] = x
    return {
        "sliced": padded[:, :T, :D],
        "sliced time": torch.cat([x, x], 1)[:, :T],
        "transposed": x.transpose(0, 1).contiguous().transpose(0, 1),
    }


# ---- strided and expanded inputs ------------------------------------------------------------------------------------


def crf_params(K, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(K, K, generator=g), torch.randn(K, generator=g), torch.randn(K, generator=g)


CRF_OPS = {
    "log_likelihood": lambda em, tags, tr, s, e, L: F.crf_log_likelihood(em, tags, tr, s, e, L),
    "log_partition": lambda em, tags, tr, s, e, L: F.crf_log_partition(em, tr, s, e, L),
    "score": lambda em, tags, tr, s, e, L: F.crf_score(em, tags, tr, s, e, L),
    "hinge": lambda em, tags, tr, s, e, L: F.crf_hinge_loss(em, tags, tr, s, e, L),
}


@pytest.mark.parametrize("op", sorted(CRF_OPS))
def test_crf_strided_and_expanded_emissions(op):
    """Emissions that are a slice of a padded tensor once overflowed the gradient buffer (heap corruption)."""
    B, T, K = 4, 7, 5
    tr, s, e = crf_params(K)
    em = torch.randn(B, T, K)
    tags = torch.randint(K, (B, T))
    lengths = torch.tensor([7, 3, 0, 5])
    fn = CRF_OPS[op]
    expected = grads_of(lambda *a: fn(a[0], tags, *a[1:], lengths), em, tr, s, e)
    for name, strided in layouts(em).items():
        got = grads_of(lambda *a: fn(a[0], tags, *a[1:], lengths), strided, tr, s, e)
        for g, x in zip(got, expected):
            torch.testing.assert_close(g, x, msg=f"{op}, {name}")
    # Expanded emissions: one row shared by the batch; its gradient is the sum over the batch.
    row = em[:1]
    base = grads_of(lambda *a: fn(a[0], tags, *a[1:], lengths), row.expand(B, T, K).contiguous(), tr, s, e)
    leaf = row.detach().clone().requires_grad_()
    out = fn(leaf.expand(B, T, K), tags, tr, s, e, lengths)
    weights = torch.linspace(-1, 2, out.numel()).reshape(out.shape)
    (out * weights).sum().backward()
    torch.testing.assert_close(out.detach(), base[0])
    torch.testing.assert_close(leaf.grad, base[1].sum(0, keepdim=True))


def test_crf_marginals_and_viterbi_strided():
    B, T, K = 3, 6, 4
    tr, s, e = crf_params(K)
    em = torch.randn(B, T, K)
    mask = torch.arange(T) < torch.tensor([[6], [2], [4]])
    for name, strided in {**layouts(em), "expanded": em[:1].expand(B, T, K)}.items():
        ref_em = strided.contiguous()
        torch.testing.assert_close(F.crf_marginals(strided, tr, s, e, mask), F.crf_marginals(ref_em, tr, s, e, mask),
                                   msg=name)
        for nbest in (1, 2):
            got = F.crf_viterbi(strided, tr, s, e, mask, nbest=nbest)
            want = F.crf_viterbi(ref_em, tr, s, e, mask, nbest=nbest)
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, msg=name)
    assert F.crf_marginals(em[:, :4], tr, s, e).is_contiguous()


def test_crf_strided_transition_parameters():
    """A transposed transitions tensor (and strided start/end) gives gradients in the parameters' own layout."""
    B, T, K = 3, 5, 4
    tr, s, e = crf_params(K)
    em = torch.randn(B, T, K)
    tags = torch.randint(K, (B, T))
    expected = grads_of(lambda *a: F.crf_log_likelihood(em, tags, *a), tr, s, e)
    tr_t = tr.t().contiguous().t()
    s_strided = torch.stack([s, s], 1)[:, 0]
    got = grads_of(lambda *a: F.crf_log_likelihood(em, tags, *a), tr_t, s_strided, e)
    for g, x in zip(got, expected):
        torch.testing.assert_close(g, x)


def test_ctc_strided_and_expanded_log_probs():
    T, N, C, S = 12, 3, 6, 4
    lp = torch.randn(T, N, C, dtype=torch.float64).log_softmax(2)
    targets = torch.randint(1, C, (N, S))
    args = (targets, [12, 9, 7], [4, 2, 3])
    fn = lambda x: F.ctc_loss(x, *args, reduction="none")  # noqa: E731
    expected = grads_of(fn, lp)
    padded = torch.zeros(T + 2, N, C + 3, dtype=torch.float64)
    padded[:T, :, :C] = lp
    for name, strided in {
        "sliced": padded[:T, :, :C],
        "batch-major transposed": lp.transpose(0, 1).contiguous().transpose(0, 1),
    }.items():
        for g, x in zip(grads_of(fn, strided), expected):
            torch.testing.assert_close(g, x, msg=name)
    row = lp[:, :1]
    leaf = row.detach().clone().requires_grad_()
    out = fn(leaf.expand(T, N, C))
    base = grads_of(fn, row.expand(T, N, C).contiguous())
    (out * torch.linspace(-1, 2, N, dtype=out.dtype)).sum().backward()
    torch.testing.assert_close(out.detach(), base[0])
    torch.testing.assert_close(leaf.grad, base[1].sum(1, keepdim=True))


@pytest.mark.parametrize("kind", ["additive", "dot"])
def test_attention_strided_and_expanded_inputs(kind):
    B, Tq, Tk, D = 3, 4, 6, 5
    q, k, v = torch.randn(B, Tq, D), torch.randn(B, Tk, D), torch.randn(B, Tk, 3)
    w = torch.randn(D)
    mask = torch.arange(Tk) < torch.tensor([[6], [2], [4]])

    def fn(q, k, v):
        if kind == "additive":
            return F.additive_attention(q, k, w, v, mask=mask, return_weights=True)[0]
        return F.dot_attention(q, k, v, mask=mask)[0]

    expected = grads_of(fn, q, k, v)
    got = grads_of(fn, *(list(layouts(t).values())[0] for t in (q, k, v)))
    for g, x in zip(got, expected):
        torch.testing.assert_close(g, x)
    got = grads_of(fn, *(layouts(t)["transposed"] for t in (q, k, v)))
    for g, x in zip(got, expected):
        torch.testing.assert_close(g, x)
    # A query expanded over Tq (the same decoder state attending several times).
    qe = q[:, :1].expand(B, Tq, D)
    torch.testing.assert_close(fn(qe, k, v), fn(qe.contiguous(), k, v))


@pytest.mark.parametrize("cls", [pyseq.nn.LSTM, pyseq.nn.GRU, pyseq.nn.RNN])
def test_rnn_strided_input_and_weights(cls):
    torch.manual_seed(0)
    m = cls(6, 5, batch_first=True)
    x = torch.randn(3, 7, 6)
    expected = grads_of(lambda x: m(x)[0], x)
    for name, strided in layouts(x).items():
        for g, e in zip(grads_of(lambda x: m(x)[0], strided), expected):
            torch.testing.assert_close(g, e, msg=name)
    expanded = x[:1].expand(3, 7, 6)
    torch.testing.assert_close(m(expanded)[0], m(expanded.contiguous())[0])
    # Weights in another layout (transposed storage), as a user of the functional API may hold them.
    fn = F.lstm if cls is pyseq.nn.LSTM else F.gru if cls is pyseq.nn.GRU else F.rnn
    weights = [p.detach() for p in m._flat_weights]
    transposed = [t.t().contiguous().t() if t.dim() == 2 else t for t in weights]
    torch.testing.assert_close(fn(x.transpose(0, 1), None, transposed)[0], fn(x.transpose(0, 1), None, weights)[0])


# ---- empty sequences through every decoder ---------------------------------------------------------------------------


def test_decoders_with_no_time_steps():
    """T = 0 once read emission row 0 of every sequence (a null pointer for an empty tensor)."""
    K = 4
    tr, s, e = crf_params(K)
    em = torch.randn(3, 0, K)
    crf = pyseq.nn.CRF(K, batch_first=True)
    assert crf.decode(em) == [[], [], []]
    assert crf.decode(em, nbest=2) == [[[]], [[]], [[]]]
    paths, scores = F.crf_viterbi(em, tr, s, e)
    assert paths.shape == (3, 0) and scores.tolist() == [0.0, 0.0, 0.0]
    assert F.hmm_viterbi(em, tr, s)[0].shape == (3, 0)
    assert F.crf_hinge_loss(em, torch.zeros(3, 0, dtype=torch.long), tr, s, e).tolist() == [0.0, 0.0, 0.0]
    assert crf.marginals(em).shape == (3, 0, K)
    lp = torch.randn(0, 2, 5).log_softmax(2)
    assert pyseq.ctc.greedy_decode(lp) == [[], []]
    assert [h[0].tokens for h in pyseq.ctc.beam_search(lp)] == [[], []]
    assert pyseq.ctc.forced_align(lp, torch.zeros(2, 0, dtype=torch.long))[0].shape == (2, 0)


def test_decoders_with_empty_sequences_among_others():
    K = 3
    tr, s, e = crf_params(K)
    em = torch.randn(3, 5, K)
    lengths = torch.tensor([0, 5, 0])
    paths, scores = F.crf_viterbi(em, tr, s, e, lengths)
    assert paths[0].tolist() == [-1] * 5 and scores[0] == 0 and scores[2] == 0
    assert (paths[1] >= 0).all()
    assert F.hmm_viterbi(em, tr, s, lengths=lengths)[0][2].tolist() == [-1] * 5


# ---- mixed devices --------------------------------------------------------------------------------------------------

SAME_DEVICE = "Expected all tensors to be on the same device"


def test_meta_argument_among_cpu_ones_raises():
    """One argument on the meta device once ran the fake kernel and returned uninitialized memory."""
    K = 3
    tr, s, e = crf_params(K)
    em, tags = torch.randn(2, 4, K), torch.randint(K, (2, 4))
    meta = lambda t: t.to("meta")  # noqa: E731
    lp = torch.randn(6, 2, 5).log_softmax(2)
    cases = {
        "ctc targets": lambda: F.ctc_loss(lp, meta(torch.randint(1, 5, (2, 3))), [6, 6], [3, 3]),
        "crf transitions": lambda: F.crf_log_likelihood(em, tags, meta(tr), s, e),
        "crf tags": lambda: F.crf_log_likelihood(em, meta(tags), tr, s, e),
        "crf mask": lambda: F.crf_log_partition(em, tr, s, e, meta(torch.ones(2, 4, dtype=torch.bool))),
        "crf marginals end": lambda: F.crf_marginals(em, tr, s, meta(e)),
        "crf viterbi start": lambda: F.crf_viterbi(em, tr, meta(s), e),
        "crf score transitions": lambda: F.crf_score(em, tags, meta(tr), s, e),
        "rnn module on meta": lambda: pyseq.nn.LSTM(3, 4, device="meta")(torch.randn(5, 2, 3)),
        "gru module on meta": lambda: pyseq.nn.GRU(3, 4, device="meta")(torch.randn(5, 2, 3)),
        "attention key": lambda: F.dot_attention(torch.randn(2, 3, 4), meta(torch.randn(2, 5, 4)), torch.randn(2, 5, 4)),
        "attention mask": lambda: F.additive_attention(
            torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(4), torch.randn(2, 5, 4),
            mask=meta(torch.ones(2, 5, dtype=torch.bool)),
        ),
    }
    for name, call in cases.items():
        with pytest.raises((RuntimeError, NotImplementedError), match=SAME_DEVICE + "|meta"):
            out = call()
            pytest.fail(f"{name}: returned {out!r:.80}")


def test_all_arguments_on_meta_give_shapes():
    em = torch.randn(2, 4, 3, device="meta")
    tr, s, e = (t.to("meta") for t in crf_params(3))
    assert F.crf_log_partition(em, tr, s, e, torch.tensor([4, 2])).shape == (2,)
    assert F.crf_marginals(em[:, :3], tr, s, e).shape == (2, 3, 3)


# ---- NaN ------------------------------------------------------------------------------------------------------------


def test_ctc_nan_propagates_like_torch():
    torch.manual_seed(0)
    lp = torch.randn(30, 3, 6, dtype=torch.float64).log_softmax(2)
    targets = torch.randint(1, 6, (3, 4))
    lp[5, 0, 0] = NAN  # a blank log-prob: every alignment reads it
    lp[9, 2] = NAN  # a whole frame
    for dtype in (torch.float64, torch.float32):
        for zero_infinity in (False, True):
            args = (targets, [30, 30, 30], [4, 4, 4])
            x = lp.to(dtype).detach().clone().requires_grad_()
            got = F.ctc_loss(x, *args, reduction="none", zero_infinity=zero_infinity)
            got.sum().backward()
            y = lp.to(dtype).detach().clone().requires_grad_()
            want = torch.nn.functional.ctc_loss(y, *args, reduction="none", zero_infinity=zero_infinity)
            want.sum().backward()
            assert got.isnan().tolist() == want.isnan().tolist() == [True, False, True]
            torch.testing.assert_close(got[1], want[1].detach())
            for n in range(3):
                assert x.grad[:, n].isnan().any() == y.grad[:, n].isnan().any()


def test_crf_nan_propagates():
    K = 4
    tr, s, e = crf_params(K)
    em = torch.randn(3, 5, K)
    tags = torch.randint(K, (3, 5))
    em[0, 2, 1] = NAN
    em[2, 4, 0] = NAN  # past the length of sequence 2: never read
    lengths = torch.tensor([5, 5, 3])
    x = em.clone().requires_grad_()
    params = [p.clone().requires_grad_() for p in (tr, s, e)]
    llh = F.crf_log_likelihood(x, tags, *params, lengths)
    assert llh.isnan().tolist() == [True, False, False]
    llh[1:].sum().backward()  # the NaN sequence's gradient alone is NaN
    assert x.grad[0, :5].isnan().all() and not x.grad[1:].isnan().any()
    assert F.crf_log_partition(em, tr, s, e, lengths).isnan().tolist() == [True, False, False]
    assert F.crf_marginals(em, tr, s, e, lengths)[0].isnan().all()
    paths, scores = F.crf_viterbi(em, tr, s, e, lengths)
    assert scores.isnan().tolist() == [True, False, False] and (paths[0] >= 0).all()
    tr_nan = tr.clone()
    tr_nan[1, 2] = NAN
    assert F.crf_log_partition(em[1:], tr_nan, s, e).isnan().all()
    assert F.crf_log_partition(em[:0], tr_nan, s, e).shape == (0,)


def test_attention_nan_query_gives_nan_row():
    q, k, v = torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 2)
    q[0, 1, 2] = NAN
    ctx, w = F.dot_attention(q, k, v, scale=1.0, return_weights=True)
    want = torch.softmax(q @ k.transpose(1, 2), -1)
    assert w.isnan().tolist() == want.isnan().tolist()
    assert ctx[0, 1].isnan().all() and not ctx[1].isnan().any()
    ctx, w = F.additive_attention(q, k, torch.randn(4), v, return_weights=True)
    assert w[0, 1].isnan().all() and not w[0, 0].isnan().any()
    # A NaN score under the mask is not attended, as with masked_fill then softmax.
    mask = torch.ones(2, 5, dtype=torch.bool)
    k2 = k.clone()
    k2[1, 3] = NAN
    mask[1, 3] = False
    assert not F.dot_attention(q[1:], k2[1:], v[1:], mask=mask[1:])[0].isnan().any()


def test_ctc_decoders_reject_nan():
    lp = torch.randn(10, 2, 5).log_softmax(2)
    lp[4, 1, 2] = NAN
    for decode in (pyseq.ctc.greedy_decode, pyseq.ctc.beam_search,
                   lambda x: pyseq.ctc.forced_align(x, torch.randint(1, 5, (2, 3)))):
        with pytest.raises(ValueError, match="log_probs holds NaN"):
            decode(lp)


# ---- masks and rejected input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int64])
def test_crf_integer_masks_are_nonzero_on(dtype):
    """A uint8 mask holding 2s once decoded paths too long and halved token_mean."""
    K = 4
    crf = pyseq.nn.CRF(K, batch_first=True)
    em, tags = torch.randn(3, 5, K), torch.randint(K, (3, 5))
    on = torch.arange(5) < torch.tensor([[5], [2], [3]])
    mask = on.to(dtype) * torch.tensor([[2], [7], [1]]).to(dtype)
    assert crf.decode(em, mask) == crf.decode(em, on)
    assert [len(p) for p in crf.decode(em, mask)] == [5, 2, 3]
    for reduction in ("none", "sum", "mean", "token_mean"):
        torch.testing.assert_close(crf(em, tags, mask, reduction), crf(em, tags, on, reduction))
        torch.testing.assert_close(crf.hinge_loss(em, tags, mask, reduction=reduction),
                                   crf.hinge_loss(em, tags, on, reduction=reduction))
    torch.testing.assert_close(crf.marginals(em, mask), crf.marginals(em, on))
    with pytest.raises(TypeError, match="mask must be bool or an integer dtype"):
        crf(em, tags, on.float())


def test_rejected_input_has_clear_messages():
    lp = torch.randn(10, 2, 5).log_softmax(2)
    with pytest.raises(TypeError, match="targets must hold integer class ids"):
        pyseq.ctc.forced_align(lp, torch.tensor([[1.7, 2.0], [1.0, 3.0]]))
    with pytest.raises(TypeError, match="input_lengths must be a tensor or a sequence of ints"):
        F.ctc_loss(lp, torch.randint(1, 5, (2, 3)), [10, 9.5], [3, 3])
    with pytest.raises(TypeError, match="target_lengths must be a tensor or a sequence of ints"):
        F.ctc_loss(lp, torch.randint(1, 5, (2, 3)), [10, 10], [3.0, 3])
    with pytest.raises(RuntimeError, match=r"must hold sum\(target_lengths\) = 5 labels, got 6"):
        F.ctc_loss(lp, torch.randint(1, 5, (6,)), [10, 10], [3, 2])
    with pytest.raises(ValueError, match="at least one feature"):
        F.dot_attention(torch.randn(2, 3, 0), torch.randn(2, 4, 0), torch.randn(2, 4, 2))
    labels, scores = pyseq.ctc.forced_align(lp, torch.randint(1, 5, (2, 3)))
    with pytest.raises(TypeError, match="tokens and scores must be tensors"):
        pyseq.ctc.merge_tokens(labels[0].tolist(), scores[0].tolist())
    lm = pyseq.ctc.NGramLM(order=1, log_probs={(1.5,): -1.0})
    with pytest.raises(TypeError, match="NGramLM.log_probs keys must be tuples of int"):
        pyseq.ctc.beam_search(lp, lm=lm)
    K = 3
    tr, s, e = crf_params(K)
    with pytest.raises(ValueError, match=r"tags must be in \[0, num_tags = 3\), got 3"):
        F.crf_hinge_loss(torch.randn(2, 4, K), torch.full((2, 4), 3), tr, s, e)
    # numpy and tensor integer scalars are integers
    import numpy as np

    F.ctc_loss(lp, torch.randint(1, 5, (2, 3)), [np.int64(10), torch.tensor(9)], (3, 2))


# ---- determinism ----------------------------------------------------------------------------------------------------


def _with_threads(n, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def _all_results(family):
    torch.manual_seed(3)
    if family == "crf":
        B, T, K = 37, 9, 7
        tr, s, e = crf_params(K)
        em, tags = torch.randn(B, T, K), torch.randint(K, (B, T))
        lengths = torch.randint(0, T + 1, (B,))
        return (*grads_of(lambda *a: F.crf_log_likelihood(a[0], tags, *a[1:], lengths), em, tr, s, e),
                F.crf_marginals(em, tr, s, e, lengths), *F.crf_viterbi(em, tr, s, e, lengths, nbest=3))
    if family == "additive":
        q, k, v, w = torch.randn(37, 5, 8), torch.randn(37, 6, 8), torch.randn(37, 6, 3), torch.randn(8)
        return grads_of(lambda q, k, w, v: F.additive_attention(q, k, w, v)[0], q, k, w, v)
    if family == "dot":
        q, k, v = torch.randn(37, 5, 8), torch.randn(37, 6, 8), torch.randn(37, 6, 3)
        return grads_of(lambda *a: F.dot_attention(*a)[0], q, k, v)
    if family == "ctc":
        lp = torch.randn(40, 37, 9).log_softmax(2)
        targets = torch.randint(1, 9, (37, 6))
        return grads_of(lambda x: F.ctc_loss(x, targets, [40] * 37, [6] * 37, reduction="none"), lp)
    m = {"lstm": pyseq.nn.LSTM, "gru": pyseq.nn.GRU, "rnn": pyseq.nn.RNN}[family](8, 33, num_layers=2)
    x = torch.randn(9, 37, 8, requires_grad=True)
    y = m(x)[0]
    return (y, *torch.autograd.grad((y * torch.randn_like(y)).sum(), [x, *m.parameters()]))


def _assert_thread_count_invariant(family):
    one = _with_threads(1, lambda: _all_results(family))
    for n in (2, 3, 5):
        other = _with_threads(n, lambda: _all_results(family))
        for a, b in zip(one, other):
            assert torch.equal(a, b), f"{family}: {n} threads differ from 1"


@pytest.mark.parametrize("family", ["crf", "additive", "dot", "ctc"])
def test_results_are_bitwise_equal_for_any_thread_count(family):
    """CRF and additive attention once summed per-thread partial sums (up to 3.8e-5 apart)."""
    _assert_thread_count_invariant(family)


def test_recurrent_results_are_bitwise_equal_for_any_thread_count(tmp_path):
    """The recurrent layers' own kernels split work by hidden units and rows, never a reduction by thread count; their
    input projections and weight gradients are GEMM-library calls (MKL), which reproduce across thread counts only
    in MKL's strict reproducibility mode (MKL_CBWR=AUTO,STRICT, set before torch loads; torch.nn alike). Run in a
    fresh process with that mode on."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import test_reliability
        for family in ("lstm", "gru", "rnn"):
            test_reliability._assert_thread_count_invariant(family)
        """
    )
    env = {**os.environ, "MKL_CBWR": "AUTO,STRICT"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]


# ---- more threads than cores ----------------------------------------------------------------------------------------


def test_team_barrier_with_more_threads_than_cores():
    """The recurrent thread team's barrier: spinning, yielding and sleeping waits all keep the team together."""
    assert pyseq._C.team_barrier_check(1, 10) == 0
    assert pyseq._C.team_barrier_check(2, 5000) == 0
    assert pyseq._C.team_barrier_check(4 * pyseq._C.usable_cores() + 1, 200) == 0


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity (Linux)")
def test_thread_team_is_capped_by_the_cpu_affinity(tmp_path):
    """torch.set_num_threads(8) in a process allowed one core (a container sees the host's cores): the recurrent
    layers' thread team has one member, and the results are those of one thread."""
    script = textwrap.dedent(
        """
        import os, torch, pyseq
        cores = len(os.sched_getaffinity(0))
        assert 1 <= pyseq._C.usable_cores() <= cores, (pyseq._C.usable_cores(), cores)
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        assert pyseq._C.usable_cores() == 1
        torch.manual_seed(0)
        m = pyseq.nn.LSTM(64, 128)
        x = torch.randn(20, 16, 64)
        torch.set_num_threads(1)
        with torch.no_grad():
            one = m(x)[0]
        torch.set_num_threads(8)
        with torch.no_grad():
            eight = m(x)[0]
        assert torch.equal(one, eight)
        """
    )
    env = {**os.environ, "MKL_CBWR": "AUTO,STRICT"}  # the input projection's GEMM reproducible across thread counts
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.parametrize("kernel", ["auto", "aten", "portable"])
@pytest.mark.parametrize("cls", [pyseq.nn.LSTM, pyseq.nn.GRU, pyseq.nn.RNN])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_grad_forward_is_bitwise_equal_to_training_forward(cls, kernel, dtype):
    pyseq.set_recurrent_kernel(kernel)
    try:
        torch.manual_seed(0)
        for H in (5, 33, 129):
            m = cls(16, H, num_layers=2, bidirectional=True).to(dtype)
            x = torch.randn(11, 6, 16, dtype=dtype, requires_grad=True)
            train = m(x)
            with torch.no_grad():
                inference = m(x)
            assert torch.equal(train[0].detach(), inference[0])
            for a, b in zip(torch.utils._pytree.tree_leaves(train[1]), torch.utils._pytree.tree_leaves(inference[1])):
                assert torch.equal(a.detach(), b)
    finally:
        pyseq.set_recurrent_kernel("auto")


# ---- scratch memory -------------------------------------------------------------------------------------------------


def test_scratch_memory_is_bounded_and_released():
    m = pyseq.nn.GRU(32, 64)
    x = torch.randn(50, 8, 32, requires_grad=True)
    before = pyseq.scratch_info()["limit"]
    try:
        pyseq.empty_cache()
        m(x)[0].sum().backward()
        assert 0 < pyseq.scratch_info()["bytes"] <= before
        pyseq.empty_cache()
        assert pyseq.scratch_info()["bytes"] == 0
        pyseq.set_scratch_limit(1000)
        m(x)[0].sum().backward()
        assert pyseq.scratch_info()["bytes"] <= 1000
        with pytest.raises(ValueError, match="non-negative"):
            pyseq.set_scratch_limit(-1)
    finally:
        pyseq.set_scratch_limit(before)


@pytest.mark.skipif(bool(os.environ.get("PYSEQ_SANITIZE")), reason="AddressSanitizer keeps freed memory in quarantine")
def test_scratch_memory_rss(tmp_path):
    """A large layer call once kept ~190 MB per thread after it returned; measured in a fresh process."""
    script = textwrap.dedent(
        """
        import threading, torch, pyseq
        def rss_mb():
            return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
        m = pyseq.nn.LSTM(256, 512)
        x = torch.randn(100, 64, 256, requires_grad=True)
        def step():
            m(x)[0].sum().backward()
        step()
        base = rss_mb()
        threads = [threading.Thread(target=step) for _ in range(3)]
        for t in threads: t.start()
        for t in threads: t.join()
        step()
        grown = rss_mb() - base
        kept = pyseq.scratch_info()["bytes"] / 2**20
        before = rss_mb()
        pyseq.empty_cache()
        print(grown, kept, before - rss_mb())
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True,
                         cwd=tmp_path)  # the installed pyseq, not the source tree
    grown, kept, released = map(float, out.stdout.split())
    assert kept <= 64  # the default bound, for all threads together
    assert grown < 64, "threads that ran a layer and ended must not leave their buffers behind"
    assert released > 0.9 * kept  # empty_cache gives the kept buffers back to the system
