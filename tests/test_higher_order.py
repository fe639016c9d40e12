"""torch's parameter and higher-order autograd machinery through pyseq: substituted and parametrized weights
(functional_call, torch.nn.utils.parametrize, weight_norm, orthogonal), torch.func transforms, and double backward.

References: torch.nn's recurrent layers under the same machinery on the same inputs; elsewhere gradgradcheck (finite
differences of the first gradient) and torch.func against plain autograd.
"""

import pytest
import torch
from torch.autograd import gradgradcheck
from torch.nn.utils import parametrizations, parametrize
from torch.nn.utils.rnn import pack_padded_sequence

import pyseq
import pyseq.functional as F

LAYERS = {"LSTM": (pyseq.nn.LSTM, torch.nn.LSTM), "GRU": (pyseq.nn.GRU, torch.nn.GRU),
          "RNN": (pyseq.nn.RNN, torch.nn.RNN)}


def twin_layers(kind, dtype=torch.float64, **kwargs):
    """A pyseq layer and a torch.nn layer of the same kind holding the same weights."""
    ours_type, torch_type = LAYERS[kind]
    torch.manual_seed(0)
    theirs = torch_type(3, 4, dtype=dtype, **kwargs)
    ours = ours_type(3, 4, dtype=dtype, **kwargs)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def random_params(module):
    generator = torch.Generator().manual_seed(1)
    return {name: torch.randn(p.shape, dtype=p.dtype, generator=generator) for name, p in module.named_parameters()}


# ---- substituted and parametrized weights ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", LAYERS)
def test_functional_call_uses_the_given_weights(kind):
    ours, theirs = twin_layers(kind, num_layers=2, bidirectional=True)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    params = random_params(theirs)
    out_ours, h_ours = torch.func.functional_call(ours, params, (x,))
    out_theirs, h_theirs = torch.func.functional_call(theirs, params, (x,))
    torch.testing.assert_close(out_ours, out_theirs)
    # all-zero weights: every output is 0 (the module's own weights would give others)
    zeros = {name: torch.zeros_like(p) for name, p in ours.named_parameters()}
    assert torch.func.functional_call(ours, zeros, (x,))[0].abs().max() == 0


@pytest.mark.parametrize("kind", LAYERS)
def test_torch_func_grad_vjp_jacrev_match_torch_nn(kind):
    ours, theirs = twin_layers(kind)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    params = dict(theirs.named_parameters())

    def loss(module):
        return lambda p, inputs: torch.func.functional_call(module, p, (inputs,))[0].square().sum()

    grads_ours = torch.func.grad(loss(ours))(params, x)
    grads_theirs = torch.func.grad(loss(theirs))(params, x)
    for name in params:
        torch.testing.assert_close(grads_ours[name], grads_theirs[name])
        assert grads_ours[name].abs().max() > 0

    def output(module):
        return lambda inputs: torch.func.functional_call(module, params, (inputs,))[0]

    cotangent = torch.randn(4, 2, 4, dtype=torch.float64)
    (vjp_ours,) = torch.func.vjp(output(ours), x)[1](cotangent)
    (vjp_theirs,) = torch.func.vjp(output(theirs), x)[1](cotangent)
    torch.testing.assert_close(vjp_ours, vjp_theirs)
    torch.testing.assert_close(torch.func.jacrev(output(ours))(x), torch.func.jacrev(output(theirs))(x))


class Scaled(torch.nn.Module):
    def forward(self, weight):
        return 0.5 * weight


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("parametrization", ["custom", "weight_norm", "orthogonal"])
def test_parametrized_weights_are_used_and_trained(kind, parametrization):
    ours, theirs = twin_layers(kind, dtype=torch.float32)
    for module in (ours, theirs):
        torch.manual_seed(2)
        if parametrization == "custom":
            parametrize.register_parametrization(module, "weight_hh_l0", Scaled())
        elif parametrization == "weight_norm":
            parametrizations.weight_norm(module, "weight_ih_l0")
        else:  # a square weight for the RNN (orthogonal), a tall one for the gated layers (orthonormal columns)
            parametrizations.orthogonal(module, "weight_hh_l0" if kind == "RNN" else "weight_ih_l0")
    x = torch.randn(5, 2, 3)
    out_ours, out_theirs = ours(x)[0], theirs(x)[0]
    torch.testing.assert_close(out_ours, out_theirs)
    out_ours.sum().backward()
    out_theirs.sum().backward()
    grads_ours = {name: p.grad for name, p in ours.named_parameters()}
    for name, p in theirs.named_parameters():
        assert grads_ours[name] is not None, name
        torch.testing.assert_close(grads_ours[name], p.grad, msg=name)


