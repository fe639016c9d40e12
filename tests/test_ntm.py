"""NTM memory ops against a plain composition of the paper's equations (Graves et al. 2014, 3-9): values and gradients
in float64 and float32, odd sizes, several heads, corner cases of the sharpening (zero and underflowing weights),
memories wider than a CUDA block and shifts wider than the memory; gradcheck, opcheck, compile, bad input. The op tests
take the `device` fixture: on CUDA (where there is a GPU) they run the CUDA kernels, which share the CPU kernels' row
functions (csrc/ntm/ntm_rows.h)."""

import pytest
import torch
import torch.nn.functional as TF

import pyseq
from pyseq import functional as F


def reference_address(memory, key, beta, gate, shift, gamma, prev):
    """Equations 5-9 as torch ops, one head at a time."""
    B, H, N = prev.shape
    r = (shift.shape[2] - 1) // 2
    similarity = TF.cosine_similarity(key.unsqueeze(2), memory.unsqueeze(1), dim=3, eps=1e-8)  # [B, H, N]
    content = torch.softmax(beta.unsqueeze(2) * similarity, dim=2)
    gated = gate.unsqueeze(2) * content + (1 - gate.unsqueeze(2)) * prev
    shifted = torch.zeros_like(gated)
    for s in range(shift.shape[2]):
        shifted = shifted + shift[:, :, s : s + 1] * torch.roll(gated, s - r, dims=2)
    sharpened = shifted ** gamma.unsqueeze(2)
    return sharpened / sharpened.sum(2, keepdim=True)


def reference_write(memory, weights, erase, add):
    return memory * (1 - weights.unsqueeze(2) * erase.unsqueeze(1)) + weights.unsqueeze(2) * add.unsqueeze(1)


def address_inputs(B, H, N, M, S, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    return (
        randn(B, N, M),
        randn(B, H, M),
        TF.softplus(randn(B, H)) + 0.5,                 # beta > 0
        torch.sigmoid(randn(B, H)),                     # gate in (0, 1)
        torch.softmax(randn(B, H, S), dim=2),           # shift distribution
        1 + TF.softplus(randn(B, H)),                   # gamma >= 1
        torch.softmax(randn(B, H, N), dim=2),           # previous weights
    )


def values_and_grads(fn, inputs, device="cpu"):
    xs = [x.detach().to(device).requires_grad_() for x in inputs]
    out = fn(*xs)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(out.dtype)
    weights = weights.to(device)
    return [t.cpu() for t in [out.detach()] + list(torch.autograd.grad((out * weights).sum(), xs))]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("B,H,N,M,S", [(2, 1, 7, 5, 3), (3, 2, 13, 9, 5), (1, 3, 4, 1, 1), (2, 2, 5, 20, 7),
                                       (2, 1, 3, 2, 9), (1, 2, 19, 3, 3)])
def test_address_matches_the_equations(device, dtype, B, H, N, M, S):
    """(2, 1, 3, 2, 9): shifts wider than the memory (each wraps around it more than once); (1, 2, 19, 3, 3): more
    rows than the CPU kernel's block of interleaved rows, with a remainder."""
    inputs = address_inputs(B, H, N, M, S, dtype, seed=N + M)
    got = values_and_grads(F.ntm_address, inputs, device)
    expected = values_and_grads(reference_address, inputs)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-4, atol=1e-5)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, **tol)


def test_address_zero_key_and_zero_memory_rows(device):
    """Norms below eps: the similarity is 0 (torch's cosine_similarity), gradients stay finite and match."""
    inputs = list(address_inputs(2, 2, 6, 4, 3))
    inputs[0][0, 2] = 0.0
    inputs[1][1, 0] = 0.0
    got = values_and_grads(F.ntm_address, inputs, device)
    expected = values_and_grads(reference_address, inputs)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("gamma", [1.0, 2.5])
