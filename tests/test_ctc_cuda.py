"""The CTC CUDA path (csrc/ctc/ctc_cuda.*).

On a GPU and on the emulated GPU (the `gpu` fixture; make cuda-emulate): the glue and kernels against the CPU kernels
(the loss, its forward variables and its gradient; NaN, another blank, bad input), at sizes beyond one block of
threads, bitwise-deterministic gradients, 16-bit inputs, targets on the CPU, the decoders at scale; on a GPU only,
mixed devices. The tests of test_ctc.py run there too (their `device` fixture). (That the CUDA kernels are
registered: test_ops.py.)
"""

import pytest
import torch

import pyseq

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def batch(T, N, C, S, dtype=torch.float64, seed=0, layout="padded", repeats=True):
    """Log-probs with varied lengths: a full one, empty inputs and targets, targets too long for their input, repeated
    labels (which need a blank between them) when `repeats`."""
    gen = torch.Generator().manual_seed(seed)
    lp = torch.randn(T, N, C, generator=gen, dtype=dtype).log_softmax(2)
    targets = torch.randint(1, 3 if repeats else C, (N, S), generator=gen)
    il = torch.randint(0, T + 1, (N,), generator=gen)
    tl = torch.randint(0, S + 1, (N,), generator=gen)
    il[0], tl[0] = T, S
    if N > 2:
        il[1], tl[1] = 0, 0  # no frames, empty target: loss 0
        il[2], tl[2] = 2, S  # too short: infinite loss (for S > 2)
    if layout == "concatenated":
        targets = torch.cat([targets[n, : tl[n]] for n in range(N)])
    return lp, targets, il, tl


CASES = [(T, N, C, S, layout, repeats) for T, N, C, S in [(1, 1, 2, 1), (7, 5, 4, 3), (30, 6, 9, 11), (40, 3, 3, 0)]
         for layout in ("padded", "concatenated") for repeats in (True, False)]


ops = torch.ops.pyseq


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("T,N,C,S,layout,repeats", CASES)
def test_kernels_match_cpu(gpu, dtype, T, N, C, S, layout, repeats):
    lp, targets, il, tl = batch(T, N, C, S, dtype, seed=T + S, layout=layout, repeats=repeats)
    nll, alpha = ops.ctc_loss(lp, targets, il, tl, 0)
    gen = torch.Generator().manual_seed(1)
    grad_nll = torch.randn(N, generator=gen, dtype=dtype)  # both signs
    grad_nll[-1] = 0
    expected = ops.ctc_loss_backward(grad_nll, lp, targets, il, tl, nll, alpha, 0)
    with gpu:
        got_nll, got_alpha = ops.ctc_loss(gpu.put(lp), gpu.put(targets), il, tl, 0)
        got = ops.ctc_loss_backward(gpu.put(grad_nll), gpu.put(lp), gpu.put(targets), il, tl, got_nll, got_alpha, 0)
    # float64: the same math, the blank's sum in another order; float32 within a few units of the last place.
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_nll.cpu(), nll, **tol)
    torch.testing.assert_close(got_alpha.cpu(), alpha, **tol)  # -inf at the same cells
    torch.testing.assert_close(got.cpu(), expected, **tol)


def test_nan_and_other_blank(gpu):
    lp, targets, il, tl = batch(12, 4, 5, 3, seed=3, repeats=False)
    lp[0, 0, 4] = float("nan")  # the blank at frame 0 is on the lattice of sequence 0: its loss and gradient are NaN
    targets = targets % 4  # labels 0..3, the blank is 4
    tl[1] = 0
    nll, alpha = ops.ctc_loss(lp, targets, il, tl, 4)
    grad_nll = torch.ones(4, dtype=lp.dtype)
    expected = ops.ctc_loss_backward(grad_nll, lp, targets, il, tl, nll, alpha, 4)
    with gpu:
        got_nll, got_alpha = ops.ctc_loss(gpu.put(lp), gpu.put(targets), il, tl, 4)
        got = ops.ctc_loss_backward(gpu.put(grad_nll), gpu.put(lp), gpu.put(targets), il, tl, got_nll, got_alpha, 4)
    torch.testing.assert_close(got_nll.cpu(), nll, rtol=1e-12, atol=1e-12, equal_nan=True)
    assert got_nll[0].isnan()
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-12, atol=1e-12, equal_nan=True)
    assert got[: il[0], 0].isnan().all()


def test_bad_input(gpu):
    lp, targets, il, tl = batch(6, 2, 4, 3)
    nll, alpha = ops.ctc_loss(lp, targets, il, tl, 0)
    lp, targets = gpu.put(lp), gpu.put(targets)
    with gpu:
        with pytest.raises(RuntimeError, match="differ from the blank"):
            ops.ctc_loss(lp, torch.zeros_like(targets), il, torch.tensor([3, 3]), 0)
        with pytest.raises(RuntimeError, match="log_alpha must have shape"):
            ops.ctc_loss_backward(gpu.put(torch.ones(2, dtype=lp.dtype)), lp, targets, il, tl, gpu.put(nll),
                                  gpu.put(alpha[:, 1:]), 0)


