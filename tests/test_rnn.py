"""pyseq.nn.LSTM / GRU / RNN and pyseq.functional against torch.nn (values, every gradient, state_dict, init) and
a naive step-by-step reference; custom-op checks, compile, bad input."""

import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import pyseq
from pyseq._ops import rnn as rnn_ops
from reference import rnn as naive

# name -> (pyseq class, torch class, extra constructor arguments)
CELLS = {
    "lstm": (pyseq.nn.LSTM, torch.nn.LSTM, {}),
    "lstm_proj": (pyseq.nn.LSTM, torch.nn.LSTM, {"proj_size": 2}),
    "gru": (pyseq.nn.GRU, torch.nn.GRU, {}),
    "rnn_tanh": (pyseq.nn.RNN, torch.nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (pyseq.nn.RNN, torch.nn.RNN, {"nonlinearity": "relu"}),
}
F32 = dict(rtol=1e-5, atol=1e-5)


def make_pair(cell, input_size, hidden_size, dtype=torch.float32, device="cpu", **kwargs):
    """A pyseq module and its torch.nn counterpart (cuDNN on CUDA) with the same weights, on `device`."""
    ours_cls, ref_cls, extra = CELLS[cell]
    ours = ours_cls(input_size, hidden_size, dtype=dtype, **extra, **kwargs)
    ref = ref_cls(input_size, hidden_size, dtype=dtype, **extra, **kwargs)
    ref.load_state_dict(ours.state_dict())
    return ours.to(device), ref.to(device)


def is_lstm(cell):
    return cell.startswith("lstm")


def initial_state(cell, module, batch, dtype=torch.float32, unbatched=False, device="cpu"):
    d = 2 if module.bidirectional else 1
    hr = module.proj_size or module.hidden_size
    shape = (module.num_layers * d,) + (() if unbatched else (batch,))
    h = torch.randn(*shape, hr, dtype=dtype, device=device, requires_grad=True)
    if is_lstm(cell):
        return (h, torch.randn(*shape, module.hidden_size, dtype=dtype, device=device, requires_grad=True))
    return h


def flat(output, hidden):
    out = output.data if isinstance(output, torch.nn.utils.rnn.PackedSequence) else output
    return [out] + (list(hidden) if isinstance(hidden, tuple) else [hidden])


def run(module, input, hx, leaves, seed=1):
    """Forward, then backward of a fixed random projection of every output; returns outputs and leaf gradients."""
    outputs = flat(*module(input, hx))
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(o.shape, generator=gen, dtype=o.dtype).to(o.device) for o in outputs]
    loss = sum((o * w).sum() for o, w in zip(outputs, weights))
    params = list(module.parameters())
    grads = torch.autograd.grad(loss, leaves + params, allow_unused=True)
    return [o.detach() for o in outputs], grads


def assert_normwise_close(a, b, rtol):
    # Normwise relative error: weight gradients are sums over every time step and batch row, so their float32
    # rounding grows with the largest entries, not with each entry.
    err = (a - b).abs().max().item() if a.numel() else 0.0
    assert err <= rtol * max(1.0, b.abs().max().item() if b.numel() else 0.0), f"max abs error {err}"


def assert_matches(cell, ours, ref, input, hx, leaves, rtol=1e-5):
    out_a, grad_a = run(ours, input, hx, leaves)
    out_b, grad_b = run(ref, input, hx, leaves)
    for a, b in zip(out_a, out_b):
        assert_normwise_close(a, b, rtol)
    for a, b in zip(grad_a, grad_b):
        assert (a is None) == (b is None)
        if a is not None:
            assert_normwise_close(a, b, rtol)


@pytest.mark.parametrize(
    "cell,num_layers,bidirectional,batch_first,with_state",
    list(itertools.product(CELLS, (1, 2, 3), (False, True), (False, True), (False, True))),
)
def test_matches_torch(cell, num_layers, bidirectional, batch_first, with_state, device):
    torch.manual_seed(0)
    ours, ref = make_pair(cell, 4, 5, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first,
                          device=device)
    T, B = 6, 3
    x = torch.randn((B, T, 4) if batch_first else (T, B, 4), device=device, requires_grad=True)
    hx = initial_state(cell, ours, B, device=device) if with_state else None
    leaves = [x] + (list(hx) if isinstance(hx, tuple) else [hx] if hx is not None else [])
    assert_matches(cell, ours, ref, x, hx, leaves)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bias", [False, True])