def test_address_shifted_weights_exactly_zero(device, gamma):
    """Gate 0, one-hot previous weights and a shift that keeps them: most shifted weights are exactly 0, where
    ws^gamma has no logarithm (and, for gamma = 1, a derivative of 1). Values and gradients as torch's pow gives
    them (it masks its exponent gradient where the base is 0)."""
    memory, key, beta, gate, shift, _, prev = address_inputs(2, 2, 6, 4, 3)
    gate = torch.zeros_like(gate)
    prev = torch.zeros_like(prev).index_fill_(2, torch.tensor([1]), 1.0)
    shift = torch.tensor([0.0, 0.7, 0.3], dtype=torch.float64).expand_as(shift).contiguous()
    gamma = torch.full_like(beta, gamma)
    inputs = (memory, key, beta, gate, shift, gamma, prev)
    got = values_and_grads(F.ntm_address, inputs, device)
    expected = values_and_grads(reference_address, inputs)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_address_sharpening_does_not_underflow(device):
    """Flat weights over 256 rows sharpened by gamma = 30: w_s^gamma is ~1e-72, below float32's range, so the
    equations computed in float32 give 0 / 0 = NaN. pyseq scales by the largest weight first and matches them
    computed in float64."""
    inputs = address_inputs(3, 2, 256, 8, 3, torch.float64)
    gamma = torch.full_like(inputs[2], 30.0)
    inputs = (*inputs[:5], gamma, inputs[6])
    assert reference_address(*[x.float() for x in inputs]).isnan().all()
    got = values_and_grads(F.ntm_address, [x.float() for x in inputs], device)
    expected = values_and_grads(reference_address, inputs)
    for a, b in zip(got, expected):
        assert a.isfinite().all()
        # float32 rounding of sums over 256 rows whose terms (gamma / w_s, log w_s: large next to the sums) cancel
        torch.testing.assert_close(a, b.float(), rtol=1e-3, atol=1e-4 * max(1.0, b.abs().max().item()))


@pytest.mark.parametrize("beta", [1e11, 1e20, 1e38])
def test_address_huge_key_strength_gives_one_hot_content(device, beta):
    """A key strength of 1e11 and more in float32: the content weights are the one-hot softmax of torch ops (the top
    row's exponent is exactly 0; rounding beta sim_i - max before the exp gave exponents of thousands and NaN)."""
    memory, key, _, _, shift, gamma, prev = address_inputs(2, 3, 37, 6, 3, torch.float32)
    gate = torch.ones(2, 3)  # the content weights alone
    beta = torch.full((2, 3), beta)
    expected = reference_address(memory, key, beta, gate, shift, gamma, prev)
    assert expected.isfinite().all()
    got = values_and_grads(F.ntm_address, (memory, key, beta, gate, shift, gamma, prev), device)
    assert all(g.isfinite().all() for g in got)
    torch.testing.assert_close(got[0], expected)


def test_step_huge_key_strength_logit():
    memory, params, prev = step_inputs(2, 1, 1, 9, 4, 3, torch.float32)
    A = 4 + 3 + 3
    params[:, 4] = 1e30  # the read head's key strength logit: beta = softplus(1e30) = 1e30
    params[:, A + 4] = 1e30  # the write head's
    got = step_values_and_grads(F.ntm_step, (memory, params, prev), 1, 1)
    expected = reference_step(memory, params, prev, 1, 1)
    assert all(g.isfinite().all() for g in got)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_write_and_read_match_the_equations(device, dtype):
    g = torch.Generator().manual_seed(1)
    memory, weights = torch.randn(3, 11, 7, generator=g, dtype=dtype), torch.rand(3, 11, generator=g, dtype=dtype)
    erase, add = torch.rand(3, 7, generator=g, dtype=dtype), torch.randn(3, 7, generator=g, dtype=dtype)
    got = values_and_grads(F.ntm_write, (memory, weights, erase, add), device)
    expected = values_and_grads(reference_write, (memory, weights, erase, add))
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, **tol)
    read = F.ntm_read(memory, torch.softmax(torch.randn(3, 2, 11, generator=g, dtype=dtype), 2))
    assert read.shape == (3, 2, 7)


