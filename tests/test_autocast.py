"""Mixed precision: the recurrent layers under CPU autocast (bfloat16) against torch.nn's under the same autocast and
a float64 reference, and bfloat16 / float16 modules. (The other families: still to come.)"""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import pyseq

CELLS = {
    "lstm": ("LSTM", {}),
    "lstm_proj": ("LSTM", {"proj_size": 5}),
    "gru": ("GRU", {}),
    "rnn_tanh": ("RNN", {}),
    "rnn_relu": ("RNN", {"nonlinearity": "relu"}),
}


def modules(cell, dtype=torch.float32):
    name, kwargs = CELLS[cell]
    torch.manual_seed(0)
    ours = getattr(pyseq.nn, name)(12, 16, num_layers=2, bidirectional=True, **kwargs)
    ref = getattr(torch.nn, name)(12, 16, num_layers=2, bidirectional=True, **kwargs)
    ref64 = getattr(torch.nn, name)(12, 16, num_layers=2, bidirectional=True, dtype=torch.float64, **kwargs)
    ref.load_state_dict(ours.state_dict())
    ref64.load_state_dict(ours.state_dict())
    return ours.to(dtype), ref.to(dtype), ref64


def flat(output, hidden):
    out = output.data if isinstance(output, torch.nn.utils.rnn.PackedSequence) else output
    return [out] + (list(hidden) if isinstance(hidden, tuple) else [hidden])


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("packed", [False, True])
def test_autocast_bfloat16_like_torch(cell, packed):
    ours, ref, ref64 = modules(cell)
    x = torch.randn(30, 4, 12)
    lengths = torch.tensor([30, 17, 30, 4])

    def inputs(t):
        return pack_padded_sequence(t, lengths, enforce_sorted=False) if packed else t

    expected = flat(*ref64(inputs(x.double())))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = flat(*ours(inputs(x)))
        theirs = flat(*ref(inputs(x)))
    for a, b, e in zip(got, theirs, expected):
        assert a.dtype == b.dtype
        err_ours = (a.double() - e).abs().max().item()
        err_torch = (b.double() - e).abs().max().item()
        # No further from float64 than torch's own bfloat16 layer (with a margin for rounding luck).
        assert err_ours <= 1.5 * err_torch + 1e-3, (err_ours, err_torch)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_autocast_gradients_reach_float32_parameters(cell):
    ours, ref, _ = modules(cell)
    x = torch.randn(10, 3, 12, requires_grad=True)
    grads = []
    for module in (ours, ref):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = module(x)
        loss = out.float().square().mean()
        grads.append(torch.autograd.grad(loss, [x] + list(module.parameters())))
    for a, b in zip(*grads):
        assert a.dtype == b.dtype == torch.float32
        # Both compute in bfloat16: compare normwise with bfloat16's resolution.
        assert (a - b).abs().max().item() <= 3e-2 * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cell", ["lstm", "lstm_proj", "gru", "rnn_relu"])
def test_16_bit_modules(cell, dtype):
    ours32, _, ref64 = modules(cell)
    ours = modules(cell, dtype)[0]
    x = torch.randn(15, 3, 12)
    expected = flat(*ref64(x.double()))
    got = flat(*ours(x.to(dtype)))
    for a, e in zip(got, expected):
        assert a.dtype == dtype
        # Computed in float32 from 16-bit weights and input, stored in 16 bits: a few roundings of 2^-8 (bfloat16).
        assert (a.double() - e).abs().max().item() < (6e-2 if dtype == torch.bfloat16 else 1e-2)
    out, _ = ours(x.to(dtype).requires_grad_())
    out.float().sum().backward()
    for p in ours.parameters():
        assert p.grad.dtype == dtype and torch.isfinite(p.grad).all()