def test_parametrized_weights_under_compile():
    ours, theirs = twin_layers("LSTM", dtype=torch.float32)
    for module in (ours, theirs):
        parametrize.register_parametrization(module, "weight_hh_l0", Scaled())
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(torch.compile(ours, fullgraph=True)(x)[0], theirs(x)[0])


# ---- double backward -------------------------------------------------------------------------------------------


def f64(*shape, positive=False, requires_grad=True):
    t = torch.randn(*shape, dtype=torch.float64)
    return (t.abs() + 0.5 if positive else t).requires_grad_(requires_grad)


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("variant", ["bidirectional", "packed"])
def test_recurrent_gradgradcheck(kind, variant):
    torch.manual_seed(0)
    layer = LAYERS[kind][0](2, 3, dtype=torch.float64, bidirectional=variant == "bidirectional")
    x = f64(4, 2, 2)
    h0 = f64(2 if variant == "bidirectional" else 1, 2, 3)
    weights = tuple(layer.parameters())

    def run(x, h0, *params):
        inputs = pack_padded_sequence(x, torch.tensor([4, 2]), enforce_sorted=True) if variant == "packed" else x
        names = [name for name, _ in layer.named_parameters()]
        hx = (h0, torch.zeros_like(h0)) if kind == "LSTM" else h0
        out, _ = torch.func.functional_call(layer, dict(zip(names, params)), (inputs, hx))
        return out.data if variant == "packed" else out

    assert gradgradcheck(run, (x, h0, *weights))


def test_lstm_projection_gradgradcheck():
    torch.manual_seed(0)
    layer = pyseq.nn.LSTM(2, 4, proj_size=2, dtype=torch.float64)
    names = [name for name, _ in layer.named_parameters()]
    x = f64(3, 2, 2)

    def run(x, *params):
        return torch.func.functional_call(layer, dict(zip(names, params)), (x,))[0]

    assert gradgradcheck(run, (x, *layer.parameters()))


@pytest.mark.parametrize("kind", LAYERS)
def test_recurrent_gradient_penalty_matches_torch_nn(kind):
    """A first-order gradient with create_graph=True, then the gradient of a penalty on it: as torch.nn's."""
    ours, theirs = twin_layers(kind)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    results = []
    for module in (ours, theirs):
        inputs = x.clone().requires_grad_()
        (grad_x,) = torch.autograd.grad(module(inputs)[0].tanh().sum(), inputs, create_graph=True)
        penalty = grad_x.square().sum()
        results.append((grad_x.detach(), torch.autograd.grad(penalty, tuple(module.parameters()))))
    torch.testing.assert_close(results[0][0], results[1][0])
    for g_ours, g_theirs in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(g_ours, g_theirs)


def test_attention_gradgradcheck():
    torch.manual_seed(0)
    q, k, v, value = f64(2, 3, 4), f64(2, 5, 4), f64(4), f64(2, 5, 3)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    assert gradgradcheck(lambda q, k, v, value: F.additive_attention(q, k, v, value, mask, return_weights=True),
                         (q, k, v, value))
    assert gradgradcheck(lambda q, k, value: F.dot_attention(q, k, value, mask, return_weights=True), (q, f64(2, 5, 4),
                                                                                                       value))
    # self-attention: one tensor as query, key and value
    x = f64(2, 4, 3)
    assert gradgradcheck(lambda x: F.dot_attention(x, x, x)[0], (x,))