def test_cuda_memory_wider_than_a_block_and_deterministic(gpu):
    """2000 rows: more than a block's 1024 threads, so each thread takes several rows. Same results as the CPU;
    the block reductions add in a fixed order, so two runs agree bitwise."""
    inputs = address_inputs(3, 2, 2000, 20, 5, torch.float32, seed=4)
    device = "cuda" if gpu.kind == "cuda" else "cpu"
    expected = values_and_grads(F.ntm_address, inputs)
    with gpu:
        got = values_and_grads(F.ntm_address, inputs, device)
        again = values_and_grads(F.ntm_address, inputs, device)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(got, again):
        assert torch.equal(a, b)


def test_cuda_16_bit_inputs_compute_in_float32(gpu):
    inputs = address_inputs(2, 2, 64, 20, 3, torch.float32, seed=5)
    for dtype in (torch.bfloat16, torch.float16):
        low = [x.to(dtype) for x in inputs]
        with gpu:
            got = F.ntm_address(*[gpu.put(x) for x in low])
        assert got.dtype == dtype
        torch.testing.assert_close(got.float().cpu(), F.ntm_address(*[x.float() for x in low]), rtol=1e-2, atol=1e-3)


def test_gradcheck():
    inputs = [x.requires_grad_() for x in address_inputs(2, 2, 5, 3, 3)]
    assert torch.autograd.gradcheck(F.ntm_address, inputs)
    g = torch.Generator().manual_seed(2)
    write = [torch.randn(2, 4, 3, generator=g, dtype=torch.float64), torch.rand(2, 4, generator=g, dtype=torch.float64),
             torch.rand(2, 3, generator=g, dtype=torch.float64), torch.randn(2, 3, generator=g, dtype=torch.float64)]
    assert torch.autograd.gradcheck(F.ntm_write, [x.requires_grad_() for x in write])


def test_opcheck_and_compile():
    inputs = address_inputs(2, 2, 5, 3, 3)
    ops = torch.ops.pyseq
    torch.library.opcheck(ops.ntm_address.default, [x.clone().requires_grad_() for x in inputs])
    weights = ops.ntm_address(*inputs)
    torch.library.opcheck(ops.ntm_address_backward.default, (torch.ones_like(weights), *inputs))
    memory = inputs[0].transpose(1, 2).contiguous().transpose(1, 2)  # strided memory: results stay contiguous
    write = (memory, weights[:, 0], torch.rand(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64))
    torch.library.opcheck(ops.ntm_write.default, [x.clone().requires_grad_() for x in write])
    torch.library.opcheck(ops.ntm_write_backward.default, (torch.ones_like(inputs[0]), *write))

    def step(memory, key, beta, gate, shift, gamma, prev, erase, add):
        w = F.ntm_address(memory, key, beta, gate, shift, gamma, prev)
        return F.ntm_write(memory, w[:, 0], erase, add), F.ntm_read(memory, w)

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    args = (*inputs, write[2], write[3])
    for a, b in zip(compiled(*args), step(*args)):
        torch.testing.assert_close(a, b)


def test_bad_input():
    memory, key, beta, gate, shift, gamma, prev = address_inputs(2, 1, 5, 3, 3)
    with pytest.raises(ValueError, match="odd number of shifts"):
        F.ntm_address(memory, key, beta, gate, shift[:, :, :2], gamma, prev)
    with pytest.raises(RuntimeError, match="prev_weights must have shape \\[2, 1, 5\\]"):
        F.ntm_address(memory, key, beta, gate, shift, gamma, prev[:, :, :4])
    with pytest.raises(TypeError, match="key must have the dtype of memory"):
        F.ntm_address(memory, key.float(), beta, gate, shift, gamma, prev)
    with pytest.raises(RuntimeError, match="erase must have shape \\[2, 3\\]"):
        F.ntm_write(memory, prev[:, 0], torch.rand(2, 4, dtype=memory.dtype), torch.rand(2, 3, dtype=memory.dtype))


# ---- one step of the heads ------------------------------------------------------------------------------------------