def test_without_bias(cell, bias, device):
    torch.manual_seed(0)
    ours, ref = make_pair(cell, 3, 4, num_layers=2, bias=bias, bidirectional=True, device=device)
    x = torch.randn(5, 2, 3, device=device, requires_grad=True)
    assert_matches(cell, ours, ref, x, None, [x])


@pytest.mark.parametrize(
    "cell,num_layers,bidirectional,enforce_sorted",
    list(itertools.product(CELLS, (1, 2), (False, True), (False, True))),
)
def test_packed_sequence(cell, num_layers, bidirectional, enforce_sorted, device):
    torch.manual_seed(0)
    ours, ref = make_pair(cell, 3, 4, num_layers=num_layers, bidirectional=bidirectional, device=device)
    lengths = torch.tensor([7, 7, 5, 2, 1]) if enforce_sorted else torch.tensor([2, 7, 1, 5, 7])
    x = torch.randn(7, 5, 3, device=device, requires_grad=True)
    hx = initial_state(cell, ours, 5, device=device)
    leaves = [x] + (list(hx) if isinstance(hx, tuple) else [hx])

    def packed():
        return pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)

    out_a, grad_a = run(ours, packed(), hx, leaves)
    out_b, grad_b = run(ref, packed(), hx, leaves)
    for a, b in zip(out_a + list(grad_a), out_b + list(grad_b)):
        assert_normwise_close(a, b, 1e-5)
    # Output comes back packed with the input's batch_sizes and permutation.
    output, _ = ours(packed(), hx)
    assert isinstance(output, torch.nn.utils.rnn.PackedSequence)
    padded, out_lengths = pad_packed_sequence(output)
    assert out_lengths.tolist() == lengths.tolist()


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("with_state", [False, True])
def test_unbatched_input(cell, with_state):
    torch.manual_seed(0)
    ours, ref = make_pair(cell, 3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 3, requires_grad=True)
    hx = initial_state(cell, ours, None, unbatched=True) if with_state else None
    leaves = [x] + (list(hx) if isinstance(hx, tuple) else [hx] if hx is not None else [])
    assert_matches(cell, ours, ref, x, hx, leaves)
    out, hidden = ours(x, hx)
    assert out.shape == (5, 2 * (ours.proj_size or 4))
    assert flat(out, hidden)[1].shape == (4, ours.proj_size or 4)


@pytest.mark.parametrize(
    "cell,T,B,H",
    [
        (cell, T, B, H)
        for cell, (T, B), H in itertools.product(CELLS, [(1, 1), (7, 5), (113, 5)], [1, 3, 129])
        if not (cell == "lstm_proj" and H == 1)  # proj_size (2) must be smaller than hidden_size
    ],
)
def test_odd_sizes(cell, T, B, H, device):
    torch.manual_seed(0)
    ours, ref = make_pair(cell, 5, H, device=device)
    x = torch.randn(T, B, 5, device=device, requires_grad=True)
    # Long sequences accumulate float32 rounding over 113 steps in both implementations.
    assert_matches(cell, ours, ref, x, None, [x], rtol=1e-4 if T > 100 else 1e-5)


