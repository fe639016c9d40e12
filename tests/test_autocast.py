"""Mixed precision: the recurrent layers under CPU autocast (bfloat16) against torch.nn's under the same autocast and
a float64 reference, and bfloat16 / float16 modules; CTC, CRF and attention under autocast (in float32, as torch's
CTC loss), backward passes run inside the autocast region too."""

import pytest
import torch
import torch.nn.functional as F
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


def test_backward_inside_autocast():
    # backward() inside the autocast region: the backward op must not have its GEMMs cast (the parameters' gradients
    # stay float32 and match a backward run outside the region).
    ours, _, _ = modules("lstm")
    x = torch.randn(8, 3, 12)
    grads = []
    for inside in (False, True):
        ours.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = ours(x)
            if inside:
                out.float().sum().backward()
        if not inside:
            out.float().sum().backward()
        grads.append([p.grad.clone() for p in ours.parameters()])
    for a, b in zip(*grads):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_ctc_loss_under_autocast_runs_in_float32_like_torch():
    torch.manual_seed(0)
    T, N, C, S = 30, 4, 7, 6
    logits = torch.randn(T, N, C, requires_grad=True)
    targets = torch.randint(1, C, (N, S))
    lengths, target_lengths = torch.full((N,), T), torch.tensor([6, 3, 0, 5])
    results = []
    for fn in (pyseq.functional.ctc_loss, F.ctc_loss):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            log_probs = logits.log_softmax(-1).to(torch.bfloat16)
            loss = fn(log_probs, targets, lengths, target_lengths)
            (grad,) = torch.autograd.grad(loss, logits)
        assert loss.dtype == torch.float32
        results.append((loss, grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    # torch's CTC gradient is exp(lp) - posterior, which equals pyseq's (-posterior) through log_softmax only when lp
    # is an exact log_softmax: rounded to bfloat16 its exp sums to 1 within ~2^-8, hence the tolerance.
    torch.testing.assert_close(results[0][1], results[1][1], rtol=0, atol=2e-3)
    with pytest.raises(TypeError, match="log_probs must be float32 or float64"):
        pyseq.functional.ctc_loss(log_probs.detach(), targets, lengths, target_lengths)  # 16 bits without autocast


def test_crf_under_autocast_runs_in_float32():
    torch.manual_seed(0)
    crf = pyseq.nn.CRF(5, batch_first=True)
    emissions = torch.randn(3, 9, 5).to(torch.bfloat16)
    tags = torch.randint(0, 5, (3, 9))
    expected = crf(emissions.float(), tags)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = crf(emissions, tags)
        decoded = crf.decode(emissions)
        got.backward()
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert decoded == crf.decode(emissions.float())
    assert crf.transitions.grad.dtype == torch.float32


@pytest.mark.parametrize("module", ["dot", "additive"])
def test_attention_under_autocast(module):
    torch.manual_seed(0)
    attention = pyseq.nn.DotAttention() if module == "dot" else pyseq.nn.AdditiveAttention(8, 8, 16)
    q = torch.randn(2, 3, 8, requires_grad=True)
    k, v = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    expected = attention(q, k, v)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = attention(q, k, v)[0]
        (grad,) = torch.autograd.grad(got.float().sum(), q)
    # Runs in float32 for now; the additive module's query projection is an autocast Linear (bfloat16).
    assert got.dtype == torch.float32 and grad.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0 if module == "dot" else 2e-2, atol=0 if module == "dot" else 1e-2)
