"""The packed-weight recurrent kernels (each instruction set this CPU has, one and two threads) against the
ATen-GEMM schedule, at sizes that do not fill their register blocks and vector lanes."""

import contextlib

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import pyseq


def available_kernels():
    kernels = ["portable"]
    for name in ("avx2", "avx512"):
        try:
            pyseq.set_recurrent_kernel(name)
            kernels.append(name)
        except ValueError:
            pass
    pyseq.set_recurrent_kernel("auto")
    return kernels


KERNELS = available_kernels()


@contextlib.contextmanager
def recurrent_kernel(name, threads=None):
    previous_threads = torch.get_num_threads()
    pyseq.set_recurrent_kernel(name)
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        pyseq.set_recurrent_kernel("auto")
        torch.set_num_threads(previous_threads)


def outputs_and_grads(module, x, lengths=None):
    xg = x.clone().requires_grad_()
    inp = pack_padded_sequence(xg, lengths, enforce_sorted=False) if lengths is not None else xg
    out, hidden = module(inp)
    out = out.data if lengths is not None else out
    states = list(hidden) if isinstance(hidden, tuple) else [hidden]
    gen = torch.Generator().manual_seed(3)
    loss = sum((t * torch.randn(t.shape, generator=gen)).sum() for t in [out] + states)
    grads = torch.autograd.grad(loss, [xg] + list(module.parameters()))
    return [out.detach()] + [s.detach() for s in states] + list(grads)


def assert_kernel_matches_aten(kernel, threads, module, x, lengths=None):
    with recurrent_kernel("aten"):
        expected = outputs_and_grads(module, x, lengths)
    with recurrent_kernel(kernel, threads):
        assert pyseq.build_info()["recurrent_kernel"] == kernel
        got = outputs_and_grads(module, x, lengths)
    for a, b in zip(got, expected):
        err = (a - b).abs().max().item()
        # Normwise: the kernels sum the recurrent product in a different order than the GEMM library.
        assert err <= 1e-5 * max(1.0, b.abs().max().item()), f"{kernel}: error {err}"


MODULES = [
    ("LSTM", {}),
    ("GRU", {}),
    ("RNN", {"nonlinearity": "tanh"}),
    ("RNN", {"nonlinearity": "relu"}),
]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name,kwargs", MODULES, ids=["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_odd_sizes_match_aten(kernel, threads, name, kwargs):
    torch.manual_seed(0)
    for H in (1, 3, 17, 129):
        for B in (1, 2, 7, 16, 67):
            module = getattr(pyseq.nn, name)(5, H, **kwargs)
            assert_kernel_matches_aten(kernel, threads, module, torch.randn(4, B, 5))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name,kwargs", MODULES, ids=["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_packed_bidirectional_match_aten(kernel, threads, name, kwargs):
    # Shrinking and growing active batches (forward and reverse direction); at this size (H=129, 31 rows) the steps
    # are large enough to be split between two threads.
    torch.manual_seed(0)
    module = getattr(pyseq.nn, name)(6, 129, num_layers=2, bidirectional=True, **kwargs)
    lengths = torch.randint(1, 10, (31,))
    lengths[0] = 9
    assert_kernel_matches_aten(kernel, threads, module, torch.randn(9, 31, 6), lengths)


@pytest.mark.parametrize("kernel", KERNELS + ["auto"])
def test_large_step_matches_torch(kernel):
    # Large enough for the kernels to split every step between two threads, and for `auto` to run this backward
    # through the GEMM library after the packed forward.
    torch.manual_seed(0)
    ours = pyseq.nn.GRU(32, 256)
    ref = torch.nn.GRU(32, 256)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(5, 64, 32)
    with recurrent_kernel(kernel, threads=2):
        got = outputs_and_grads(ours, x)
    expected = outputs_and_grads(ref, x)
    for a, b in zip(got, expected):
        err = (a - b).abs().max().item()
        assert err <= 1e-5 * max(1.0, b.abs().max().item())


def test_kernel_setting_errors():
    with pytest.raises(ValueError, match="recurrent kernel must be one of"):
        pyseq.set_recurrent_kernel("sse9")
    assert pyseq._C.recurrent_kernel() == "auto"