def reference_step(memory, params, prev, R, W):
    """The activations, the addressing, the reads and the writes in turn, as torch ops."""
    B, N, M = memory.shape
    heads = R + W
    A = (params.shape[1] - W * 2 * M) // heads
    p = params[:, : heads * A].reshape(B, heads, A)
    key, beta, gate, gamma, shift = p.split([M, 1, 1, 1, A - M - 3], dim=2)
    weights = reference_address(memory, key, TF.softplus(beta[..., 0]), torch.sigmoid(gate[..., 0]),
                                torch.softmax(shift, 2), 1 + TF.softplus(gamma[..., 0]), prev)
    reads = weights[:, :R] @ memory
    ea = params[:, heads * A :].reshape(B, W, 2, M)
    written = memory
    for w in range(W):
        written = reference_write(written, weights[:, R + w], torch.sigmoid(ea[:, w, 0]), torch.tanh(ea[:, w, 1]))
    return weights, reads, written


def step_inputs(B, R, W, N, M, S, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = torch.randn(B, (R + W) * (M + 3 + S) + W * 2 * M, generator=g, dtype=dtype)
    return (torch.randn(B, N, M, generator=g, dtype=dtype), params,
            torch.softmax(torch.randn(B, R + W, N, generator=g, dtype=dtype), 2))


def step_values_and_grads(fn, inputs, R, W, device="cpu"):
    xs = [x.detach().to(device).requires_grad_() for x in inputs]
    outs = fn(*xs, R, W)
    g = torch.Generator().manual_seed(7)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype).to(device)).sum() for o in outs)
    return [t.detach().cpu() for t in list(outs) + list(torch.autograd.grad(loss, xs))]


@pytest.mark.parametrize("R,W,S", [(1, 1, 3), (2, 2, 5), (1, 0, 1), (0, 1, 3), (3, 1, 3)])
def test_step_matches_the_composition(device, R, W, S):
    inputs = step_inputs(3, R, W, 11, 6, S, seed=R + 2 * W)
    inputs[1][0, 0] = 25.0  # above softplus's threshold of 20 (where it is linear) for the first head's key entry...
    inputs[1][0, 6] = 25.0  # ...and its key strength
    got = step_values_and_grads(F.ntm_step, inputs, R, W, device)
    expected = step_values_and_grads(reference_step, inputs, R, W)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("R,W,S", [(1, 1, 3), (2, 2, 5), (1, 0, 1), (0, 1, 3)])
def test_cuda_step_matches_the_composition(gpu, R, W, S):
    """The step as CUDA runs it (a composite of the NTM ops and ATen ops; the CPU has a fused kernel): values and every
    gradient."""
    memory, params, prev = step_inputs(3, R, W, 11, 6, S, seed=R + 2 * W + 1)
    g = torch.Generator().manual_seed(8)
    with gpu:
        outs = torch.ops.pyseq.ntm_step(*(gpu.put(t) for t in (memory, params, prev)), R, W)
        grads = [torch.randn(o.shape, generator=g, dtype=torch.float64) for o in outs]
        got = torch.ops.pyseq.ntm_step_backward(*(gpu.put(t) for t in (*grads, memory, params, prev, outs[0].cpu())),
                                                R, W)
    for a, b in zip(outs, reference_step(memory, params, prev, R, W)):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-10, atol=1e-12)
    expected = torch.ops.pyseq.ntm_step_backward(*grads, memory, params, prev, outs[0].cpu(), R, W)  # the fused kernel
    for a, b in zip(got, expected):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-10, atol=1e-12)


def test_step_and_layer_take_bfloat16():
    """16-bit inputs are computed in float32 (as the addressing and write ops do): results in the input dtype, equal to
    the float32 computation of the same (rounded) inputs up to bfloat16 rounding; the layer trains under autocast."""
    memory, params, prev = (t.float().bfloat16() for t in step_inputs(2, 1, 1, 9, 5, 3, seed=9))
    xs = [t.clone().requires_grad_() for t in (memory, params, prev)]
    outs = F.ntm_step(*xs, 1, 1)
    assert all(o.dtype == torch.bfloat16 for o in outs)
    for a, b in zip(outs, F.ntm_step(memory.float(), params.float(), prev.float(), 1, 1)):
        torch.testing.assert_close(a.float(), b, rtol=1e-2, atol=1e-2)
    grads = torch.autograd.grad(sum(o.float().sum() for o in outs), xs)
    assert all(g.dtype == torch.bfloat16 and g.isfinite().all() for g in grads)
    torch.manual_seed(0)
    ntm = pyseq.nn.NTM(4, 3, 8, memory_size=(9, 5))
    with torch.autocast("cpu", torch.bfloat16):
        out, _ = ntm(torch.randn(6, 2, 4))
    out.float().square().sum().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in ntm.parameters())


