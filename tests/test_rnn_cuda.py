"""The recurrent layers' CUDA path (csrc/rnn/rnn_cuda.*).

On a GPU and on the emulated GPU (the `gpu` fixture): the layers' CUDA glue and kernels against the CPU path and
torch.nn (cuDNN on a GPU), bfloat16/float16, the persistent forward kernel; on a GPU only, mixed devices. (That the
CUDA kernels are registered: test_ops.py.)
"""

import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import pyseq
from pyseq import _C
from pyseq._ops import rnn as rnn_ops

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

MODES = {"lstm": rnn_ops.LSTM, "gru": rnn_ops.GRU, "rnn_tanh": rnn_ops.RNN_TANH, "rnn_relu": rnn_ops.RNN_RELU}


def layer_args(mode, dtype, batch_sizes, proj=False, bias=True, reverse=False, save=True, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    G = rnn_ops.GATES[mode]
    I, H = 3, 5
    Hr = 2 if proj else H
    B, N = int(batch_sizes[0]), int(batch_sizes.sum())

    def t(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype).to(device)

    empty = torch.empty(0, dtype=dtype, device=device)
    return (mode, t(N, I), batch_sizes, t(B, Hr), t(B, H) if mode == rnn_ops.LSTM else empty, t(G * H, I),
            t(G * H, Hr), t(G * H) if bias else empty, t(G * H) if bias else empty, t(Hr, H) if proj else empty,
            reverse, save)


def backward_args(args, forward, seed=1):
    gen = torch.Generator().manual_seed(seed)
    mode, x, batch_sizes, _, _, w_ih, w_hh, b_ih, _, w_hr, reverse, _ = args
    y, h_n, c_n, ws = forward

    def like(t):
        return torch.randn(t.shape, generator=gen, dtype=t.dtype).to(t.device)

    return (mode, x, batch_sizes, w_ih, w_hh, w_hr, ws, like(y), like(h_n), like(c_n), reverse, b_ih.numel() > 0,
            True, True)


CASES = [
    (name, proj, bias, reverse, sizes)
    for name, proj, bias, reverse, sizes in itertools.product(
        MODES, (False, True), (True, False), (False, True), ([4, 4, 4], [4, 3, 3, 1], [1]))
    if not (proj and name != "lstm")
]




@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name,proj,bias,reverse,sizes", CASES)
def test_cuda_ops_match_cpu(gpu, dtype, name, proj, bias, reverse, sizes):
    batch_sizes = torch.tensor(sizes)
    cpu = layer_args(MODES[name], dtype, batch_sizes, proj=proj, bias=bias, reverse=reverse)
    on_gpu = tuple(gpu.put(a) if isinstance(a, torch.Tensor) and a is not cpu[2] else a for a in cpu)
    expected = torch.ops.pyseq.rnn_layer(*cpu)
    expected_grads = torch.ops.pyseq.rnn_layer_backward(*backward_args(cpu, expected))
    with gpu:
        got = torch.ops.pyseq.rnn_layer(*on_gpu)
        grads = torch.ops.pyseq.rnn_layer_backward(*backward_args(on_gpu, got))
    # float64: the same math in the same order up to the GEMM library's summation order.
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a.cpu(), b, **tol)
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a.cpu(), b, **tol)


def test_cuda_forward_without_workspace(gpu):
    args = layer_args(rnn_ops.GRU, torch.float64, torch.tensor([2, 2]), save=False)
    with gpu:
        y, h_n, c_n, ws = torch.ops.pyseq.rnn_layer(*(gpu.put(a) if isinstance(a, torch.Tensor) and a is not args[2]
                                                      else a for a in args))
    assert ws.shape == (0, _C.rnn_workspace_columns(rnn_ops.GRU, 5, 5))
    torch.testing.assert_close(y.cpu(), torch.ops.pyseq.rnn_layer(*args)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_cuda_16_bit_close_to_float32(gpu, dtype, cell):
    torch.manual_seed(0)
    module = gpu.put(getattr(pyseq.nn, cell)(32, 64, num_layers=2, bidirectional=True))
    x = gpu.put(torch.randn(20, 8, 32))
    with gpu:
        out32, _ = module(x)
        out16, _ = module.to(dtype)(x.to(dtype))
        assert out16.dtype == dtype
        out16.float().sum().backward()
    # bfloat16 keeps 8 bits of mantissa: ~4e-3 relative per rounding, over 20 steps and two layers.
    err = (out16.float() - out32).abs().max().item()
    assert err < (5e-2 if dtype == torch.bfloat16 else 1e-2), err
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())