@pytest.mark.parametrize("batch", [1, 2, 3, 64])
def test_small_and_large_batch_paths_agree_with_torch(batch):
    # Batches of 1-2 rows take pyseq's own vector-matrix product, larger ones the GEMM library.
    torch.manual_seed(0)
    for cell in ("lstm", "lstm_proj", "gru", "rnn_tanh"):
        ours, ref = make_pair(cell, 16, 33, num_layers=2, bidirectional=True)
        x = torch.randn(9, batch, 16, requires_grad=True)
        assert_matches(cell, ours, ref, x, None, [x])


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
@pytest.mark.parametrize("reverse", [False, True])
def test_single_layer_matches_naive_reference_float64(mode, reverse):
    torch.manual_seed(0)
    G = {"LSTM": 4, "GRU": 3}.get(mode, 1)
    T, B, I, H = 6, 4, 3, 5
    lengths = torch.tensor([6, 4, 4, 1])
    x = torch.randn(T, B, I, dtype=torch.float64)
    weights = [torch.randn(G * H, I, dtype=torch.float64), torch.randn(G * H, H, dtype=torch.float64),
               torch.randn(G * H, dtype=torch.float64), torch.randn(G * H, dtype=torch.float64)]
    h0 = torch.randn(B, H, dtype=torch.float64)
    c0 = torch.randn(B, H, dtype=torch.float64)
    y_ref, h_ref, c_ref = naive.single_layer(mode, x, lengths, h0, c0, weights, reverse=reverse)
    packed = pack_padded_sequence(x, lengths)
    mode_id = {"LSTM": rnn_ops.LSTM, "GRU": rnn_ops.GRU, "RNN_TANH": rnn_ops.RNN_TANH, "RNN_RELU": rnn_ops.RNN_RELU}
    empty = x.new_empty(0)
    y, h, c, _ = rnn_ops.rnn_layer(mode_id[mode], packed.data, packed.batch_sizes, h0,
                                   c0 if mode == "LSTM" else empty, *weights, empty, reverse, False)
    y_padded, _ = pad_packed_sequence(packed._replace(data=y))
    torch.testing.assert_close(y_padded, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h, h_ref, rtol=1e-12, atol=1e-12)
    if mode == "LSTM":
        torch.testing.assert_close(c, c_ref, rtol=1e-12, atol=1e-12)


GRADCHECK_CASES = [
    ("lstm", {}), ("lstm_proj", {}), ("gru", {}), ("rnn_tanh", {}), ("rnn_relu", {}), ("gru", {"bias": False}),
]


@pytest.mark.parametrize("cell,kwargs", GRADCHECK_CASES)
def test_gradcheck_float64(cell, kwargs, device):
    torch.manual_seed(0)
    ours_cls, _, extra = CELLS[cell]
    module = ours_cls(2, 3, num_layers=2, bidirectional=True, dtype=torch.float64, device=device, **extra, **kwargs)
    lengths = torch.tensor([4, 1, 3])
    x = torch.randn(4, 3, 2, dtype=torch.float64, device=device, requires_grad=True)
    hx = initial_state(cell, module, 3, dtype=torch.float64, device=device)
    states = list(hx) if isinstance(hx, tuple) else [hx]
    params = [p.detach().clone().requires_grad_() for p in module._flat_weights]
    fn = {"lstm": pyseq.functional.lstm, "lstm_proj": pyseq.functional.lstm, "gru": pyseq.functional.gru}.get(
        cell, lambda *a, **k: pyseq.functional.rnn(*a, nonlinearity=extra.get("nonlinearity"), **k))

    def f(x, *rest):
        state = tuple(rest[: len(states)]) if len(states) == 2 else rest[0]
        out, hidden = fn(pack_padded_sequence(x, lengths, enforce_sorted=False), state, list(rest[len(states):]),
                         num_layers=2, bidirectional=True)
        return tuple(flat(out, hidden))

    assert torch.autograd.gradcheck(f, (x, *states, *params), atol=1e-6)


def sample_layer_args(mode, save_workspace, requires_grad=True, proj=False, device="cpu"):
    G = {rnn_ops.LSTM: 4, rnn_ops.GRU: 3}.get(mode, 1)
    N, B, I, H = 7, 3, 4, 5
    Hr = 2 if proj else H
    t = lambda *s: torch.randn(*s, dtype=torch.float64, device=device, requires_grad=requires_grad)  # noqa: E731
    batch_sizes = torch.tensor([3, 2, 2])
    empty = torch.empty(0, dtype=torch.float64, device=device)
    c0 = t(B, H) if mode == rnn_ops.LSTM else empty
    w_hr = t(Hr, H) if proj else empty
    return (mode, t(N, I), batch_sizes, t(B, Hr), c0, t(G * H, I), t(G * H, Hr), t(G * H), t(G * H), w_hr,
            True, save_workspace)