# ---- at scale -----------------------------------------------------------------------------------------------------

def loss_and_grad(lp, targets, il, tl, **kwargs):
    x = lp.detach().clone().requires_grad_()
    loss = pyseq.functional.ctc_loss(x, targets, il, tl, reduction="sum", **kwargs)
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


@pytest.mark.parametrize("T,N,C,S", [(500, 4, 32, 100), (120, 3, 1000, 600), (50, 70, 5, 20)])
def test_cuda_matches_cpu_beyond_one_block(gpu, T, N, C, S):
    """S = 600: 1201 lattice cells, more than the 1024 threads of a block; N = 70: many blocks."""
    lp, targets, il, tl = batch(T, N, C, S, torch.float32, repeats=False)
    il = torch.maximum(il, (2 * tl + 1).clamp(max=T))
    cpu = loss_and_grad(lp, targets, il, tl)
    with gpu:
        cuda = loss_and_grad(gpu.put(lp), gpu.put(targets), il, tl)
    torch.testing.assert_close(cuda[0].cpu(), cpu[0], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(cuda[1].cpu(), cpu[1], rtol=1e-4, atol=1e-5)


def test_cuda_forced_path_longer_than_a_block(gpu):
    """600 labels in 1201 frames: one path, through every lattice cell in turn, so each frame's occupancy is one cell.
    1201 cells are more than a block's 1024 threads, so threads hold several blank cells and the blank's tree sum
    adds partial sums of other threads: each frame's blank gradient is -1 or 0, and a stale partial shows."""
    S = 600
    T = 2 * S + 1
    lp = torch.randn(T, 1, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64).log_softmax(2)
    targets = torch.arange(S).remainder(2).add(1).unsqueeze(0)  # 1, 2, 1, 2, ...: every skip is allowed
    il, tl = torch.tensor([T]), torch.tensor([S])
    cpu = loss_and_grad(lp, targets, il, tl)
    with gpu:
        cuda = loss_and_grad(gpu.put(lp), gpu.put(targets), il, tl)
    torch.testing.assert_close(cuda[0].cpu(), cpu[0], rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(cuda[1].cpu(), cpu[1], rtol=1e-10, atol=1e-10)


def test_cuda_gradient_is_deterministic(gpu):
    lp, targets, il, tl = batch(200, 16, 40, 50, torch.float32, repeats=True)
    lp, targets = gpu.put(lp), gpu.put(targets)
    with gpu:
        first, second = loss_and_grad(lp, targets, il, tl), loss_and_grad(lp, targets, il, tl)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_16_bit_log_probs(gpu, dtype):
    lp, targets, il, tl = batch(30, 5, 8, 6, torch.float32)
    lp16 = lp.to(dtype)
    with gpu:
        loss, grad = loss_and_grad(gpu.put(lp16), gpu.put(targets), il, tl)
    expected, expected_grad = loss_and_grad(lp16.float(), targets, il, tl)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(loss.cpu(), expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grad.cpu().float(), expected_grad.to(dtype).float())


def test_cuda_targets_on_the_cpu(gpu):
    lp, targets, il, tl = batch(20, 4, 6, 5, torch.float32)
    with gpu:
        got = pyseq.functional.ctc_loss(gpu.put(lp), targets, il, tl)
    torch.testing.assert_close(got.cpu(), pyseq.functional.ctc_loss(lp, targets, il, tl))


@needs_gpu
def test_cuda_mixed_devices():
    lp, targets, il, tl = batch(20, 4, 6, 5, torch.float32)
    with pytest.raises(RuntimeError, match="same device|log_probs on cpu"):
        torch.ops.pyseq.ctc_forced_align(lp, targets.cuda(), il, tl, 0)


def test_cuda_decoders_at_scale(gpu):
    lp, targets, il, tl = batch(300, 8, 5000, 100, torch.float32, repeats=False)
    il = torch.full_like(il, 300)
    tl = torch.full_like(tl, 100)
    expected_tokens, expected_alignment = pyseq.ctc.greedy_decode(lp, il), pyseq.ctc.forced_align(lp, targets, il, tl)
    with gpu:
        tokens = pyseq.ctc.greedy_decode(gpu.put(lp), il)
        alignment = pyseq.ctc.forced_align(gpu.put(lp), gpu.put(targets), il, tl)
    assert tokens == expected_tokens
    for got, expected in zip(alignment, expected_alignment):
        torch.testing.assert_close(got.cpu(), expected)
