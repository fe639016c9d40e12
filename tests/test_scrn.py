"""The SCRN (pyseq.nn.SCRN, pyseq.functional.scrn) against the paper's equations one step at a time
(tests/reference/scrn.py): values and gradients of every input in float64 and float32, odd sizes, both
nonlinearities, alpha at 0 and 1, sequences of different lengths; PackedSequence, batch_first, unbatched input;
gradcheck, gradgradcheck, torch.func, opcheck, compile, thread-count determinism, bfloat16, bad input. The op tests
take the `device` fixture: CUDA where there is a GPU, and the emulated CUDA kernels in the emulation build."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import pyseq
from pyseq import functional as F
from reference.scrn import reference_scrn


def inputs(T, B, I, H, C, dtype=torch.float64, seed=0, scale=0.5):
    """x, A, R, B, P, bias, h0, s0; R of spectral radius about `scale` (a chaotic layer would make float32's
    rounding grow over the steps)."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(T, B, I), (H, I), (H, H), (C, I), (H, C), (H,), (B, H), (B, C)]
    tensors = [torch.randn(*s, generator=g, dtype=torch.float64) * scale for s in shapes]
    tensors[2] /= H ** 0.5
    return [t.to(dtype) for t in tensors]


def values_and_grads(fn, tensors, device):
    xs = [t.detach().to(device).requires_grad_() for t in tensors]
    outs = fn(*xs)
    g = torch.Generator().manual_seed(5)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o).to(device)).sum() for o in outs)
    return [o.detach().cpu() for o in outs] + [d.cpu() for d in torch.autograd.grad(loss, xs)]


# (T, B, I, H, C, alpha, nonlinearity): one unit, sizes that are not whole vector chunks or row blocks, alpha 0 (no
# memory) and 1 (a constant context).
SIZES = [
    (7, 5, 3, 6, 4, 0.95, "sigmoid"),
    (20, 9, 4, 33, 7, 0.5, "tanh"),
    (1, 1, 1, 1, 1, 0.95, "sigmoid"),
    (12, 3, 5, 40, 16, 0.0, "sigmoid"),
    (9, 6, 2, 10, 3, 1.0, "tanh"),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("T, B, I, H, C, alpha, nonlinearity", SIZES)
def test_matches_the_paper(device, dtype, T, B, I, H, C, alpha, nonlinearity):
    lengths = torch.randint(0, T + 1, (B,), generator=torch.Generator().manual_seed(T))
    lengths[0] = T

    def ours(x, A, R, Bm, P, bias, h0, s0):
        return F.scrn(x, A, R, Bm, P, bias, alpha, (h0, s0), nonlinearity, lengths)

    def paper(x, A, R, Bm, P, bias, h0, s0):
        return reference_scrn(x, A, R, Bm, P, bias, alpha, h0, s0, nonlinearity, lengths)

    tensors = inputs(T, B, I, H, C, dtype)
    got = values_and_grads(ours, tensors, device)
    expected = values_and_grads(paper, [t.double() for t in tensors], "cpu")
    # float32 against the float64 reference: gradients sum over up to 40 units and 20 steps
    tolerance = {} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4}
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b.to(a.dtype), **tolerance)


def test_gradcheck_and_gradgradcheck():
    tensors = [t.requires_grad_() for t in inputs(5, 3, 2, 4, 3)]
    lengths = torch.tensor([5, 2, 0])
    for nonlinearity in ("sigmoid", "tanh"):
        def layer(x, A, R, Bm, P, bias, h0, s0):
            return F.scrn(x, A, R, Bm, P, bias, 0.8, (h0, s0), nonlinearity, lengths)

        assert torch.autograd.gradcheck(layer, tensors)
        assert torch.autograd.gradgradcheck(layer, tensors)