@pytest.mark.parametrize("mode,proj", [(0, False), (1, False), (2, False), (2, True), (3, False)])
def test_opcheck(mode, proj, device):
    torch.library.opcheck(torch.ops.pyseq.rnn_layer.default, sample_layer_args(mode, True, proj=proj, device=device))
    torch.library.opcheck(torch.ops.pyseq.rnn_layer.default, sample_layer_args(mode, False, requires_grad=False,
                                                                                 proj=proj, device=device))
    args = sample_layer_args(mode, True, requires_grad=False, proj=proj, device=device)
    _, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, _ = args
    y, h_n, c_n, ws = torch.ops.pyseq.rnn_layer(*args)
    grad_cn = torch.randn_like(c_n) if mode == rnn_ops.LSTM else c_n
    torch.library.opcheck(
        torch.ops.pyseq.rnn_layer_backward.default,
        (mode, x, batch_sizes, w_ih, w_hh, w_hr, ws, torch.randn_like(y), torch.randn_like(h_n), grad_cn, reverse,
         True, True, True),
    )


@pytest.mark.parametrize("cell", ["lstm", "lstm_proj", "gru", "rnn_relu"])
def test_compile_fullgraph(cell):
    torch.manual_seed(0)
    ours, _ = make_pair(cell, 4, 5, num_layers=2, bidirectional=True, batch_first=True)
    compiled = torch.compile(ours, backend="aot_eager", fullgraph=True)
    x = torch.randn(3, 6, 4, requires_grad=True)
    out_c, grads_c = run(compiled, x, None, [x])
    out_e, grads_e = run(ours, x, None, [x])
    for a, b in zip(out_c + list(grads_c), out_e + list(grads_e)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_compile_default_backend():
    # Inductor (the default backend) compiles the graph around the custom ops, forward and backward.
    torch.manual_seed(0)
    ours, _ = make_pair("lstm", 4, 5, num_layers=2, bidirectional=True)
    compiled = torch.compile(ours, fullgraph=True)
    x = torch.randn(6, 3, 4, requires_grad=True)
    out_c, grads_c = run(compiled, x, None, [x])
    out_e, grads_e = run(ours, x, None, [x])
    for a, b in zip(out_c + list(grads_c), out_e + list(grads_e)):
        assert_normwise_close(a, b, 1e-6)


def test_same_seed_gives_torch_weights_and_state_dict_round_trips():
    for cell, (ours_cls, ref_cls, extra) in CELLS.items():
        kwargs = dict(num_layers=2, bidirectional=True, **extra)
        torch.manual_seed(123)
        ours = ours_cls(3, 4, **kwargs)
        torch.manual_seed(123)
        ref = ref_cls(3, 4, **kwargs)
        assert list(ours.state_dict()) == list(ref.state_dict())
        for (name_a, a), (name_b, b) in zip(ours.named_parameters(), ref.named_parameters()):
            assert name_a == name_b and a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        # Both ways, strict.
        other = ref_cls(3, 4, **kwargs)
        other.load_state_dict(ours.state_dict())
        ours2 = ours_cls(3, 4, **kwargs)
        ours2.load_state_dict(ref.state_dict())
        assert repr(ours).split("(", 1)[1] == repr(ref).split("(", 1)[1]


def test_dropout_between_layers_draws_like_torch():
    torch.manual_seed(0)
    ours, ref = make_pair("lstm", 4, 5, num_layers=3, dropout=0.5)
    x = torch.randn(6, 3, 4)
    torch.manual_seed(7)
    out_a, _ = ours(x)
    torch.manual_seed(7)
    out_b, _ = ref(x)
    torch.testing.assert_close(out_a, out_b, **F32)
    ours.eval()
    ref.eval()
    torch.testing.assert_close(ours(x)[0], ref(x)[0], **F32)


@pytest.mark.parametrize("cell", CELLS)
def test_empty_batch_like_torch(cell):
    ours, ref = make_pair(cell, 3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 0, 3, requires_grad=True)
    out_a, hidden_a = ours(x)
    out_b, hidden_b = ref(x)
    assert out_a.shape == out_b.shape
    for a, b in zip(flat(out_a, hidden_a), flat(out_b, hidden_b)):
        assert a.shape == b.shape
    out_a.sum().backward()
    assert x.grad.shape == x.shape


def test_inference_mode_and_no_grad():
    torch.manual_seed(0)
    ours, ref = make_pair("gru", 4, 5, num_layers=2)
    x = torch.randn(6, 3, 4)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x)[0], ref(x)[0], **F32)
    with torch.no_grad():
        out, _ = ours(x)
    assert not out.requires_grad


