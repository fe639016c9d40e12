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
def kernel_setting(set_kernel, name, threads=None):
    """Runs the block with set_kernel(name) (and `threads` threads), then back to "auto"."""
    previous_threads = torch.get_num_threads()
    set_kernel(name)
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        set_kernel("auto")
        torch.set_num_threads(previous_threads)


def recurrent_kernel(name, threads=None):
    return kernel_setting(pyseq.set_recurrent_kernel, name, threads)


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


# ---- the bfloat16 kernel (AVX512-BF16) against the portable bfloat16 path (float32 kernels on converted tensors) --

HAS_BF16_KERNEL = pyseq.build_info()["bf16_recurrent_kernel"] == "avx512_bf16"


def bf16_kernel(name, threads=None):
    return kernel_setting(pyseq.set_bf16_recurrent_kernel, name, threads)


def test_bf16_kernel_setting():
    with bf16_kernel("float32"):
        assert pyseq.build_info()["bf16_recurrent_kernel"] == "float32"
    with pytest.raises(ValueError, match="must be one of auto, avx512_bf16, float32"):
        pyseq.set_bf16_recurrent_kernel("amx")
    if not HAS_BF16_KERNEL:
        with pytest.raises(ValueError, match="AVX512-BF16"):
            pyseq.set_bf16_recurrent_kernel("avx512_bf16")


@pytest.mark.skipif(not HAS_BF16_KERNEL, reason="this CPU has no AVX512-BF16")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "cell, kwargs, T, B, I, H, packed",
    [
        ("LSTM", {}, 9, 1, 5, 3, False),  # one partial lane group, odd input size (a padded pair)
        ("LSTM", {"bidirectional": True}, 12, 13, 16, 33, True),  # 3 row blocks, a partial group, variable lengths
        ("GRU", {"num_layers": 2}, 10, 9, 7, 64, False),
        ("GRU", {"bias": False}, 8, 5, 32, 17, True),
        ("RNN", {}, 11, 7, 6, 70, False),  # RNN packs 4 unit groups per panel
        ("RNN", {"nonlinearity": "relu", "bidirectional": True}, 9, 3, 9, 20, True),
    ],
)
def test_bf16_kernel_against_float32_path(threads, cell, kwargs, T, B, I, H, packed):
    torch.manual_seed(0)
    module = getattr(pyseq.nn, cell)(I, H, **kwargs)
    reference = getattr(torch.nn, cell)(I, H, dtype=torch.float64, **kwargs)
    module.to(torch.bfloat16)
    reference.load_state_dict(module.state_dict())  # the bfloat16 weights, exactly
    x = torch.randn(T, B, I).to(torch.bfloat16)
    lengths = torch.randint(1, T + 1, (B,)) if packed else None
    if packed:
        lengths[0] = T
    layers = module.num_layers * (2 if module.bidirectional else 1)
    h0 = torch.randn(layers, B, H).to(torch.bfloat16)
    hidden = (h0, torch.randn(layers, B, H).to(torch.bfloat16)) if cell == "LSTM" else h0

    def run(m, dtype):
        inp = x.to(dtype)
        if packed:
            inp = pack_padded_sequence(inp, lengths, enforce_sorted=False)
        state = tuple(s.to(dtype) for s in hidden) if cell == "LSTM" else hidden.to(dtype)
        out, h = m(inp, state)
        return [(out.data if packed else out).double()] + [s.double() for s in (h if cell == "LSTM" else (h,))]

    expected = run(reference, torch.float64)
    results = {}
    for kernel in ("float32", "avx512_bf16"):
        with bf16_kernel(kernel, threads), torch.no_grad():
            results[kernel] = run(module, torch.bfloat16)
    for got, portable, want in zip(results["avx512_bf16"], results["float32"], expected):
        err, err_portable = (got - want).abs().max().item(), (portable - want).abs().max().item()
        # The products on bfloat16 operands round the state to bfloat16 each step, which the portable path does
        # not: no further from float64 than the portable path beyond a margin of a few bfloat16 roundings.
        assert err <= 1.5 * err_portable + 1e-2, (err, err_portable)
        assert (got - portable).abs().max().item() <= 3e-2


@pytest.mark.skipif(not HAS_BF16_KERNEL, reason="this CPU has no AVX512-BF16")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "cell, kwargs, H, packed",
    [
        ("LSTM", {"bidirectional": True}, 24, False),
        ("GRU", {}, 17, True),  # odd H: the GRU's gate gradients have an odd hidden side
        ("GRU", {"bias": False}, 40, False),
        ("RNN", {"bidirectional": True}, 13, True),  # odd H: a padding column in the bfloat16 gate gradients
    ],
)
def test_bf16_kernel_training_gradients(threads, cell, kwargs, H, packed):
    """The backward of the bfloat16 kernel (bfloat16 products per step and in the weight gradients) against the
    portable path's (float32 throughout)."""
    torch.manual_seed(0)
    module = getattr(pyseq.nn, cell)(10, H, **kwargs).to(torch.bfloat16)
    T, B = 12, 7
    x = torch.randn(T, B, 10).to(torch.bfloat16)
    lengths = torch.tensor([12, 3, 9, 12, 1, 5, 8])
    grads = {}
    for kernel in ("float32", "avx512_bf16"):
        with bf16_kernel(kernel, threads):
            xg = x.clone().requires_grad_()
            inp = pack_padded_sequence(xg, lengths, enforce_sorted=False) if packed else xg
            out, hidden = module(inp)
            out = out.data if packed else out
            states = hidden if cell == "LSTM" else (hidden,)
            (out.float().square().sum() + sum(s.float().sum() for s in states)).backward()
            grads[kernel] = [xg.grad.float()] + [p.grad.float() for p in module.parameters()]
            module.zero_grad()
    for a, b in zip(grads["avx512_bf16"], grads["float32"]):
        assert (a - b).abs().max().item() <= 3e-2 * max(1.0, b.abs().max().item())
