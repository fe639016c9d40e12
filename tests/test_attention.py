"""Attention: against the naive torch composition (and scaled_dot_product_attention), gradcheck, opcheck, compile,
modules, bad input."""

import math

import pytest
import torch
import torch.nn.functional as TF

import pyseq
from pyseq import functional as F


def naive_additive(query_proj, key_proj, v, value, mask=None):
    """The usual implementation: materializes [B, Tq, Tk, A]. Fully masked rows give zero weights."""
    scores = torch.tanh(query_proj.unsqueeze(2) + key_proj.unsqueeze(1)) @ v  # [B, Tq, Tk]
    return naive_softmax_context(scores, value, mask)


def naive_dot(query, key, value, mask=None, scale=1.0):
    return naive_softmax_context(scale * query @ key.transpose(1, 2), value, mask)


def naive_softmax_context(scores, value, mask):
    if mask is not None:
        allowed = mask if mask.dim() == 3 else mask.unsqueeze(1)
        scores = scores.masked_fill(~allowed, float("-inf"))
        weights = torch.softmax(scores, -1)
        weights = weights.masked_fill(~allowed.any(-1, keepdim=True), 0.0)  # fully masked rows: 0, not NaN
    else:
        weights = torch.softmax(scores, -1)
    return weights @ value, weights


def random_inputs(B, Tq, Tk, A, Dv, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, Tq, A, generator=g, dtype=dtype),
        torch.randn(B, Tk, A, generator=g, dtype=dtype),
        torch.randn(A, generator=g, dtype=dtype),
        torch.randn(B, Tk, Dv, generator=g, dtype=dtype),
    )


def random_mask(shape, seed=1, fully_masked_row=True):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape, generator=g) < 0.6
    if fully_masked_row:
        mask[0, ...] = False if len(shape) == 2 else mask[0, ...]
        if len(shape) == 3:
            mask[0, 0] = False
    return mask


SHAPES = [(3, 7, 5, 9, 4), (2, 1, 113, 3, 5), (5, 4, 1, 16, 1), (1, 13, 6, 33, 7)]


def compare(ours_fn, ref_fn, inputs, dtype, use_weights=True, device="cpu"):
    """Values and gradients of every input, through the context and (optionally) the weights; ours on `device`."""
    results = []
    for fn, on in ((ours_fn, device), (ref_fn, "cpu")):
        xs = [x.detach().to(on).requires_grad_() for x in inputs]
        context, weights = fn(*xs)
        g = torch.Generator().manual_seed(7)
        loss = (context * torch.randn(context.shape, generator=g, dtype=dtype).to(on)).sum()
        if use_weights:
            loss = loss + (weights * torch.randn(weights.shape, generator=g, dtype=dtype).to(on)).sum()
        grads = [x.cpu() for x in torch.autograd.grad(loss, xs)]
        results.append((context.cpu(), weights.cpu(), grads))
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(results[0][0], results[1][0], **tol)
    torch.testing.assert_close(results[0][1], results[1][1], **tol)
    for got, want in zip(results[0][2], results[1][2]):
        torch.testing.assert_close(got, want, **tol)