def test_torch_func_grad_matches_autograd():
    tensors = [t.requires_grad_() for t in inputs(4, 2, 3, 4, 2)]

    def loss(*args):
        hidden, context, h_n, s_n = F.scrn(*args[:6], 0.9, (args[6], args[7]))
        return hidden.square().sum() + context.sum() + h_n.sum() + s_n.square().sum()

    expected = torch.autograd.grad(loss(*tensors), tensors)
    for got, want in zip(torch.func.grad(loss, argnums=tuple(range(8)))(*tensors), expected):
        torch.testing.assert_close(got, want)


def test_opcheck_with_non_contiguous_inputs():
    T, B, H, C = 5, 3, 6, 4
    g = torch.Generator().manual_seed(2)
    rand = lambda *s: torch.randn(*s, dtype=torch.float64, generator=g)  # noqa: E731
    input_proj = rand(B, T, H).transpose(0, 1).requires_grad_()
    context_proj = rand(T, B, 2 * C)[:, :, ::2].requires_grad_()
    h0, s0 = rand(H, B).t().requires_grad_(), rand(B, C).requires_grad_()
    w_hh, w_ch = rand(H, H).t().requires_grad_(), rand(H, C).requires_grad_()
    lengths = torch.tensor([5, 0, 3])
    ops = torch.ops.pyseq
    args = (input_proj, context_proj, h0, s0, w_hh, w_ch, 0.9, lengths, True)
    torch.library.opcheck(ops.scrn.default, args)
    hidden, context, h_n, s_n = (t.detach() for t in ops.scrn(*args))
    grads = (torch.randn_like(hidden).transpose(0, 1).contiguous().transpose(0, 1), torch.randn_like(context),
             torch.randn_like(h_n), torch.randn_like(s_n))
    torch.library.opcheck(ops.scrn_backward.default, (*grads, hidden, context, h0.detach(), s0.detach(),
                                                      w_hh.detach(), w_ch.detach(), 0.9, lengths, True))


def test_module_packed_batch_first_unbatched_and_initial_state():
    torch.manual_seed(1)
    layer = pyseq.nn.SCRN(3, 6, 4, alpha=0.9, dtype=torch.float64)
    weights = (layer.weight_ih, layer.weight_hh, layer.weight_ic, layer.weight_ch, layer.bias, 0.9)
    assert sorted(layer.state_dict()) == ["bias", "weight_ch", "weight_hh", "weight_ic", "weight_ih"]
    x = torch.randn(7, 4, 3, dtype=torch.float64)
    h0, s0 = torch.randn(1, 4, 6, dtype=torch.float64), torch.randn(1, 4, 4, dtype=torch.float64)
    lengths = torch.tensor([3, 7, 1, 5])
    hidden, context, h_n, s_n = reference_scrn(x, *weights, h0[0], s0[0], lengths=lengths)
    packed, (got_h, got_s) = layer(pack_padded_sequence(x, lengths, enforce_sorted=False), (h0, s0))
    padded, got_lengths = pad_packed_sequence(packed)
    assert got_lengths.tolist() == lengths.tolist()
    torch.testing.assert_close(padded, torch.cat([hidden, context], -1)[: lengths.max()])
    torch.testing.assert_close(got_h[0], h_n)
    torch.testing.assert_close(got_s[0], s_n)
    batch_first = pyseq.nn.SCRN(3, 6, 4, alpha=0.9, batch_first=True, dtype=torch.float64)
    batch_first.load_state_dict(layer.state_dict())
    full = torch.cat(reference_scrn(x, *weights, h0[0], s0[0])[:2], -1)
    out, _ = batch_first(x.transpose(0, 1), (h0, s0))
    torch.testing.assert_close(out, full.transpose(0, 1))
    out, (got_h, got_s) = layer(x[:, 2], (h0[:, 2], s0[:, 2]))
    torch.testing.assert_close(out, full[:, 2])
    assert got_h.shape == (1, 6) and got_s.shape == (1, 4)