def test_cuda_packed_sequence_matches_cudnn(gpu):
    torch.manual_seed(0)
    ours = gpu.put(pyseq.nn.LSTM(4, 8, num_layers=2, bidirectional=True, proj_size=3))
    ref = gpu.put(torch.nn.LSTM(4, 8, num_layers=2, bidirectional=True, proj_size=3))
    ref.load_state_dict(ours.state_dict())
    x = gpu.put(torch.randn(9, 5, 4))
    lengths = torch.tensor([9, 2, 7, 1, 4])
    with gpu:
        out_a, (h_a, c_a) = ours(pack_padded_sequence(x, lengths, enforce_sorted=False))
    out_b, (h_b, c_b) = ref(pack_padded_sequence(x, lengths, enforce_sorted=False))
    for a, b in ((out_a.data, out_b.data), (h_a, h_b), (c_a, c_b)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@needs_gpu
def test_cuda_mixed_devices_raise():
    module = pyseq.nn.GRU(3, 4).cuda()
    with pytest.raises(RuntimeError, match="device"):
        module(torch.randn(2, 1, 3))
    args = list(layer_args(rnn_ops.GRU, torch.float32, torch.tensor([1]), device="cuda"))
    args[3] = args[3].cpu()
    with pytest.raises(RuntimeError, match="device"):
        torch.ops.pyseq.rnn_layer(*args)


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("B,H", [(1, 7), (5, 256), (16, 1024), (17, 64)])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_cuda_persistent_forward_matches_step_schedule(gpu, cell, B, H, bidirectional):
    # B = 17 is past the persistent kernel's batch limit: the step schedule runs, and must agree all the same.
    # (The emulated GPU has 8 multiprocessors: H = 256 spreads over 8 blocks of the persistent kernel.)
    torch.manual_seed(0)
    module = gpu.put(getattr(pyseq.nn, cell)(16, H, bidirectional=bidirectional))
    x = gpu.put(torch.randn(12, B, 16)).requires_grad_()

    def run():
        with gpu:
            out, h = module(x)
            states = list(h) if isinstance(h, tuple) else [h]
            loss = out.square().sum() + sum(s.square().sum() for s in states)
            grads = torch.autograd.grad(loss, [x] + list(module.parameters()))
        return [out.detach()] + [s.detach() for s in states] + list(grads)

    expected = run()
    pyseq.set_cuda_recurrent_kernel("persistent")
    try:
        got = run()
    finally:
        pyseq.set_cuda_recurrent_kernel("steps")
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("kernel", ["auto", "aten"])
def test_backward_without_the_initial_state_gradient(name, kernel):
    # need_dh0=False skips the last step's product with W_hh: dh0 comes back empty, every other gradient the same.
    args = layer_args(MODES[name], torch.float32, torch.tensor([3] * 9), bias=True)
    grads = backward_args(args, torch.ops.pyseq.rnn_layer(*args))
    pyseq.set_recurrent_kernel(kernel)
    try:
        full = torch.ops.pyseq.rnn_layer_backward(*grads)
        partial = torch.ops.pyseq.rnn_layer_backward(*grads[:-1], False)
        assert full[1].shape == (3, 5) and partial[1].numel() == 0
        for i in (0, 2, 3, 4, 5, 6, 7):
            torch.testing.assert_close(partial[i], full[i], rtol=0, atol=0)
    finally:
        pyseq.set_recurrent_kernel("auto")