@pytest.mark.parametrize("mask_kind", [None, "keys", "queries"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_additive_matches_naive_composition(shape, mask_kind, dtype, device):
    B, Tq, Tk, A, Dv = shape
    inputs = random_inputs(B, Tq, Tk, A, Dv, dtype)
    mask = None if mask_kind is None else random_mask((B, Tk) if mask_kind == "keys" else (B, Tq, Tk))

    def ours(q, k, v, value):
        return F.additive_attention(q, k, v, value, None if mask is None else mask.to(device), return_weights=True)

    def ref(q, k, v, value):
        return naive_additive(q, k, v, value, mask)

    compare(ours, ref, inputs, dtype, device=device)
    compare(ours, ref, inputs, dtype, use_weights=False, device=device)


@pytest.mark.parametrize("mask_kind", [None, "keys", "queries"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("scale", [1.0, None])
def test_dot_matches_naive_composition(shape, mask_kind, scale, device):
    B, Tq, Tk, D, Dv = shape
    q, _, _, value = random_inputs(B, Tq, Tk, D, Dv)
    k = torch.randn(B, Tk, D, dtype=torch.float64)
    mask = None if mask_kind is None else random_mask((B, Tk) if mask_kind == "keys" else (B, Tq, Tk))
    s = 1.0 / math.sqrt(D) if scale is None else scale

    def ours(q, k, value):
        return F.dot_attention(q, k, value, None if mask is None else mask.to(device), scale, return_weights=True)

    def ref(q, k, value):
        return naive_dot(q, k, value, mask, s)

    compare(ours, ref, (q, k, value), torch.float64, device=device)


@pytest.mark.parametrize("with_mask", [False, True])
def test_dot_matches_scaled_dot_product_attention(with_mask):
    B, Tq, Tk, D, Dv = 4, 9, 17, 16, 8
    q, k, value = torch.randn(B, Tq, D), torch.randn(B, Tk, D), torch.randn(B, Tk, Dv)
    mask = random_mask((B, Tq, Tk), fully_masked_row=False) if with_mask else None
    if mask is not None:
        mask[..., 0] = True  # SDPA gives NaN for fully masked rows; keep every row attended
    context, _ = F.dot_attention(q, k, value, mask)
    expected = TF.scaled_dot_product_attention(q, k, value, attn_mask=mask)
    torch.testing.assert_close(context, expected, rtol=1e-5, atol=1e-5)


def test_fully_masked_rows_give_zero_context_weights_and_gradients():
    q, k, v, value = random_inputs(2, 3, 4, 5, 6)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[1, 2] = True
    xs = [x.clone().requires_grad_() for x in (q, k, v, value)]
    context, weights = F.additive_attention(*xs, mask=mask, return_weights=True)
    assert torch.equal(context[0], torch.zeros_like(context[0])) and torch.equal(weights[0], torch.zeros_like(weights[0]))
    assert torch.allclose(weights[1, :, 2], torch.ones(3, dtype=weights.dtype))
    (context.sum() + weights.sum()).backward()
    assert all(torch.isfinite(x.grad).all() for x in xs)
    assert torch.equal(xs[0].grad[0], torch.zeros_like(xs[0].grad[0]))
    context, weights = F.dot_attention(q, k, value, mask=mask, return_weights=True)
    assert torch.equal(context[0], torch.zeros_like(context[0])) and not weights.isnan().any()


def test_gradcheck():
    q, k, v, value = (x.requires_grad_() for x in random_inputs(2, 3, 4, 5, 3))
    mask = random_mask((2, 3, 4))

    def additive(q, k, v, value):
        context, weights = F.additive_attention(q, k, v, value, mask, return_weights=True)
        return context, weights

    def dot(q, k, value):
        context, weights = F.dot_attention(q, k[..., :5], value, mask, 0.7, return_weights=True)
        return context, weights

    assert torch.autograd.gradcheck(additive, (q, k, v, value))
    assert torch.autograd.gradcheck(dot, (q, k, value))


def test_opcheck(device):
    q, k, v, value = (x.to(device) for x in random_inputs(2, 3, 4, 5, 3))
    mask = random_mask((2, 4)).to(device)
    ops = torch.ops.pyseq
    req = [x.clone().requires_grad_() for x in (q, k, v, value)]
    keys = F.project_keys(k)
    torch.library.opcheck(ops.additive_attention.default, (*req, mask, None, None))
    torch.library.opcheck(ops.additive_attention.default, (*req, None, keys.exp2x, keys.maxabs))
    torch.library.opcheck(ops.dot_attention.default, (req[0], req[1], req[3], mask, 0.5))
    context, weights = ops.additive_attention(q, k, v, value, mask, None, None)
    torch.library.opcheck(
        ops.additive_attention_backward.default,
        (torch.ones_like(context), torch.ones_like(weights), q, k, v, value, weights, None, None),
    )
    torch.library.opcheck(
        ops.additive_attention_backward.default,
        (torch.ones_like(context), None, q, k, v, value, weights, keys.exp2x, keys.maxabs),
    )
    context, weights = ops.dot_attention(q, k, value, mask, 0.5)
    torch.library.opcheck(
        ops.dot_attention_backward.default, (torch.ones_like(context), None, q, k, value, weights, 0.5)
    )


def test_compile_fullgraph():
    torch.manual_seed(0)
    additive = pyseq.nn.AdditiveAttention(6, 5, 8)
    dot = pyseq.nn.DotAttention(6, 5, score="general")
    location = pyseq.nn.LocationAwareAttention(6, 5, 8, channels=3, kernel_size=3)
    query, key, mask = torch.randn(2, 3, 6), torch.randn(2, 7, 5), random_mask((2, 7))

    def step(query, key):
        a, wa = additive(query, key, mask=mask, return_weights=True)
        d, _ = dot(query, key, mask=mask)
        c, wl = location(query[:, 0], key, wa[:, 0], mask=mask)
        return a.sum() + d.sum() + wa.square().sum() + c.sum() + wl.square().sum()

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    x = query.clone().requires_grad_()
    out = compiled(x, key)
    out.backward()
    y = query.clone().requires_grad_()
    expected = step(y, key)
    expected.backward()
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(x.grad, y.grad)


# ---- modules ---------------------------------------------------------------------------------------------------


def test_additive_module_all_queries_and_one_step_agree_with_naive():
    torch.manual_seed(0)
    m = pyseq.nn.AdditiveAttention(6, 5, 8).double()
    with torch.no_grad():
        m.b.normal_()
    query, key, value = torch.randn(3, 4, 6).double(), torch.randn(3, 9, 5).double(), torch.randn(3, 9, 2).double()
    mask = random_mask((3, 9))
    context, weights = m(query, key, value, mask, return_weights=True)
    ref_context, ref_weights = naive_additive(m.W_q(query), m.W_k(key) + m.b, m.v, value, mask)
    torch.testing.assert_close(context, ref_context)
    torch.testing.assert_close(weights, ref_weights)
    step_context, step_weights = m(query[:, 1], key, value, mask, return_weights=True, key_proj=m.project_keys(key))
    torch.testing.assert_close(step_context, context[:, 1])
    torch.testing.assert_close(step_weights, weights[:, 1])
    no_weights = m(query, key)
    assert no_weights[1] is None and no_weights[0].shape == (3, 4, 5)


@pytest.mark.parametrize("score", ["dot", "scaled", "general"])
def test_dot_module_scores(score):
    torch.manual_seed(0)
    m = pyseq.nn.DotAttention(6, 6, score=score).double()
    query, key = torch.randn(2, 3, 6).double(), torch.randn(2, 5, 6).double()
    context, weights = m(query, key, return_weights=True)
    q = m.W(query) if score == "general" else query
    ref_context, ref_weights = naive_dot(q, key, key, None, 1 / math.sqrt(6) if score == "scaled" else 1.0)
    torch.testing.assert_close(context, ref_context)
    torch.testing.assert_close(weights, ref_weights)


def test_location_aware_matches_naive_composition():
    torch.manual_seed(0)
    m = pyseq.nn.LocationAwareAttention(6, 5, 8, channels=4, kernel_size=5, in_channels=2).double()
    query, key = torch.randn(3, 6).double(), torch.randn(3, 11, 5).double()
    prev = torch.softmax(torch.randn(3, 2, 11).double(), -1)
    mask = random_mask((3, 11), fully_masked_row=False)
    params = list(m.parameters())
    context, weights = m(query, key, prev, mask=mask)
    grads = torch.autograd.grad(context.sum() + weights.square().sum(), params)
    att = m.attention
    location = m.location_proj(TF.conv1d(prev, m.location_conv.weight, padding=2).transpose(1, 2))
    ref_context, ref_weights = naive_additive(
        att.W_q(query).unsqueeze(1), att.W_k(key) + att.b + location, att.v, key, mask
    )
    ref_grads = torch.autograd.grad(ref_context.sum() + ref_weights.square().sum(), params)
    torch.testing.assert_close(context, ref_context.squeeze(1))
    torch.testing.assert_close(weights, ref_weights.squeeze(1))
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)


# ---- bad input -------------------------------------------------------------------------------------------------


def test_bad_input():
    q, k, v, value = random_inputs(2, 3, 4, 5, 6)
    cases = [
        (lambda: F.additive_attention(q[0, 0], k, v, value), ValueError, "query_proj must be 3-D .* or 2-D"),
        (lambda: F.additive_attention(q, k[0], v, value), ValueError, "key_proj must be 3-D"),
        (lambda: F.additive_attention(q, k[:1], v, value), ValueError, "batch sizes differ"),
        (lambda: F.additive_attention(q, k, v, value[:, :3]), ValueError, "value must have one row per key"),
        (lambda: F.additive_attention(q, k[..., :4], v, value), ValueError, "same attention size"),
        (lambda: F.additive_attention(q, k, v[:4], value), ValueError, "v must have attn_size = 5"),
        (lambda: F.additive_attention(q, k, v, value, torch.ones(2, 4)), TypeError, "mask must be a bool tensor"),
        (lambda: F.additive_attention(q, k, v, value, torch.ones(2, 5, dtype=torch.bool)), ValueError,
         r"mask must have shape \[2, 4\] or \[2, 3, 4\], got \[2, 5\]"),
        (lambda: F.additive_attention(q, k, v, value.float()), TypeError, "value must have the dtype of query_proj"),
        (lambda: F.additive_attention(q, k[:, :0], v, value[:, :0]), ValueError, "at least one key"),
        (lambda: F.additive_attention(q[:, 0], k, v, value, torch.ones(2, 3, 4, dtype=torch.bool)), ValueError,
         "mask must be 2-D"),
        (lambda: F.dot_attention(q, k[..., :3], value), ValueError, "same feature size"),
        (lambda: F.dot_attention(q.long(), k.long(), value.long()), TypeError, "query must be float32 or float64"),
        (lambda: pyseq.nn.DotAttention(score="cosine"), ValueError, "score must be"),
        (lambda: pyseq.nn.DotAttention(score="general"), ValueError, "needs query_size and key_size"),
        (lambda: pyseq.nn.LocationAwareAttention(3, 3, 3, kernel_size=4), ValueError, "kernel_size must be odd"),
        (lambda: pyseq.nn.LocationAwareAttention(5, 5, 5)(q, k, torch.ones(2, 4)), ValueError, "one decoder step"),
    ]
    for fn, error, message in cases:
        with pytest.raises(error, match=message):
            fn()


def test_single_key_and_single_query():
    q, k, v, value = random_inputs(3, 1, 1, 4, 2)
    context, weights = F.additive_attention(q, k, v, value, return_weights=True)
    torch.testing.assert_close(weights, torch.ones_like(weights))
    torch.testing.assert_close(context, value)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_additive_large_preactivations(dtype, cpu_paths):
    """Rows whose projections reach |x| > 20 take the direct tanh path, the others the factored one (exp(2q) exp(2k));
    both, and saturated tanh terms, agree with the composition."""
    B, Tq, Tk, A, Dv = 2, 6, 7, 8, 3
    q, k, v, value = random_inputs(B, Tq, Tk, A, Dv, dtype)
    q = q * torch.tensor([1.0, 30.0, 1.0, 45.0, 0.01, 3.0], dtype=dtype).view(1, Tq, 1)
    k = k * torch.tensor([30.0, 1.0, 1.0, 25.0, 0.5, 100.0, 2.0], dtype=dtype).view(1, Tk, 1)

    def ours(q, k, v, value):
        return F.additive_attention(q, k, v, value, return_weights=True)

    compare(ours, naive_additive, (q, k, v, value), dtype)



@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("Tq", [1, 6])
def test_additive_with_cached_key_factors(Tq, dtype, cpu_paths):
    """project_keys caches exp(2 k) and max |k|: the factored terms then serve every query count, decoder steps
    included, and agree with the composition (keys beyond |k| = 20 fall back to the direct path)."""
    B, Tk, A, Dv = 3, 7, 9, 4
    q, k, v, value = random_inputs(B, Tq, Tk, A, Dv, dtype)
    k = k * torch.tensor([1.0, 30.0, 1.0, 0.2, 60.0, 2.0, 1.0], dtype=dtype).view(1, Tk, 1)
    mask = random_mask((B, Tk))

    def ours(q, k, v, value):
        return F.additive_attention(q, F.project_keys(k), v, value, mask, return_weights=True)

    def ref(q, k, v, value):
        return naive_additive(q, k, v, value, mask)

    compare(ours, ref, (q, k, v, value), dtype)


def test_project_keys_bad_input():
    with pytest.raises(ValueError, match="key_proj must be a 3-D tensor"):
        F.project_keys(torch.zeros(2, 3))
    q, k, v, value = random_inputs(2, 3, 4, 5, 6)
    keys = F.project_keys(k)
    with pytest.raises(RuntimeError, match=r"key_exp2x must have shape \[2, 3, 5\]"):
        torch.ops.pyseq.additive_attention(q, k[:, :3], v, value[:, :3], None, keys.exp2x, keys.maxabs)
