"""pyseq.functional.ctc_loss / pyseq.nn.CTCLoss against torch's F.ctc_loss and brute-force enumeration."""

import pytest
import torch
import torch.nn.functional as F

import pyseq
from reference import ctc as brute


def random_batch(T=20, N=5, C=6, S=7, dtype=torch.float64, seed=0, repeats=True):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(T, N, C, generator=gen, dtype=dtype)
    if repeats:  # few classes, so repeated labels (which need a blank between them) are common
        targets = torch.randint(1, 3, (N, S), generator=gen)
    else:
        targets = torch.randint(1, C, (N, S), generator=gen)
    input_lengths = torch.randint(T // 2, T + 1, (N,), generator=gen)
    input_lengths[0] = T
    target_lengths = torch.randint(0, S + 1, (N,), generator=gen)
    target_lengths[0] = S
    return logits, targets, input_lengths, target_lengths


def concatenated(targets, target_lengths):
    return torch.cat([targets[n, : target_lengths[n]] for n in range(targets.shape[0])])


def loss_and_logit_grad(fn, logits, targets, *args, device="cpu", **kwargs):
    """The loss and the gradient of its weighted sum for the logits, computed on `device`, returned on the CPU."""
    x = logits.to(device).requires_grad_()
    loss = fn(x.log_softmax(2), targets.to(device), *args, **kwargs)
    weights = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype, device=device).view(loss.shape)
    (grad,) = torch.autograd.grad((loss * weights).sum(), x)
    return loss.detach().cpu(), grad.cpu()


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("layout", ["padded", "concatenated"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_torch(reduction, layout, dtype, device):
    for seed, repeats in [(0, True), (1, False), (2, True)]:
        logits, targets, il, tl = random_batch(dtype=dtype, seed=seed, repeats=repeats)
        tg = targets if layout == "padded" else concatenated(targets, tl)
        ours = loss_and_logit_grad(pyseq.functional.ctc_loss, logits, tg, il, tl, reduction=reduction, device=device)
        ref = loss_and_logit_grad(F.ctc_loss, logits, tg, il, tl, reduction=reduction)
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(ours[0], ref[0], **tol)
        torch.testing.assert_close(ours[1], ref[1], **tol)


@pytest.mark.parametrize("C", [2, 31, 32, 33, 70])
def test_float32_emission_rows_of_every_width(C, cpu_paths):
    """float32 rows of at most 32 classes are read by a register permute (AVX-512), wider ones (and every row with
    the AVX-512 helpers off) by a gather."""
    logits, targets, il, tl = random_batch(T=37, N=4, C=C, S=9, dtype=torch.float32, seed=C, repeats=False)
    results = []
    for loss_fn in (pyseq.functional.ctc_loss, F.ctc_loss):
        x = logits.clone().requires_grad_()
        loss = loss_fn(x.log_softmax(2), targets, il, tl, reduction="sum")
        loss.backward()
        results.append((loss.detach(), x.grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("zero_infinity", [False, True])
def test_unalignable_and_edge_lengths(zero_infinity, device):
    # Sequence 0: target as long as the input (no blanks possible); 1: repeated labels need T >= 2S - 1 frames and
    # get fewer (infinite loss); 2: empty target; 3: empty input and empty target; 4: target longer than the input.
    T, C = 6, 4
    logits = torch.randn(T, 5, C, dtype=torch.float64)
    targets = torch.tensor([[1, 2, 3, 1, 2, 3], [2, 2, 2, 2, 0, 0], [0, 0, 0, 0, 0, 0], [0] * 6, [1, 2, 1, 2, 1, 2]])
    il = torch.tensor([6, 6, 6, 0, 5])
    tl = torch.tensor([6, 4, 0, 0, 6])
    ours = loss_and_logit_grad(pyseq.functional.ctc_loss, logits, targets, il, tl, reduction="none",
                               zero_infinity=zero_infinity, device=device)
    ref = loss_and_logit_grad(F.ctc_loss, logits, targets, il, tl, reduction="none", zero_infinity=zero_infinity)
    torch.testing.assert_close(ours[0], ref[0])
    assert not torch.isnan(ours[0]).any() and not torch.isnan(ours[1]).any()
    if zero_infinity:
        torch.testing.assert_close(ours[1], ref[1])
    else:
        assert torch.isinf(ours[0][[1, 4]]).all()
        # Finite sequences match torch; infinite ones get a zero gradient (torch's is NaN there).
        torch.testing.assert_close(ours[1][:, [0, 2, 3]], ref[1][:, [0, 2, 3]])
        assert not ours[1][:, [1, 4]].any()


def test_matches_brute_force_for_unnormalized_scores(device):
    # Scores that are not log-probabilities (no log_softmax): the loss is still -log of the summed path scores, and
    # its gradient with respect to the scores is what autograd gives for the enumeration. torch's exp(lp) - posterior
    # would not match here.
    torch.manual_seed(0)
    for T, C, target in [(4, 3, [1]), (4, 3, [1, 1]), (5, 3, [2, 1, 2]), (3, 2, [])]:
        scores = torch.randn(T, C, dtype=torch.float64, requires_grad=True)
        expected = brute.nll(scores, target)
        (expected_grad,) = torch.autograd.grad(expected, scores)
        x = scores.detach().to(device).requires_grad_()
        got = pyseq.functional.ctc_loss(x, torch.tensor(target, dtype=torch.long, device=device), T, len(target),
                                        reduction="none")
        (got_grad,) = torch.autograd.grad(got, x)
        torch.testing.assert_close(got.cpu(), expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got_grad.cpu(), expected_grad, rtol=1e-10, atol=1e-12)


def test_unbatched_and_lengths_as_sequences():
    logits, targets, il, tl = random_batch()
    lp = logits.log_softmax(2)
    batched = pyseq.functional.ctc_loss(lp, targets, il.tolist(), tuple(tl.tolist()), reduction="none")
    for n in range(lp.shape[1]):
        single = pyseq.functional.ctc_loss(lp[:, n], targets[n, : tl[n]], int(il[n]), int(tl[n]), reduction="none")
        torch.testing.assert_close(single, batched[n])
    int32 = pyseq.functional.ctc_loss(lp, targets.int(), il.int(), tl.int(), reduction="none")
    torch.testing.assert_close(int32, batched)


def test_module_matches_torch_module():
    logits, targets, il, tl = random_batch(dtype=torch.float32)
    ours = pyseq.nn.CTCLoss(blank=0, reduction="mean", zero_infinity=True)
    ref = torch.nn.CTCLoss(blank=0, reduction="mean", zero_infinity=True)
    lp = logits.log_softmax(2)
    torch.testing.assert_close(ours(lp, targets, il, tl), ref(lp, targets, il, tl))
    assert "zero_infinity=True" in repr(ours)


def test_other_blank():
    logits, targets, il, tl = random_batch(C=5)
    targets = targets - 1  # labels 0..; blank is the last class
    lp = logits.log_softmax(2)
    torch.testing.assert_close(
        pyseq.functional.ctc_loss(lp, targets, il, tl, blank=4, reduction="none"),
        F.ctc_loss(lp, targets, il, tl, blank=4, reduction="none"),
    )


def test_gradcheck_float64():
    torch.manual_seed(0)
    scores = torch.randn(7, 3, 4, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1, 2, 2], [3, 1, 0], [2, 2, 2]])
    il, tl = torch.tensor([7, 5, 7]), torch.tensor([3, 2, 3])
    assert torch.autograd.gradcheck(
        lambda x: pyseq.functional.ctc_loss(x, targets, il, tl, reduction="none"), (scores,)
    )


def test_opcheck(device):
    logits, targets, il, tl = random_batch(T=9, N=3, C=4, S=3)
    lp = logits.to(device).log_softmax(2).requires_grad_()
    targets = targets.to(device)
    torch.library.opcheck(torch.ops.pyseq.ctc_loss.default, (lp, targets, il, tl, 0))
    nll, log_alpha = torch.ops.pyseq.ctc_loss(lp.detach(), targets, il, tl, 0)
    torch.library.opcheck(
        torch.ops.pyseq.ctc_loss_backward.default,
        (torch.ones_like(nll), lp.detach(), targets, il, tl, nll, log_alpha, 0),
    )
    # The decoders are ops too (no autograd): opcheck with inputs that need no gradient.
    torch.library.opcheck(torch.ops.pyseq.ctc_greedy_decode.default, (lp.detach(), il.long(), 0))
    torch.library.opcheck(torch.ops.pyseq.ctc_forced_align.default, (lp.detach(), targets, il.long(), tl.long(), 0))


def test_compile_fullgraph():
    logits, targets, il, tl = random_batch(dtype=torch.float32)
    loss_fn = torch.compile(pyseq.nn.CTCLoss(), backend="aot_eager", fullgraph=True)
    x = logits.clone().requires_grad_()
    loss = loss_fn(x.log_softmax(2), targets, il, tl)
    loss.backward()
    y = logits.clone().requires_grad_()
    expected = pyseq.functional.ctc_loss(y.log_softmax(2), targets, il, tl)
    expected.backward()
    torch.testing.assert_close(loss.detach(), expected.detach())
    torch.testing.assert_close(x.grad, y.grad)


def test_compile_asks_for_padded_targets():
    logits, targets, il, tl = random_batch(dtype=torch.float32)
    loss_fn = torch.compile(pyseq.nn.CTCLoss(), backend="aot_eager", fullgraph=True)
    with pytest.raises(Exception, match="pass ctc_loss targets padded"):
        loss_fn(logits.log_softmax(2), concatenated(targets, tl), il, tl)


def test_bad_input(device):
    logits, targets, il, tl = random_batch(T=6, N=2, C=4, S=3)
    lp = logits.log_softmax(2).to(device)
    targets = targets.to(device)
    f = pyseq.functional.ctc_loss
    cases = [
        ((lp[0, 0], targets, il, tl), RuntimeError, "log_probs must be 3-D"),
        ((lp, targets, torch.tensor([7, 6]), tl), RuntimeError, "input_lengths must be in \\[0, T = 6\\], got 7"),
        ((lp, targets, torch.tensor([-1, 6]), tl), RuntimeError, "input_lengths must be in"),
        ((lp, targets, il, torch.tensor([4, 1])), RuntimeError, "target_lengths must be at most S = 3"),
        ((lp, targets[:1], il, tl), RuntimeError, "targets must have one row per sequence \\(N = 2\\)"),
        ((lp, targets, il[:1], tl), RuntimeError, "input_lengths must have one entry per sequence"),
        ((lp, torch.tensor([[1, 0, 2], [1, 1, 1]], device=device), il, torch.tensor([3, 3])), RuntimeError,
         "differ from the blank"),
        ((lp, torch.tensor([[1, 4, 2], [1, 1, 1]], device=device), il, torch.tensor([3, 3])), RuntimeError,
         "must be in \\[0, C = 4\\)"),
        ((lp.long(), targets, il, tl), TypeError, "log_probs must be float32 or float64"),
        ((lp, targets.float(), il, tl), TypeError, "targets must be int32 or int64"),
        ((lp, targets, il.float(), tl), RuntimeError, "input_lengths must be integral"),
    ]
    for args, error, message in cases:
        with pytest.raises(error, match=message):
            f(*args)
    with pytest.raises(ValueError, match="blank must be in \\[0, C\\)"):
        f(lp, targets, il, tl, blank=4)
    with pytest.raises(ValueError, match="not a valid value for reduction"):
        f(lp, targets, il, tl, reduction="avg")


# ---- decoding and alignment --------------------------------------------------------------------------------------

@pytest.mark.parametrize("C", [7, 70])
def test_greedy_decode_matches_reference(C, device):
    logits, _, il, _ = random_batch(T=30, N=6, C=C, dtype=torch.float32)
    il[3] = 0
    logits[4, 1, 2] = logits[4, 1, 5] = logits[4, 1].max() + 1  # a tie goes to the first class
    on = logits.to(device)
    decoded = pyseq.ctc.greedy_decode(on.log_softmax(2), il)
    assert decoded == [brute.greedy(logits[:, n], int(il[n])) for n in range(6)]
    assert pyseq.ctc.greedy_decode(on[:, 0], 30, blank=2) == brute.greedy(logits[:, 0], 30, blank=2)
    assert pyseq.ctc.greedy_decode(on) == [brute.greedy(logits[:, n], 30) for n in range(6)]


def test_forced_align_is_a_best_alignment(device):
    torch.manual_seed(0)
    T, C = 6, 3
    lp = torch.randn(T, 4, C, dtype=torch.float64).log_softmax(2)
    targets = torch.tensor([[1, 2, 0], [1, 1, 0], [2, 1, 2], [2, 0, 0]])
    tl = torch.tensor([2, 2, 3, 1])
    il = torch.tensor([6, 5, 6, 3])
    labels, scores = pyseq.ctc.forced_align(lp.to(device), targets.to(device), il, tl)
    assert labels.device == scores.device == lp.to(device).device
    labels, scores = labels.cpu(), scores.cpu()
    assert labels.shape == (4, T) and scores.shape == (4, T)
    for n in range(4):
        steps, target = int(il[n]), targets[n, : tl[n]].tolist()
        path = labels[n, :steps].tolist()
        assert brute.collapse(path, 0) == target
        torch.testing.assert_close(scores[n, :steps], lp[torch.arange(steps), n, labels[n, :steps]])
        best = brute.best_alignment_score(lp[:steps, n], target)
        assert abs(float(scores[n, :steps].sum()) - best) < 1e-12
        assert (labels[n, steps:] == 0).all() and (scores[n, steps:] == 0).all()


def test_forced_align_unbatched_and_spans():
    torch.manual_seed(1)
    lp = torch.randn(12, 5).log_softmax(1)
    target = torch.tensor([3, 1, 1, 4])
    labels, scores = pyseq.ctc.forced_align(lp, target)
    assert labels.shape == (12,) and brute.collapse(labels.tolist(), 0) == target.tolist()
    spans = pyseq.ctc.merge_tokens(labels, scores)
    assert [s.token for s in spans] == target.tolist()
    for span in spans:
        assert (labels[span.start : span.end] == span.token).all()
        assert abs(span.score - float(scores[span.start : span.end].mean())) < 1e-6
    assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))