def test_gradient_penalty_through_dot_attention_matches_composition():
    torch.manual_seed(0)
    q, k, value = f64(2, 3, 4), f64(2, 5, 4), f64(2, 5, 3)

    def reference(q, k, value):
        return torch.softmax(q @ k.transpose(1, 2) / 2.0, -1) @ value

    results = []
    for attend in (lambda q, k, value: F.dot_attention(q, k, value)[0], reference):
        (grad_q,) = torch.autograd.grad(attend(q, k, value).sum(), q, create_graph=True)
        results.append(torch.autograd.grad(grad_q.square().sum(), (q, k, value)))
    for ours, expected in zip(*results):
        torch.testing.assert_close(ours, expected)


def crf_scores(K=3, forbid=True):
    start, end, transitions = f64(K), f64(K), f64(K, K)
    if forbid:  # a forbidden transition, as constraints write them
        with torch.no_grad():
            transitions[0, 1] = float("-inf")
    return start, end, transitions


def test_crf_gradgradcheck():
    torch.manual_seed(0)
    emissions, tags = f64(2, 4, 3), torch.tensor([[0, 2, 2, 1], [1, 1, 0, 0]])
    lengths = torch.tensor([4, 2])
    start, end, transitions = crf_scores()

    def finite_scores(function):
        # -inf entries are constants of the model (constraints): only the finite ones are perturbed
        def run(emissions, start, end, free):
            trans = torch.where(transitions.isinf(), transitions.detach(), free)
            return function(emissions, trans, start, end)
        return run

    free = torch.where(transitions.isinf(), 0.0, transitions).detach().requires_grad_()
    for function in (
        lambda e, t, s, n: F.crf_log_partition(e, t, s, n, lengths),
        lambda e, t, s, n: F.crf_score(e, tags, t, s, n, lengths),
        lambda e, t, s, n: F.crf_log_likelihood(e, tags, t, s, n, lengths),
    ):
        assert gradgradcheck(finite_scores(function), (emissions, start, end, free))


def test_crf_impossible_paths_keep_their_meaning_in_double_backward():
    """A forbidden tag path has log-likelihood -inf and gradient 0, also when the gradient is differentiable."""
    torch.manual_seed(0)
    emissions = f64(1, 2, 3)
    start, end, transitions = crf_scores()
    tags = torch.tensor([[0, 1]])  # through the forbidden transition
    llh = F.crf_log_likelihood(emissions, tags, transitions, start, end)
    assert llh.item() == float("-inf")
    (grad,) = torch.autograd.grad(llh.sum(), emissions, create_graph=True)
    assert grad.abs().max() == 0


@pytest.mark.parametrize("targets_form", ["padded", "concatenated"])
def test_ctc_gradgradcheck(targets_form):
    torch.manual_seed(0)
    log_probs = torch.randn(6, 3, 4, dtype=torch.float64).log_softmax(2).detach().requires_grad_()
    targets = torch.tensor([[1, 2, 2], [3, 1, 0], [1, 1, 1]])
    target_lengths = torch.tensor([3, 2, 1])
    if targets_form == "concatenated":
        targets = torch.cat([row[:n] for row, n in zip(targets, target_lengths)])
    input_lengths = torch.tensor([6, 5, 3])
    assert gradgradcheck(lambda lp: F.ctc_loss(lp, targets, input_lengths, target_lengths, reduction="none"),
                         (log_probs,))


def test_ctc_without_alignment_keeps_inf_and_zero_gradient_in_double_backward():
    log_probs = torch.randn(2, 1, 3, dtype=torch.float64).log_softmax(2).requires_grad_()
    targets = torch.tensor([[1, 1, 2]])  # needs 4 frames
    loss = F.ctc_loss(log_probs, targets, [2], [3], reduction="none")
    assert loss.item() == float("inf")
    (grad,) = torch.autograd.grad(loss.sum(), log_probs, create_graph=True)
    assert grad.abs().max() == 0


def ntm_inputs(B=2, H=2, N=5, M=3):
    return (f64(B, N, M), f64(B, H, M), f64(B, H, positive=True),
            torch.rand(B, H, dtype=torch.float64).requires_grad_(),
            torch.randn(B, H, 3, dtype=torch.float64).softmax(2).detach().requires_grad_(),
            (1 + torch.rand(B, H, dtype=torch.float64)).requires_grad_(),
            torch.randn(B, H, N, dtype=torch.float64).softmax(2).detach().requires_grad_())