def test_module_uses_substituted_weights_and_compiles():
    torch.manual_seed(2)
    layer = pyseq.nn.SCRN(2, 5, 3)
    x = torch.randn(6, 3, 2)
    params = {name: torch.randn_like(p) for name, p in layer.named_parameters()}
    got, _ = torch.func.functional_call(layer, params, (x,))
    hidden, context, _, _ = reference_scrn(x, params["weight_ih"], params["weight_hh"], params["weight_ic"],
                                           params["weight_ch"], params["bias"], 0.95, torch.zeros(3, 5),
                                           torch.zeros(3, 3))
    torch.testing.assert_close(got, torch.cat([hidden, context], -1))
    eager = layer(x)[0]
    compiled = torch.compile(layer, fullgraph=True)(x)[0]
    torch.testing.assert_close(compiled, eager)
    compiled.sum().backward()
    assert layer.weight_ch.grad is not None


def test_results_do_not_depend_on_the_thread_count():
    tensors = [t.float().requires_grad_() for t in inputs(30, 13, 5, 64, 40, seed=4)]
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            hidden, context, h_n, s_n = F.scrn(*tensors[:6], 0.95, (tensors[6], tensors[7]))
            loss = hidden.sum() + context.sum() + h_n.sum() + s_n.sum()
            results.append([hidden, context, *torch.autograd.grad(loss, tensors)])
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_bfloat16_and_autocast():
    torch.manual_seed(5)
    layer = pyseq.nn.SCRN(4, 16, 8)
    x = torch.randn(10, 3, 4)
    expected, _ = layer(x)
    out, (h_n, s_n) = layer.bfloat16()(x.bfloat16())
    assert out.dtype == h_n.dtype == s_n.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)
    layer.float()
    with torch.autocast("cpu", torch.bfloat16):
        out, _ = layer(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)


def test_bad_input_says_what_is_wrong():
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        pyseq.nn.SCRN(2, 4, 3, alpha=1.5)
    with pytest.raises(ValueError, match="Unknown nonlinearity"):
        pyseq.nn.SCRN(2, 4, 3, nonlinearity="relu")
    with pytest.raises(ValueError, match="hidden_size positive"):
        pyseq.nn.SCRN(2, 0, 3)
    layer = pyseq.nn.SCRN(2, 4, 3)
    with pytest.raises(RuntimeError, match="input_size. Expected 2, got 3"):
        layer(torch.randn(3, 1, 3))
    with pytest.raises(RuntimeError, match=r"Expected s_0 of size \(1, 1, 3\)"):
        layer(torch.randn(3, 1, 2), (torch.zeros(1, 1, 4), torch.zeros(1, 1, 4)))
    ops = torch.ops.pyseq
    ip, cp, h0, s0 = torch.randn(3, 2, 4), torch.randn(3, 2, 3), torch.zeros(2, 4), torch.zeros(2, 3)
    w_hh, w_ch, lengths = torch.zeros(4, 4), torch.zeros(4, 3), torch.tensor([3, 3])
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got -0.5"):
        ops.scrn(ip, cp, h0, s0, w_hh, w_ch, -0.5, lengths, True)
    with pytest.raises(RuntimeError, match=r"weight_ch must have shape \[4, 3\]"):
        ops.scrn(ip, cp, h0, s0, w_hh, w_ch.t(), 0.5, lengths, True)
    with pytest.raises(RuntimeError, match=r"context_proj must have shape \[3, 2, 3\]"):
        ops.scrn(ip, cp[:2], h0, s0, w_hh, w_ch, 0.5, lengths, True)
    with pytest.raises(RuntimeError, match=r"lengths must be in \[0, T = 3\]"):
        ops.scrn(ip, cp, h0, s0, w_hh, w_ch, 0.5, torch.tensor([3, 4]), True)
    with pytest.raises(TypeError, match="s0 must have the dtype of input_proj"):
        ops.scrn(ip, cp, h0, s0.double(), w_hh, w_ch, 0.5, lengths, True)