def test_forced_align_errors(device):
    lp = torch.randn(4, 2, 5).log_softmax(2).to(device)
    with pytest.raises(ValueError, match="cannot be aligned to its 4 frames"):
        pyseq.ctc.forced_align(lp, torch.tensor([[1, 1, 1], [1, 2, 3]], device=device), [4, 4], [3, 3])
    with pytest.raises(RuntimeError, match="differ from the blank"):
        pyseq.ctc.forced_align(lp, torch.tensor([[1, 0], [1, 2]], device=device), [4, 4], [2, 2])
    with pytest.raises(RuntimeError, match="input_lengths must be in \\[0, 4\\]"):
        pyseq.ctc.greedy_decode(lp, [5, 4])
    with pytest.raises(ValueError, match="must be 1-D of the same length"):
        pyseq.ctc.merge_tokens(torch.zeros(3, dtype=torch.long), torch.zeros(4))
    spans = pyseq.ctc.merge_tokens(tokens=torch.tensor([0, 2, 2, 0]), scores=torch.zeros(4))  # torchaudio's names
    assert [(s.token, s.start, s.end) for s in spans] == [(2, 1, 3)]


@pytest.mark.parametrize("beam_width,top_k,threshold", [(1, 0, None), (4, 0, None), (8, 3, None), (16, 0, -3.0)])
def test_beam_search_matches_reference(beam_width, top_k, threshold):
    logits, _, il, _ = random_batch(T=25, N=4, C=6)
    lp = logits.log_softmax(2)
    nbest = min(3, beam_width)
    found = pyseq.ctc.beam_search(lp, il, beam_width=beam_width, nbest=nbest, top_k=top_k, threshold=threshold)
    for n in range(4):
        expected = brute.prefix_beam_search(lp[: il[n], n], beam_width, nbest=nbest, top_k=top_k,
                                            threshold=float("-inf") if threshold is None else threshold)
        assert [h.tokens for h in found[n]] == [tokens for tokens, _ in expected]
        for h, (_, score) in zip(found[n], expected):
            assert abs(h.score - score) < 1e-9


