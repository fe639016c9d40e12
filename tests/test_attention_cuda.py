"""The attention CUDA path (csrc/attention/attention_cuda.*).

On a GPU and on the emulated GPU (the `gpu` fixture; make cuda-emulate): additive and dot attention's glue and
kernels against the CPU kernels, forward and backward, with masks, fully masked rows, NaN and bad input; at the
benchmark's sizes, determinism, 16-bit inputs. The tests of test_attention.py run there too (their `device`
fixture). (That the CUDA kernels are registered: test_ops.py.)
"""

import pytest
import torch

from pyseq import functional as F

ops = torch.ops.pyseq


def inputs(B, Tq, Tk, A, Dv, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=dtype) for shape in ((B, Tq, A), (B, Tk, A), (A,), (B, Tk, Dv))]


def mask_of(kind, B, Tq, Tk, seed=1):
    if kind is None:
        return None
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand((B, Tk) if kind == "keys" else (B, Tq, Tk), generator=g) < 0.6
    mask[0] = False  # fully masked rows: zero weights and gradients
    return mask


def close(got, expected, dtype):
    # float64: the same terms summed in another order. float32: the CPU kernel's tanh terms may take the factored
    # form (attention_math.h), a few ulp of 1 per term, over A terms.
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=2e-5)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, equal_nan=True, **tol)


SHAPES = [(3, 7, 5, 9, 4), (2, 1, 113, 3, 5), (5, 4, 1, 16, 1), (1, 13, 40, 33, 7)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("mask_kind", [None, "keys", "queries"])
@pytest.mark.parametrize("shape", SHAPES)
def test_kernels_match_cpu(gpu, shape, mask_kind, dtype):
    B, Tq, Tk, A, Dv = shape
    q, k, v, value = inputs(B, Tq, Tk, A, Dv, dtype, seed=sum(shape))
    mask = mask_of(mask_kind, B, Tq, Tk)
    context, weights = ops.additive_attention(q, k, v, value, mask, None, None)
    close(gpu.run(ops.additive_attention, q, k, v, value, mask, None, None), (context, weights), dtype)
    g = torch.Generator().manual_seed(2)
    grad_context = torch.randn(context.shape, generator=g, dtype=dtype)
    for grad_weights in (None, torch.randn(weights.shape, generator=g, dtype=dtype)):
        close(gpu.run(ops.additive_attention_backward, grad_context, grad_weights, q, k, v, value, weights, None, None),
              ops.additive_attention_backward(grad_context, grad_weights, q, k, v, value, weights, None, None), dtype)
    key = torch.randn(B, Tk, A, generator=g, dtype=dtype)
    context, weights = ops.dot_attention(q, key, value, mask, 0.7)
    close(gpu.run(ops.dot_attention, q, key, value, mask, 0.7), (context, weights), dtype)
    for grad_weights in (None, torch.randn(weights.shape, generator=g, dtype=dtype)):
        close(gpu.run(ops.dot_attention_backward, grad_context, grad_weights, q, key, value, weights, 0.7),
              ops.dot_attention_backward(grad_context, grad_weights, q, key, value, weights, 0.7), dtype)


def test_nan_rows_and_bad_input(gpu):
    q, k, v, value = inputs(2, 3, 4, 5, 6, torch.float64)
    q[1, 2, 0] = float("nan")  # query row (1, 2): NaN weights and context, as the CPU kernel and torch's softmax
    context, weights = gpu.run(ops.additive_attention, q, k, v, value, None, None, None)
    expected = ops.additive_attention(q, k, v, value, None, None, None)
    close((context, weights), expected, torch.float64)
    assert weights[1, 2].isnan().all() and not weights[1, :2].isnan().any()
    with pytest.raises(ValueError, match="v must have attn_size = 5"):
        gpu.run(ops.additive_attention, q, k, v[:4], value, None, None, None)
    with pytest.raises(ValueError, match="mask must have shape"):
        gpu.run(ops.dot_attention, q, k, value, torch.ones(2, 3, dtype=torch.bool), 1.0)


# ---- at scale -----------------------------------------------------------------------------------------------------

def forward_backward(q, k, v, value, mask):
    xs = [x.detach().clone().requires_grad_() for x in (q, k, v, value)]
    context, weights = F.additive_attention(*xs, mask=mask, return_weights=True)
    grads = torch.autograd.grad(context.square().sum() + weights.sum(), xs)
    return [context.detach(), weights.detach(), *grads]


@pytest.mark.parametrize("mask_kind", [None, "keys", "queries"])
def test_cuda_matches_cpu_and_is_deterministic(gpu, mask_kind):
    B, Tq, Tk, A, Dv = 32, 50, 100, 256, 64
    q, k, v, value = inputs(B, Tq, Tk, A, Dv, torch.float32)
    mask = mask_of(mask_kind, B, Tq, Tk)
    cpu = forward_backward(q, k, v, value, mask)
    on = [gpu.put(x) for x in (q, k, v, value)]
    cuda_mask = None if mask is None else gpu.put(mask)
    with gpu:
        first, second = forward_backward(*on, cuda_mask), forward_backward(*on, cuda_mask)
    # float32 sums over 100 keys of 256 terms each: the kernels and the CPU add in different orders, each within
    # ~1e-5 of the tensor's largest element of the float64 result (measured; gradients reach |1e3|).
    for a, b, c in zip(first, second, cpu):
        assert torch.equal(a, b)
        torch.testing.assert_close(a.cpu(), c, rtol=1e-3, atol=2e-5 * c.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_16_bit_inputs(gpu, dtype):
    q, k, v, value = (gpu.put(x.to(dtype)) for x in inputs(4, 6, 9, 32, 8, torch.float32))
    with gpu:
        context, weights = F.additive_attention(q, k, v, value, return_weights=True)
    expected = F.additive_attention(q.float(), k.float(), v.float(), value.float(), return_weights=True)
    assert context.dtype == weights.dtype == dtype
    torch.testing.assert_close(context.float(), expected[0].to(dtype).float(), rtol=2e-2, atol=2e-2)
