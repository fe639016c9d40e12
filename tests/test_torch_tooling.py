"""pyseq's modules under torch's other tooling (TorchScript tracing and scripting, torch.export's serialization,
introspection), and the errors a user meets at the edges of the inputs."""

import inspect
import io

import pytest
import torch

import pyseq
from pyseq.audio import log_mel

RECURRENT = [(pyseq.nn.LSTM, torch.nn.LSTM), (pyseq.nn.GRU, torch.nn.GRU), (pyseq.nn.RNN, torch.nn.RNN)]


@pytest.mark.parametrize("ours,theirs", RECURRENT)
def test_jit_trace_of_recurrent_layers(ours, theirs):
    """The trace passes its own check (which reruns it without grad) and serves inference and training."""
    torch.manual_seed(0)
    m = ours(3, 4, num_layers=2)
    reference = theirs(3, 4, num_layers=2)
    reference.load_state_dict(m.state_dict())
    traced = torch.jit.trace(m, (torch.randn(5, 2, 3),))
    x = torch.randn(5, 2, 3, requires_grad=True)
    torch.testing.assert_close(traced(x)[0], reference(x)[0])
    (grad,) = torch.autograd.grad(traced(x)[0].sum(), x)
    (expected,) = torch.autograd.grad(reference(x)[0].sum(), x)
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("make", [lambda: pyseq.nn.DotAttention(8, 8), lambda: pyseq.nn.AdditiveAttention(8, 8, 6)])
def test_jit_trace_of_attention_with_default_return_weights(make):
    torch.manual_seed(0)
    attention = make()
    q, k = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    traced = torch.jit.trace(attention, (q, k, k))
    context, weights = traced(q, k, k)
    expected_context, _ = attention(q, k, k)
    torch.testing.assert_close(context, expected_context)
    assert weights.shape == (2, 3, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3))


class Tagger(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = pyseq.nn.GRU(3, 4)

    def forward(self, x):
        return self.rnn(x)[0]


@pytest.mark.parametrize("make", [lambda: pyseq.nn.LSTM(3, 4), lambda: pyseq.nn.CRF(3), lambda: pyseq.nn.CTCLoss(),
                                  lambda: pyseq.nn.DotAttention(4, 4), lambda: pyseq.nn.NTM(3, 2, 8, (6, 4)),
                                  Tagger])
def test_jit_script_says_it_is_unsupported(make):
    module = make()
    with pytest.raises(RuntimeError, match=r"torch.jit.script cannot compile pyseq.nn.\w+: .*torch.jit.trace"):
        torch.jit.script(module)


def test_export_save_and_load_of_the_ntm():
    torch.manual_seed(0)
    ntm = pyseq.nn.NTM(3, 2, 8, memory_size=(6, 4))
    program = torch.export.export(ntm, (torch.randn(4, 2, 3),))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    x = torch.randn(4, 2, 3)
    outputs, state = loaded(x)
    expected, expected_state = ntm(x)
    torch.testing.assert_close(outputs, expected)
    assert isinstance(state, pyseq.nn.NTMState)
    torch.testing.assert_close(state.memory, expected_state.memory)


def test_ntm_without_time_steps_says_so():
    ntm = pyseq.nn.NTM(3, 2, 8, memory_size=(6, 4))
    with pytest.raises(ValueError, match=r"no time steps \(T = 0\)"):
        ntm(torch.randn(0, 2, 3))


def test_log_mel_of_a_waveform_shorter_than_half_a_window_says_so():
    with pytest.raises(ValueError, match="waveform has 100 samples, fewer than the 201"):
        log_mel(torch.randn(100))
    features, frames = log_mel(torch.randn(201))  # the shortest that works
    assert features.shape == (2, 80) and frames.item() == 2


@pytest.mark.parametrize("ours,theirs", RECURRENT)
def test_recurrent_layers_show_torch_signatures(ours, theirs):
    parameters = list(inspect.signature(ours).parameters)
    assert parameters[:2] == ["input_size", "hidden_size"]
    for name in ("num_layers", "bias", "batch_first", "dropout", "bidirectional", "device", "dtype"):
        assert name in parameters
    assert ("proj_size" in parameters) == (ours is pyseq.nn.LSTM)
    assert ("nonlinearity" in parameters) == (ours is pyseq.nn.RNN)
    # positional arguments in torch's order
    a, b = ours(3, 4, 2, *((["relu"] if ours is pyseq.nn.RNN else [])), False, True), \
        theirs(3, 4, 2, *((["relu"] if ours is pyseq.nn.RNN else [])), False, True)
    assert (a.num_layers, a.bias, a.batch_first) == (b.num_layers, b.bias, b.batch_first)
    with pytest.raises(TypeError, match="unexpected keyword"):
        ours(3, 4, hiden_size=3)