def test_wide_beam_search_is_exact():
    # With a beam wider than the number of prefixes, prefix beam search computes each labeling's exact probability:
    # its best hypothesis is the most likely labeling, by enumeration of every labeling and alignment.
    import itertools

    torch.manual_seed(0)
    T, C = 4, 3
    for _ in range(3):
        lp = torch.randn(T, C, dtype=torch.float64).log_softmax(1)
        labelings = [list(p) for k in range(T + 1) for p in itertools.product(range(1, C), repeat=k)]
        scores = {tuple(lab): brute.labeling_log_prob(lp, lab) for lab in labelings}
        best = max(scores.items(), key=lambda kv: kv[1])
        (hyp,) = pyseq.ctc.beam_search(lp, beam_width=100)
        assert tuple(hyp.tokens) == best[0]
        assert abs(hyp.score - best[1]) < 1e-12
        for h in pyseq.ctc.beam_search(lp, beam_width=100, nbest=5):
            assert abs(h.score - scores[tuple(h.tokens)]) < 1e-12


def test_beam_search_errors():
    lp = torch.randn(5, 2, 4).log_softmax(2)
    with pytest.raises(ValueError, match="beam_width must be at least 1"):
        pyseq.ctc.beam_search(lp, beam_width=0)
    with pytest.raises(ValueError, match="nbest must be in \\[1, beam_width = 4\\]"):
        pyseq.ctc.beam_search(lp, beam_width=4, nbest=5)
    with pytest.raises(ValueError, match="top_k must be non-negative"):
        pyseq.ctc.beam_search(lp, top_k=-1)