def test_tanh_is_accurate_in_float32():
    # With W_ih = I and no recurrence the RNN computes tanh(x) itself: check pyseq's float32 tanh over the whole
    # range against float64, to a few ulp.
    x = torch.cat([torch.linspace(-20, 20, 40001), torch.tensor([0.0, 1e-30, -1e-7, 0.6249, 0.625, 90.0, -200.0])])
    x = x.view(1, -1, 1)
    weights = [torch.ones(1, 1), torch.zeros(1, 1)]
    out, _ = pyseq.functional.rnn(x, None, weights)
    expected = torch.tanh(x.double())
    err = ((out.double() - expected).abs() / expected.abs().clamp_min(1e-30)).max().item()
    assert err < 4 * torch.finfo(torch.float32).eps


def test_nan_propagates():
    ours, _ = make_pair("lstm", 2, 3)
    x = torch.zeros(3, 1, 2)
    x[1, 0, 0] = float("nan")
    out, _ = ours(x)
    assert not torch.isnan(out[0]).any() and torch.isnan(out[1:]).all()


def test_init_irnn():
    torch.manual_seed(0)
    m = pyseq.nn.RNN(3, 4, num_layers=2, nonlinearity="relu", bidirectional=True)
    pyseq.nn.init_irnn_(m)
    for name, p in m.named_parameters():
        if name.startswith("weight_hh"):
            assert torch.equal(p, torch.eye(4))
        elif name.startswith("bias"):
            assert not p.any()
    ref = torch.nn.RNN(3, 4, num_layers=2, nonlinearity="relu", bidirectional=True)
    ref.load_state_dict(m.state_dict())
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(m(x)[0], ref(x)[0], **F32)
    with pytest.raises(TypeError, match="expects an RNN module"):
        pyseq.nn.init_irnn_(pyseq.nn.GRU(3, 4))


# ---- bad input: the class of error torch raises, with a message naming the argument ------------------------------

@pytest.mark.parametrize("cell", CELLS)
def test_errors_match_torch_classes(cell):
    ours, ref = make_pair(cell, 4, 5, num_layers=2)
    lstm = is_lstm(cell)
    hr = ours.proj_size or 5

    def state(h_shape, c_shape=(2, 3, 5)):
        return (torch.zeros(h_shape), torch.zeros(c_shape)) if lstm else torch.zeros(h_shape)

    cases = [
        ((torch.randn(6, 3, 7), None), RuntimeError, "input.size\\(-1\\) must be equal to input_size"),
        ((torch.randn(6, 3, 4, 1), None), ValueError, "Expected input to be 2D or 3D"),
        ((torch.randn(6, 3, 4, dtype=torch.float64), None), ValueError, r"^RNN input dtype \(torch.float64\)"),
        ((torch.randn(6, 3, 4), state((2, 4, hr))), RuntimeError, "Expected hidden"),
        ((torch.randn(6, 3, 4), state((2, 3, hr + 1))), RuntimeError, "Expected hidden"),
        ((torch.randn(6, 3, 4), state((3, hr))), RuntimeError, "should also be 3-D"),
        ((torch.randn(6, 4), state((2, 3, hr))), RuntimeError, "should also be 2-D"),
    ]
    if lstm:
        cases.append(((torch.randn(6, 3, 4), state((2, 3, hr), (2, 3, 6))), RuntimeError, "Expected hidden\\[1\\]"))
    for args, error, message in cases:
        with pytest.raises(error, match=message):
            ours(*args)
        with pytest.raises(error):
            ref(*args)