def test_ntm_gradgradcheck():
    torch.manual_seed(0)
    assert gradgradcheck(F.ntm_address, ntm_inputs())
    assert gradgradcheck(F.ntm_write, (f64(2, 5, 3), torch.rand(2, 5, dtype=torch.float64).requires_grad_(),
                                       torch.rand(2, 3, dtype=torch.float64).requires_grad_(), f64(2, 3)))
    R, W, N, M, S = 1, 1, 4, 3, 3
    params = f64(2, (R + W) * (M + 3 + S) + W * 2 * M)
    prev = torch.randn(2, R + W, N, dtype=torch.float64).softmax(2).detach().requires_grad_()
    assert gradgradcheck(lambda m, p, w: F.ntm_step(m, p, w, R, W), (f64(2, N, M), params, prev))


# ---- torch.func through the other families ---------------------------------------------------------------------


def assert_func_grad_matches_autograd(function, *inputs):
    expected = torch.autograd.grad(function(*inputs).sum(), inputs)
    ours = torch.func.grad(lambda *args: function(*args).sum(), argnums=tuple(range(len(inputs))))(*inputs)
    for g, e in zip(ours, expected):
        torch.testing.assert_close(g, e)


def test_torch_func_grad_through_every_family():
    torch.manual_seed(0)
    q, k, v, value = f64(2, 3, 4), f64(2, 5, 4), f64(4), f64(2, 5, 3)
    assert_func_grad_matches_autograd(lambda q, k, v, value: F.additive_attention(q, k, v, value)[0], q, k, v, value)
    assert_func_grad_matches_autograd(lambda q, k, value: F.dot_attention(q, k, value)[0], q, k, value)
    emissions, tags = f64(2, 4, 3), torch.tensor([[0, 2, 2, 1], [1, 1, 0, 0]])
    start, end, transitions = crf_scores(forbid=False)
    assert_func_grad_matches_autograd(lambda e, t: F.crf_log_likelihood(e, tags, t, start, end, torch.tensor([4, 2])),
                                      emissions, transitions)
    log_probs = torch.randn(6, 2, 4, dtype=torch.float64).log_softmax(2).requires_grad_()
    assert_func_grad_matches_autograd(
        lambda lp: F.ctc_loss(lp, torch.tensor([[1, 2], [3, 0]]), [6, 4], [2, 1], reduction="none"), log_probs)
    assert_func_grad_matches_autograd(F.ntm_address, *ntm_inputs())
    indices, lengths = torch.tensor([[0, 2, 1], [3, 3, 0]]), torch.tensor([3, 2])
    assert_func_grad_matches_autograd(lambda t, w: F.position_encoded_bag(indices, w, lengths, table=t), f64(4, 3),
                                      f64(3, 3))
    mask = torch.tensor([[True, False, True], [False, False, False]])
    assert_func_grad_matches_autograd(lambda u, m, c, h: F.memory_hops(u, m, c, mask, 2, h)[0], f64(2, 3), f64(2, 3, 3),
                                      f64(2, 3, 3), f64(3, 3))


def test_torch_func_keeps_the_ops_meaning_of_impossible():
    log_probs = torch.randn(2, 1, 3, dtype=torch.float64).log_softmax(2)
    loss = lambda lp: F.ctc_loss(lp, torch.tensor([[1, 1, 2]]), [2], [3], reduction="sum")
    assert loss(log_probs).item() == float("inf")
    grad, value = torch.func.grad_and_value(loss)(log_probs)
    assert value.item() == float("inf") and grad.abs().max() == 0
    start, end, transitions = crf_scores()
    emissions = f64(1, 2, 3)
    llh = lambda e: F.crf_log_likelihood(e, torch.tensor([[0, 1]]), transitions, start, end).sum()
    grad, value = torch.func.grad_and_value(llh)(emissions)
    assert value.item() == float("-inf") and grad.abs().max() == 0

