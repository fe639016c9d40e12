"""The Clockwork RNN (pyseq.nn.ClockworkRNN, pyseq.functional.clockwork_rnn) against the paper's equations one module
at a time (tests/reference/clockwork.py): values and gradients of every input in float64 and float32, odd sizes
(modules of 1 unit, widths that are not whole vector chunks, periods that are not powers of two, equal periods),
sequences of different lengths; PackedSequence, batch_first, unbatched input; the unread recurrent weights;
gradcheck, gradgradcheck, opcheck, compile, thread-count determinism, bad input. The op tests take the `device`
fixture: CUDA where there is a GPU, and the emulated CUDA kernels in the emulation build."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import pyseq
from pyseq import functional as F
from reference.clockwork import reference_clockwork


def inputs(T, B, I, H, dtype=torch.float64, seed=0, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)  # noqa: E731
    return [rand(T, B, I), rand(H, I), rand(H, H), rand(H), rand(H), rand(B, H)]


def values_and_grads(fn, tensors, device):
    xs = [t.detach().to(device).requires_grad_() for t in tensors]
    outs = fn(*xs)
    g = torch.Generator().manual_seed(5)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o).to(device)).sum() for o in outs)
    grads = torch.autograd.grad(loss, xs)
    return [o.detach().cpu() for o in outs] + [d.cpu() for d in grads]


# (T, B, I, H, periods, nonlinearity): one-unit modules, module widths of 3, 33 (a vector chunk and one more unit) and
# 40, periods that are not powers of two and equal periods, batches that are not whole row blocks.
SIZES = [
    (7, 5, 3, 6, (1, 2, 3), "tanh"),
    (13, 9, 4, 12, (1, 1, 4, 8), "relu"),
    (40, 3, 2, 40, (1, 2, 4, 8, 16), "tanh"),
    (1, 1, 1, 3, (2, 2, 5), "tanh"),
    (9, 6, 3, 66, (1, 3), "tanh"),
    (17, 4, 5, 80, (3, 5), "relu"),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("T, B, I, H, periods, nonlinearity", SIZES)
def test_matches_the_paper(device, dtype, T, B, I, H, periods, nonlinearity):
    lengths = torch.randint(0, T + 1, (B,), generator=torch.Generator().manual_seed(T))
    lengths[0] = T

    def ours(x, w_ih, w_hh, b_ih, b_hh, h0):
        return F.clockwork_rnn(x, w_ih, w_hh, b_ih, b_hh, periods, h0, nonlinearity, lengths)

    def paper(x, w_ih, w_hh, b_ih, b_hh, h0):
        return reference_clockwork(x, w_ih, w_hh, b_ih, b_hh, periods, h0, nonlinearity, lengths)

    tensors = inputs(T, B, I, H, dtype)
    got = values_and_grads(ours, tensors, device)
    expected = values_and_grads(paper, [t.double() for t in tensors], "cpu")
    # float32 against the float64 reference: gradients sum over up to 80 units and 40 steps
    tolerance = {} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4}
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b.to(a.dtype), **tolerance)


def test_inactive_modules_keep_their_state_and_finished_sequences_output_zeros(device):
    x, w_ih, w_hh, b_ih, b_hh, h0 = (t.to(device) for t in inputs(6, 2, 2, 4, torch.float64))
    out, h_n = F.clockwork_rnn(x, w_ih, w_hh, b_ih, b_hh, (1, 4), h0, lengths=torch.tensor([6, 3]))
    slow = slice(2, 4)
    for t in (1, 2, 3, 5):  # the slow module runs at t = 0 and 4 only
        torch.testing.assert_close(out[t, 0, slow], out[t - 1, 0, slow])
    assert out[3:, 1].abs().max() == 0
    torch.testing.assert_close(h_n[1], out[2, 1])
    torch.testing.assert_close(h_n[0], out[5, 0])


def test_gradcheck_and_gradgradcheck():
    x, w_ih, w_hh, b_ih, b_hh, h0 = (t.requires_grad_() for t in inputs(5, 3, 2, 6, torch.float64))
    lengths = torch.tensor([5, 2, 0])
    for nonlinearity in ("tanh", "relu"):
        def layer(*args):
            return F.clockwork_rnn(*args[:5], (1, 2, 2), args[5], nonlinearity, lengths)

        assert torch.autograd.gradcheck(layer, (x, w_ih, w_hh, b_ih, b_hh, h0))
        assert torch.autograd.gradgradcheck(layer, (x, w_ih, w_hh, b_ih, b_hh, h0))


def test_torch_func_grad_matches_autograd():
    tensors = [t.requires_grad_() for t in inputs(4, 2, 3, 4, torch.float64)]

    def loss(*args):
        out, h_n = F.clockwork_rnn(*args[:5], (1, 3), args[5])
        return out.square().sum() + h_n.sum()

    expected = torch.autograd.grad(loss(*tensors), tensors)
    for got, want in zip(torch.func.grad(loss, argnums=tuple(range(6)))(*tensors), expected):
        torch.testing.assert_close(got, want)


def test_opcheck_with_non_contiguous_inputs():
    T, B, H = 5, 3, 6
    g = torch.Generator().manual_seed(2)
    input_proj = torch.randn(B, T, H, dtype=torch.float64, generator=g).transpose(0, 1).requires_grad_()
    h0 = torch.randn(H, B, dtype=torch.float64, generator=g).t().requires_grad_()
    w_hh = torch.randn(H, 2 * H, dtype=torch.float64, generator=g)[:, ::2].requires_grad_()
    lengths = torch.tensor([5, 0, 3])
    ops = torch.ops.pyseq
    torch.library.opcheck(ops.clockwork_rnn.default, (input_proj, h0, w_hh, [1, 2, 4], lengths, False))
    out, h_n = ops.clockwork_rnn(input_proj, h0, w_hh, [1, 2, 4], lengths, True)
    torch.library.opcheck(ops.clockwork_rnn_backward.default,
                          (torch.randn_like(out).transpose(0, 1).contiguous().transpose(0, 1), torch.randn_like(h_n),
                           out.detach(), h0.detach(), w_hh.detach(), [1, 2, 4], lengths, True))


def test_module_reads_only_the_triangular_weights_and_keeps_the_others_zero():
    torch.manual_seed(0)
    layer = pyseq.nn.ClockworkRNN(3, 6, periods=(1, 2, 4), dtype=torch.float64)
    allowed = layer.connectivity()
    assert allowed.tolist() == [[c // 2 >= u // 2 for c in range(6)] for u in range(6)]
    assert layer.weight_hh[~allowed].abs().max() == 0 and layer.weight_hh[allowed].abs().min() > 0
    x = torch.randn(9, 2, 3, dtype=torch.float64)
    out, _ = layer(x)
    out.square().sum().backward()
    assert layer.weight_hh.grad[~allowed].abs().max() == 0
    with torch.no_grad():
        layer.weight_hh[~allowed] = 5.0  # never read
    torch.testing.assert_close(layer(x)[0], out)
    assert sorted(layer.state_dict()) == ["bias_hh", "bias_ih", "weight_hh", "weight_ih"]


def test_module_packed_batch_first_unbatched_and_initial_state():
    torch.manual_seed(1)
    layer = pyseq.nn.ClockworkRNN(3, 8, periods=(1, 2, 4, 8), nonlinearity="relu", dtype=torch.float64)
    weights = (layer.weight_ih, layer.weight_hh, layer.bias_ih, layer.bias_hh, layer.periods)
    x = torch.randn(7, 4, 3, dtype=torch.float64)
    h0 = torch.randn(1, 4, 8, dtype=torch.float64)
    lengths = torch.tensor([3, 7, 1, 5])
    expected, expected_h = reference_clockwork(x, *weights, h0[0], "relu", lengths)
    packed, h_n = layer(pack_padded_sequence(x, lengths, enforce_sorted=False), h0)
    padded, got_lengths = pad_packed_sequence(packed)
    assert got_lengths.tolist() == lengths.tolist()
    torch.testing.assert_close(padded, expected[: lengths.max()])
    torch.testing.assert_close(h_n[0], expected_h)
    batch_first = pyseq.nn.ClockworkRNN(3, 8, periods=(1, 2, 4, 8), nonlinearity="relu", batch_first=True,
                                        dtype=torch.float64)
    batch_first.load_state_dict(layer.state_dict())
    out, h_n = batch_first(x.transpose(0, 1), h0)
    full, full_h = reference_clockwork(x, *weights, h0[0], "relu")
    torch.testing.assert_close(out, full.transpose(0, 1))
    torch.testing.assert_close(h_n[0], full_h)
    out, h_n = layer(x[:, 2], h0[:, 2])
    torch.testing.assert_close(out, full[:, 2])
    assert h_n.shape == (1, 8)


def test_module_uses_substituted_and_parametrized_weights():
    torch.manual_seed(2)
    layer = pyseq.nn.ClockworkRNN(2, 4, periods=(1, 2), dtype=torch.float64)
    x = torch.randn(5, 3, 2, dtype=torch.float64)
    params = {name: torch.randn_like(p) for name, p in layer.named_parameters()}
    got, _ = torch.func.functional_call(layer, params, (x,))
    expected, _ = reference_clockwork(x, params["weight_ih"], params["weight_hh"], params["bias_ih"],
                                      params["bias_hh"], (1, 2), torch.zeros(3, 4, dtype=torch.float64))
    torch.testing.assert_close(got, expected)
    torch.nn.utils.parametrizations.weight_norm(layer, "weight_ih")
    out, _ = layer(x)
    out.sum().backward()
    assert layer.parametrizations.weight_ih.original0.grad is not None


def test_compiles_without_graph_breaks():
    torch.manual_seed(3)
    layer = pyseq.nn.ClockworkRNN(3, 8, periods=(1, 2, 4, 8))
    x = torch.randn(6, 2, 3)
    eager = layer(x)
    compiled = torch.compile(layer, fullgraph=True)(x)
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(a, b)
    compiled[0].sum().backward()
    assert layer.weight_hh.grad is not None


def test_results_do_not_depend_on_the_thread_count():
    x, w_ih, w_hh, b_ih, b_hh, h0 = (t.float().requires_grad_() for t in inputs(30, 13, 5, 64, seed=4))
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            out, h_n = F.clockwork_rnn(x, w_ih, w_hh, b_ih, b_hh, (1, 2, 4, 8), h0)
            results.append([out, h_n, *torch.autograd.grad(out.sum() + h_n.sum(), (x, w_hh, h0))])
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_bfloat16_and_autocast():
    torch.manual_seed(5)
    layer = pyseq.nn.ClockworkRNN(4, 16, periods=(1, 2, 4, 8))
    x = torch.randn(10, 3, 4)
    expected, _ = layer(x)
    out, h_n = layer.bfloat16()(x.bfloat16())
    assert out.dtype == h_n.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)
    layer.float()
    with torch.autocast("cpu", torch.bfloat16):
        out, _ = layer(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)


def test_bad_input_says_what_is_wrong():
    with pytest.raises(ValueError, match="periods must be positive"):
        pyseq.nn.ClockworkRNN(2, 4, periods=(0, 1))
    with pytest.raises(ValueError, match="non-decreasing order"):
        pyseq.nn.ClockworkRNN(2, 4, periods=(2, 1))
    with pytest.raises(ValueError, match=r"hidden_size \(6\) must be divisible by the number of modules \(4\)"):
        pyseq.nn.ClockworkRNN(2, 6, periods=(1, 2, 4, 8))
    with pytest.raises(ValueError, match="Unknown nonlinearity"):
        pyseq.nn.ClockworkRNN(2, 4, nonlinearity="sigmoid")
    layer = pyseq.nn.ClockworkRNN(2, 4, periods=(1, 2))
    with pytest.raises(RuntimeError, match="input_size. Expected 2, got 3"):
        layer(torch.randn(3, 1, 3))
    with pytest.raises(RuntimeError, match=r"Expected hidden size \(1, 1, 4\)"):
        layer(torch.randn(3, 1, 2), torch.zeros(1, 2, 4))
    ops = torch.ops.pyseq
    xp, h0, w = torch.randn(3, 2, 4), torch.zeros(2, 4), torch.zeros(4, 4)
    with pytest.raises(ValueError, match="periods must be positive"):
        ops.clockwork_rnn(xp, h0, w, [1, -2], torch.tensor([3, 3]), False)
    with pytest.raises(ValueError, match="periods must name 1 to 64 modules, got 65"):
        ops.clockwork_rnn(torch.randn(3, 2, 65), torch.zeros(2, 65), torch.zeros(65, 65), [1] * 65,
                          torch.tensor([3, 3]), False)
    with pytest.raises(RuntimeError, match=r"lengths must be in \[0, T = 3\]"):
        ops.clockwork_rnn(xp, h0, w, [1, 2], torch.tensor([3, 4]), False)
    with pytest.raises(RuntimeError, match=r"weight_hh must have shape \[4, 4\]"):
        ops.clockwork_rnn(xp, h0, w[:3], [1, 2], torch.tensor([3, 3]), False)
    with pytest.raises(TypeError, match="input_proj must be float32 or float64"):
        ops.clockwork_rnn(xp.long(), h0, w, [1, 2], torch.tensor([3, 3]), False)