def test_constructor_errors_match_torch():
    for args, kwargs, error in [
        ((4, 5), {"proj_size": 5}, ValueError),
        ((4, 0), {}, ValueError),
        ((4, 5), {"dropout": 1.5}, ValueError),
        ((4, 5), {"bias": 1}, TypeError),
        ((4.0, 5), {}, TypeError),
        ((4, 5), {"num_layers": 0}, ValueError),
    ]:
        with pytest.raises(error):
            pyseq.nn.LSTM(*args, **kwargs)
        with pytest.raises(error):
            torch.nn.LSTM(*args, **kwargs)
    with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM"):
        pyseq.nn.GRU(4, 5, proj_size=2)
    with pytest.raises(ValueError, match="Unknown nonlinearity"):
        pyseq.nn.RNN(4, 5, nonlinearity="sigmoid")
    with pytest.warns(UserWarning, match="dropout option adds dropout after all but last"):
        pyseq.nn.GRU(4, 5, dropout=0.5)


@pytest.mark.parametrize("cell", ["lstm", "lstm_proj", "gru", "rnn_relu"])
def test_layers_are_torch_rnn_bases_with_torch_helpers(cell):
    """Code that walks a model for torch.nn.RNNBase (init loops, flatten_parameters, the forward-argument helpers)
    reaches pyseq's layers; they are not instances of nn.LSTM/GRU/RNN, on which torch.compile graph-breaks."""
    ours, ref = make_pair(cell, 4, 5, num_layers=2, bidirectional=True)
    assert isinstance(ours, torch.nn.RNNBase)
    assert not isinstance(ours, (torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN))
    x = torch.randn(3, 2, 4)
    hx = initial_state(cell, ours, 2)
    for module in (ours, ref):
        module.check_forward_args(x, hx, None)
        assert module.get_expected_hidden_size(x, None) == ref.get_expected_hidden_size(x, None)
        module.flatten_parameters()
    bad = (hx[0][:, :1], hx[1]) if is_lstm(cell) else hx[:, :1]
    with pytest.raises(RuntimeError, match="Expected hidden"):
        ours.check_forward_args(x, bad, None)
    # a parameter replaced by assignment (torch's __setattr__ keeps the weight list in step), then a dtype change
    for module in (ours, ref):
        module.weight_hh_l0 = torch.nn.Parameter(torch.full_like(ref.weight_hh_l0, 0.1))
        module.double()
    a, b = ours(x.double(), None), ref(x.double(), None)
    torch.testing.assert_close(a[0], b[0], rtol=1e-12, atol=1e-12)


