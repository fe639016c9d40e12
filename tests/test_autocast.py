"""Mixed precision: the recurrent layers under CPU autocast (bfloat16) against torch.nn's under the same autocast and
a float64 reference, and bfloat16 / float16 modules; CTC, CRF and NTM under autocast (in float32, as torch's CTC
loss), attention under autocast (in bfloat16, as torch's), 16-bit inputs without autocast; backward passes run inside
the autocast region too."""

import copy

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


def run_torch(module, *args):
    """(torch.nn's layer on args, whether it ran its oneDNN path). Where oneDNN has no bfloat16 LSTM for this CPU
    (no AVX-512: "could not create a primitive descriptor"), torch's native path with oneDNN off, which computes in
    bfloat16 as well but returns the output in float32."""
    try:
        return module(*args), True
    except RuntimeError as error:
        if "primitive descriptor" not in str(error):
            raise
    with torch.backends.mkldnn.flags(enabled=False):
        return module(*args), False


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
        result, onednn = run_torch(ref, inputs(x))
        theirs = flat(*result)
    for a, b, e in zip(got, theirs, expected):
        assert a.dtype == b.dtype or not onednn
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
            (out, _), _ = run_torch(module, x)
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


def test_ntm_under_autocast_runs_in_float32():
    """The NTM ops take float32 under autocast, as torch's composition of them computes its cosine similarity,
    softmax and powers: a bfloat16 key (as an autocast linear layer emits it) is cast to float32, the weights come
    back in float32 and the key's gradient in bfloat16; the NTM layer trains with its controller under autocast."""
    torch.manual_seed(0)
    memory, key = torch.randn(2, 7, 4), torch.randn(2, 2, 4).to(torch.bfloat16)
    rest = (torch.rand(2, 2) + 0.5, torch.rand(2, 2), torch.softmax(torch.randn(2, 2, 3), -1), torch.rand(2, 2) + 1,
            torch.softmax(torch.randn(2, 2, 7), -1))
    expected = pyseq.functional.ntm_address(memory, key.float(), *rest)
    k = key.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = pyseq.functional.ntm_address(memory, k, *rest)
        written = pyseq.functional.ntm_write(memory, got[:, 0], torch.rand(2, 4).bfloat16(), torch.randn(2, 4))
        got.sum().backward()
    assert got.dtype == written.dtype == torch.float32 and k.grad.dtype == torch.bfloat16
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    ntm = pyseq.nn.NTM(3, 2, 8, memory_size=(6, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, state = ntm(torch.randn(5, 2, 3))
        out.float().sum().backward()
    assert state.memory.dtype == torch.float32
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in ntm.parameters())


@pytest.mark.parametrize("module", ["dot", "additive"])
def test_attention_under_autocast_runs_in_bfloat16(module):
    """In the autocast dtype, as torch's scaled_dot_product_attention: a bfloat16 context, float32 gradients for
    float32 leaves, and no further from float64 than torch's attention under the same autocast."""
    torch.manual_seed(0)
    attention = pyseq.nn.DotAttention() if module == "dot" else pyseq.nn.AdditiveAttention(8, 8, 16)
    reference = copy.deepcopy(attention).double()
    q = torch.randn(2, 3, 8, requires_grad=True)
    k, v = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    expected = reference(q.double(), k.double(), v.double())[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = attention(q, k, v)[0]
        (grad,) = torch.autograd.grad(got.float().sum(), q)
        theirs = F.scaled_dot_product_attention(q, k, v, scale=1.0)
    assert got.dtype == theirs.dtype == torch.bfloat16 and grad.dtype == torch.float32
    err = (got.double() - expected).abs().max().item()
    if module == "dot":
        err_torch = (theirs.double() - expected).abs().max().item()
        assert err <= 1.5 * err_torch + 1e-3, (err, err_torch)
    else:  # no torch counterpart: bfloat16's resolution on values of magnitude ~1
        assert err <= 3e-2, err


# ---- 16-bit inputs without autocast: CTC and CRF compute and return float32, attention returns the input dtype ----


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_ctc_loss_of_16_bit_log_probs_is_the_float32_loss(dtype):
    torch.manual_seed(0)
    T, N, C, S = 30, 4, 7, 6
    log_probs = torch.randn(T, N, C).log_softmax(-1).to(dtype)
    targets = torch.randint(1, C, (N, S))
    lengths, target_lengths = torch.full((N,), T), torch.tensor([6, 3, 0, 5])
    results = []
    for lp in (log_probs.requires_grad_(), log_probs.detach().float().requires_grad_()):
        loss = pyseq.nn.CTCLoss(reduction="sum")(lp, targets, lengths, target_lengths)
        loss.backward()
        results.append((loss, lp.grad))
    (loss, grad), (loss32, grad32) = results
    assert loss.dtype == torch.float32 and grad.dtype == dtype  # the gradient in its input's dtype
    torch.testing.assert_close(loss, loss32, rtol=0, atol=0)
    torch.testing.assert_close(grad, grad32.to(dtype), rtol=0, atol=0)
    aligned = pyseq.ctc.forced_align(log_probs.detach(), targets, lengths, target_lengths)
    aligned32 = pyseq.ctc.forced_align(log_probs.detach().float(), targets, lengths, target_lengths)
    torch.testing.assert_close(aligned, aligned32, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_crf_module(dtype):
    torch.manual_seed(0)
    crf = pyseq.nn.CRF(5, batch_first=True)
    crf16 = pyseq.nn.CRF(5, batch_first=True).to(dtype)
    crf16.load_state_dict(crf.state_dict())
    crf.load_state_dict(crf16.state_dict())  # the float32 module holds the 16-bit parameters' values
    emissions = torch.randn(3, 9, 5).to(dtype)
    tags = torch.randint(0, 5, (3, 9))
    got, expected = crf16(emissions, tags), crf(emissions.float(), tags)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    got.backward()
    expected.backward()
    assert crf16.transitions.grad.dtype == dtype
    torch.testing.assert_close(crf16.transitions.grad, crf.transitions.grad.to(dtype), rtol=0, atol=0)
    assert crf16.decode(emissions) == crf.decode(emissions.float())
    # 16-bit emissions into a float32 module (a bfloat16 encoder under a float32 CRF)
    torch.testing.assert_close(crf(emissions, tags), expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("module", ["dot", "general", "additive"])
def test_16_bit_attention_modules(module, dtype):
    torch.manual_seed(0)
    make = {
        "dot": lambda: pyseq.nn.DotAttention(),
        "general": lambda: pyseq.nn.DotAttention(8, 8, "general"),
        "additive": lambda: pyseq.nn.AdditiveAttention(8, 8, 16),
    }[module]
    attention = make()
    reference = make().double()
    reference.load_state_dict(attention.state_dict())
    attention.to(dtype)
    q, k, v = torch.randn(2, 3, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 4)
    q16, k16, v16 = (t.to(dtype).requires_grad_() for t in (q, k, v))
    q64, k64, v64 = (t.to(dtype).double().requires_grad_() for t in (q, k, v))
    context, weights = attention(q16, k16, v16, return_weights=True)
    expected, expected_weights = reference(q64, k64, v64, return_weights=True)
    assert context.dtype == weights.dtype == dtype
    context.sum().backward()
    expected.sum().backward()
    assert q16.grad.dtype == k16.grad.dtype == v16.grad.dtype == dtype
    # Against float64 on the same (rounded) inputs: the error of rounding the results and, for the module's
    # projections, of 16-bit GEMMs (8 significant bits for bfloat16).
    tol = 2e-2 if dtype == torch.bfloat16 else 3e-3
    torch.testing.assert_close(context.double(), expected, rtol=tol, atol=tol)
    torch.testing.assert_close(weights.double(), expected_weights, rtol=tol, atol=tol)
    for got, want in ((q16, q64), (k16, k64), (v16, v64)):
        torch.testing.assert_close(got.grad.double(), want.grad, rtol=tol, atol=tol)


def test_16_bit_inputs_opcheck():
    """The fake kernels give the dtypes the CPU kernels return for 16-bit inputs."""
    torch.manual_seed(0)
    ops = torch.ops.pyseq
    T, N, C = 6, 2, 4
    lp = torch.randn(T, N, C).log_softmax(-1).bfloat16().requires_grad_()
    targets, lengths, target_lengths = torch.tensor([[1, 2], [3, 3]]), torch.full((N,), T), torch.tensor([2, 1])
    torch.library.opcheck(ops.ctc_loss.default, (lp, targets, lengths, target_lengths, 0))
    nll, log_alpha = ops.ctc_loss(lp.detach(), targets, lengths, target_lengths, 0)
    torch.library.opcheck(
        ops.ctc_loss_backward.default, (torch.ones_like(nll), lp.detach(), targets, lengths, target_lengths, nll,
                                        log_alpha, 0)
    )
    em = torch.randn(2, 5, 3).bfloat16().requires_grad_()
    start, end, trans = torch.randn(3), torch.randn(3), torch.randn(3, 3)
    crf_lengths = torch.tensor([5, 3])
    torch.library.opcheck(ops.crf_log_partition.default, (em, crf_lengths, start, end, trans))
    torch.library.opcheck(ops.crf_viterbi.default, (em.detach(), crf_lengths, start, end, trans, 2))
    q, k, v = (torch.randn(2, n, 4).half().requires_grad_() for n in (3, 5, 5))
    torch.library.opcheck(ops.dot_attention.default, (q, k, v, None, 0.5))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("steps", [3, 9])  # short: the float32 kernels on converted tensors; long: the packed kernels
@pytest.mark.parametrize("mode", [0, 2, 3])  # RNN (tanh), LSTM, GRU
def test_16_bit_layer_opcheck(mode, steps, dtype):
    """The fake kernels give the dtypes of the CPU kernels for 16-bit layers: a float32 workspace, the rest in the
    layer's dtype."""
    torch.manual_seed(0)
    G = {2: 4, 3: 3}.get(mode, 1)
    B, I, H = 2, 5, 6

    def t(*shape, grad=True):
        return torch.randn(*shape).to(dtype).requires_grad_(grad)

    empty = torch.empty(0, dtype=dtype)
    batch_sizes = torch.full((steps,), B)
    c0 = t(B, H) if mode == 2 else empty
    args = (mode, t(steps * B, I), batch_sizes, t(B, H), c0, t(G * H, I), t(G * H, H), t(G * H), t(G * H), empty,
            False, True)
    y, h_n, c_n, ws = torch.ops.pyseq.rnn_layer(*args)
    assert y.dtype == h_n.dtype == dtype and ws.dtype == torch.float32
    torch.library.opcheck(torch.ops.pyseq.rnn_layer.default, args)
    detached = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    _, x, _, _, _, w_ih, w_hh, _, _, w_hr, reverse, _ = detached
    grad_cn = torch.randn_like(c_n) if mode == 2 else c_n
    torch.library.opcheck(
        torch.ops.pyseq.rnn_layer_backward.default,
        (mode, x, batch_sizes, w_ih, w_hh, w_hr, ws.detach(), torch.randn_like(y), torch.randn_like(h_n),
         grad_cn.detach(), reverse, True, True, True),
    )