def test_step_unused_outputs_and_checks():
    """Gradients through some outputs only (the others' gradients are undefined), gradcheck, opcheck, bad input."""
    memory, params, prev = step_inputs(2, 1, 1, 5, 3, 3)
    xs = [t.clone().requires_grad_() for t in (memory, params, prev)]
    weights, reads, written = F.ntm_step(*xs, 1, 1)
    got = torch.autograd.grad(reads.sum(), xs)
    expected = torch.autograd.grad(reference_step(*xs, 1, 1)[1].sum(), xs)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    checked = [t.requires_grad_() for t in step_inputs(2, 1, 2, 5, 3, 3)]
    assert torch.autograd.gradcheck(lambda m, p, w: F.ntm_step(m, p, w, 1, 2), checked)
    ops = torch.ops.pyseq
    torch.library.opcheck(ops.ntm_step.default, (*[t.clone().requires_grad_() for t in (memory, params, prev)], 1, 1))
    outs = ops.ntm_step(memory, params, prev, 1, 1)
    torch.library.opcheck(ops.ntm_step_backward.default,
                          (*[torch.ones_like(o) for o in outs], memory, params, prev, outs[0], 1, 1))
    with pytest.raises(ValueError, match="params must have heads \\* \\(M \\+ 3 \\+ S\\)"):
        F.ntm_step(memory, params[:, :-1], prev, 1, 1)
    with pytest.raises(ValueError, match="at least one head"):
        F.ntm_step(memory, params, prev, 0, 0)
    with pytest.raises(RuntimeError, match="prev_weights must have shape"):
        F.ntm_step(memory, params, prev[:, :1], 1, 1)


# ---- the layer ---------------------------------------------------------------------------------------------------

def test_ntm_layer_shapes_state_and_gradients():
    torch.manual_seed(0)
    ntm = pyseq.nn.NTM(6, 4, 16, memory_size=(9, 5), read_heads=2, write_heads=2, shift_range=2).double()
    x = torch.randn(7, 3, 6, dtype=torch.float64)
    out, state = ntm(x)
    assert out.shape == (7, 3, 4)
    assert state.memory.shape == (3, 9, 5) and state.reads.shape == (3, 2, 5) and state.weights.shape == (3, 4, 9)
    assert state.controller[0].shape == state.controller[1].shape == (1, 3, 16)
    torch.testing.assert_close(state.weights.sum(-1), torch.ones(3, 4, dtype=torch.float64))
    # the state carries a sequence on: two halves equal the whole
    first, mid = ntm(x[:3])
    second, end = ntm(x[3:], mid)
    torch.testing.assert_close(torch.cat([first, second]), out)
    torch.testing.assert_close(end.memory, state.memory)
    # every parameter, the learned initial state included, gets a gradient
    out.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ntm.parameters())
    batch_first = pyseq.nn.NTM(6, 4, 16, memory_size=(9, 5), read_heads=2, write_heads=2, shift_range=2,
                               batch_first=True).double()
    batch_first.load_state_dict(ntm.state_dict())
    out_bf, _ = batch_first(x.transpose(0, 1))
    torch.testing.assert_close(out_bf.transpose(0, 1), out.detach())


def test_ntm_layer_bad_arguments():
    with pytest.raises(ValueError, match="shift_range >= 0"):
        pyseq.nn.NTM(3, 2, 8, shift_range=-1)
    with pytest.raises(ValueError, match="must be 3-D"):
        pyseq.nn.NTM(3, 2, 8)(torch.randn(4, 3))