def test_state_dtype_and_empty_sequence_errors():
    m = pyseq.nn.GRU(4, 5)
    with pytest.raises(RuntimeError, match="hx must have the dtype and device of the input"):
        m(torch.randn(3, 2, 4), torch.zeros(1, 2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least one time step"):
        m(torch.randn(0, 2, 4))
    with pytest.raises(TypeError, match="LSTM: hx must be a tuple"):
        pyseq.nn.LSTM(4, 5)(torch.randn(3, 2, 4), torch.zeros(1, 2, 5))
    with pytest.raises(ValueError, match="weights must hold 2 or 4 tensors per layer"):
        pyseq.functional.gru(torch.randn(3, 2, 4), None, list(m.parameters())[:3])


def test_kernel_argument_errors_name_the_argument():
    args = list(sample_layer_args(rnn_ops.GRU, False, requires_grad=False))
    bad = [
        (2, torch.tensor([3, 2, 1]), ValueError, "batch_sizes must sum to the number of rows of x"),
        (2, torch.tensor([3, 1, 3]), ValueError, "batch_sizes must be non-negative and non-increasing"),
        (2, torch.tensor([2, 2, 2, 1]), ValueError, "batch_sizes\\[0\\] must equal the batch size"),
        (2, torch.tensor([3.0, 2, 2]), TypeError, "batch_sizes must be int64"),
        (3, torch.zeros(3, 4, dtype=torch.float64), RuntimeError, "h0 must have shape \\[3, 5\\], got \\[3, 4\\]"),
        (5, torch.zeros(15, 3, dtype=torch.float64), RuntimeError, "w_ih must have shape \\[15, 4\\], got \\[15, 3\\]"),
        (1, torch.zeros(7, 4, dtype=torch.float32), TypeError, "w_ih must have the dtype of x"),
        (1, torch.zeros(7, 4, dtype=torch.int64), TypeError, "x must be float32 or float64"),
        (7, torch.zeros(14, dtype=torch.float64), RuntimeError, "b_ih must have shape \\[15\\], got \\[14\\]"),
        (1, torch.zeros(7, dtype=torch.float64), ValueError,
         "x must be 2-D \\(N, input_size\\) or 3-D \\(T, B, input_size\\), got 1-D"),
    ]
    for index, value, error, message in bad:
        call = list(args)
        call[index] = value
        with pytest.raises(error, match=message):
            torch.ops.pyseq.rnn_layer(*call)
    with pytest.raises(ValueError, match="mode must be 0"):
        torch.ops.pyseq.rnn_layer(7, *args[1:])


def test_backward_without_workspace_is_an_error():
    args = sample_layer_args(rnn_ops.RNN_TANH, False)
    y, *_ = rnn_ops.rnn_layer(*args)
    with pytest.raises(RuntimeError, match="save_workspace=False"):
        y.sum().backward()


def test_build_info():
    info = pyseq.build_info()
    assert info["version"] == pyseq.__version__
    assert info["cpu_isa"] in ("avx512", "avx2", "baseline")
    assert info["cuda"] is False or isinstance(info["cuda_runtime"], int)
    assert info["cuda_recurrent_kernel"] == "steps"
    pyseq.set_cuda_recurrent_kernel("persistent")
    try:
        assert pyseq.build_info()["cuda_recurrent_kernel"] == "persistent"
    finally:
        pyseq.set_cuda_recurrent_kernel("steps")
    with pytest.raises(ValueError, match="'steps' or 'persistent'"):
        pyseq.set_cuda_recurrent_kernel("fast")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_input_and_weights_on_different_devices_raise_like_torch(cell):
    ours, ref = make_pair(cell, 3, 4)
    x = torch.randn(2, 1, 3, device="meta")
    messages = []
    for module in (ours, ref):
        with pytest.raises(RuntimeError) as info:
            module(x)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert "Input and parameter tensors are not at the same device" in messages[0]


@pytest.mark.parametrize("mode,proj", [(0, False), (2, False), (2, True), (3, False)])
def test_layer_op_takes_padded_input_as_3d(mode, proj):
    # [T, B, I] is the same layer as its T*B rows; y and dx come back [T, B, *].
    args = list(sample_layer_args(mode, True, requires_grad=False, proj=proj))
    T, B = 3, 3
    args[1] = torch.randn(T * B, 4, dtype=torch.float64)
    args[2] = torch.tensor([B] * T)
    rows = tuple(args)
    padded = tuple(args[:1] + [args[1].view(T, B, 4)] + args[2:])
    y2, h2, c2, ws2 = torch.ops.pyseq.rnn_layer(*rows)
    y3, h3, c3, ws3 = torch.ops.pyseq.rnn_layer(*padded)
    assert y3.shape == (T, B, y2.shape[1])
    for a, b in ((y3.reshape(y2.shape), y2), (h3, h2), (c3, c2), (ws3, ws2)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    mode_, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, _ = rows
    grad_y = torch.randn_like(y2)
    back = (w_ih, w_hh, w_hr)
    tail = (torch.randn_like(h2), torch.randn_like(c2) if mode == rnn_ops.LSTM else c2, reverse, True, True, True)
    g2 = torch.ops.pyseq.rnn_layer_backward(mode, x, batch_sizes, *back, ws2, grad_y, *tail)
    g3 = torch.ops.pyseq.rnn_layer_backward(mode, x.view(T, B, 4), batch_sizes, *back, ws3, grad_y.view(y3.shape),
                                            *tail)
    assert g3[0].shape == (T, B, 4)
    for a, b in zip(g3, g2):
        torch.testing.assert_close(a.reshape(b.shape), b, rtol=0, atol=0)
    torch.library.opcheck(torch.ops.pyseq.rnn_layer.default,
                          tuple(a.requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point()
                                and a.numel() else a for a in padded))