def test_beam_search_with_ngram_lm_matches_reference():
    logits, _, il, _ = random_batch(T=20, N=3, C=5)
    lp = logits.log_softmax(2)
    lm = pyseq.ctc.NGramLM(
        order=2,
        log_probs={(1,): -1.0, (2,): -1.5, (3,): -2.0, (4,): -0.7, (1, 2): -0.2, (2, 2): -3.0, (4, 1): -0.1},
        backoffs={(1,): -0.5, (4,): -0.3},
        unk=-5.0,
    )
    assert lm.score((3, 1), 2) == -0.2 and lm.score((1,), 3) == -0.5 - 2.0 and lm.score((), 0) == -5.0
    found = pyseq.ctc.beam_search(lp, il, beam_width=6, nbest=3, lm=lm, lm_weight=0.7, insertion_bonus=0.4)
    plain = pyseq.ctc.beam_search(lp, il, beam_width=6, nbest=3)
    assert found != plain  # the model changes the search
    for n in range(3):
        expected = brute.prefix_beam_search(lp[: il[n], n], 6, nbest=3, lm=lm, lm_weight=0.7, insertion_bonus=0.4)
        assert [h.tokens for h in found[n]] == [tokens for tokens, _ in expected]
        for h, (_, score) in zip(found[n], expected):
            assert abs(h.score - score) < 1e-9
    # A weight of 0 switches the model off (also its -inf log-probs).
    off = pyseq.ctc.beam_search(lp, il, beam_width=6, nbest=3, lm=pyseq.ctc.NGramLM(1, {(1,): -1.0}), lm_weight=0)
    assert off == plain
