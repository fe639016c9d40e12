"""ONNX export (pyseq.onnx): models exported by torch's dynamo-based exporter with pyseq's translations, run in ONNX
Runtime on inputs of other sizes than the export's (dynamic shapes), against the eager pyseq model."""

import warnings

import pytest
import torch

onnxruntime = pytest.importorskip("onnxruntime", reason="needs onnx, onnxscript and onnxruntime (requirements-dev)")
pytest.importorskip("onnxscript")

import pyseq  # noqa: E402
import pyseq.onnx  # noqa: E402

Dim = torch.export.Dim


def run_in_ort(program, *inputs):
    session = onnxruntime.InferenceSession(program.model_proto.SerializeToString())
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {name: x.numpy() for name, x in zip(names, inputs)})


def export(model, inputs, dynamic_shapes):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pyseq.onnx.export(model, inputs, dynamic_shapes=dynamic_shapes, verbose=False)


class Recurrent(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, h0):
        output, state = self.layer(x, h0)
        return (output, *state) if isinstance(state, tuple) else (output, state)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_layers(kind, bidirectional):
    torch.manual_seed(0)
    cls = {"LSTM": pyseq.nn.LSTM, "GRU": pyseq.nn.GRU}.get(kind, pyseq.nn.RNN)
    extra = {"nonlinearity": kind[4:].lower()} if kind.startswith("RNN") else {}
    layer = cls(3, 5, num_layers=2, bidirectional=bidirectional, batch_first=True, **extra).eval()
    D = 2 if bidirectional else 1

    def inputs(B, T):
        h0 = torch.randn(2 * D, B, 5)
        return torch.randn(B, T, 3), ((h0, torch.randn(2 * D, B, 5)) if kind == "LSTM" else h0)

    x, h0 = inputs(2, 4)
    B, T = Dim("B"), Dim("T")
    state_shapes = ({1: B}, {1: B}) if kind == "LSTM" else {1: B}
    program = export(Recurrent(layer), (x, h0), ({0: B, 1: T}, state_shapes))
    x, h0 = inputs(3, 7)
    got = run_in_ort(program, x, *(h0 if kind == "LSTM" else (h0,)))
    with torch.no_grad():
        expected = Recurrent(layer)(x, h0)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        torch.testing.assert_close(torch.from_numpy(a), b, rtol=1e-5, atol=1e-5)


class Decoder(torch.nn.Module):
    def __init__(self, constraints=None):
        super().__init__()
        self.crf = pyseq.nn.CRF(5, batch_first=True, constraints=constraints)

    def forward(self, emissions, mask):
        return self.crf.viterbi(emissions, mask)


def test_crf_viterbi_with_lengths_constraints_and_empty_sequences():
    torch.manual_seed(0)
    decoder = Decoder(pyseq.crf.allowed_transitions(["O", "B-X", "I-X", "B-Y", "I-Y"], "BIO")).eval()
    B, T = Dim("B"), Dim("T")
    mask = torch.arange(6) < torch.tensor([[6], [3], [0]])
    program = export(decoder, (torch.randn(3, 6, 5), mask), ({0: B, 1: T}, {0: B, 1: T}))
    emissions = torch.randn(5, 11, 5)
    mask = torch.arange(11) < torch.tensor([[11], [1], [7], [0], [4]])
    tags, scores = run_in_ort(program, emissions, mask)
    expected_tags, expected_scores = decoder(emissions, mask)
    assert torch.equal(torch.from_numpy(tags), expected_tags)
    torch.testing.assert_close(torch.from_numpy(scores), expected_scores)


def test_crf_viterbi_without_an_allowed_path():
    decoder = Decoder().eval()
    with torch.no_grad():
        decoder.crf.start_transitions.fill_(float("-inf"))  # no path may start
    mask = torch.ones(2, 4, dtype=torch.bool)
    program = export(decoder, (torch.randn(2, 4, 5), mask), None)
    emissions = torch.randn(2, 4, 5)
    tags, scores = run_in_ort(program, emissions, mask)
    expected_tags, expected_scores = decoder(emissions, mask)
    assert (expected_tags == -1).all() and torch.equal(torch.from_numpy(tags), expected_tags)
    assert torch.equal(torch.from_numpy(scores), expected_scores)


class Greedy(torch.nn.Module):
    def forward(self, log_probs, lengths):
        return pyseq.ctc.greedy_decode(log_probs, lengths, blank=0, padded=True)


def test_ctc_greedy_decoding():
    torch.manual_seed(0)
    T, N = Dim("T"), Dim("N")
    program = export(Greedy(), (torch.randn(8, 2, 3).log_softmax(2), torch.tensor([8, 3])), ({0: T, 1: N}, {0: N}))
    # few classes and long inputs: repeats, blanks between repeats, sequences of different lengths (one empty)
    log_probs = torch.randn(30, 4, 3).log_softmax(2)
    lengths = torch.tensor([30, 17, 0, 5])
    tokens, counts = run_in_ort(program, log_probs, lengths)
    expected_tokens, expected_counts = Greedy()(log_probs, lengths)
    assert torch.equal(torch.from_numpy(tokens), expected_tokens)
    assert torch.equal(torch.from_numpy(counts), expected_counts)
    assert expected_tokens[0, : expected_counts[0]].tolist() == pyseq.ctc.greedy_decode(log_probs[:, :1], [30])[0]


class Attend(torch.nn.Module):
    def __init__(self, attention):
        super().__init__()
        self.attention = attention

    def forward(self, query, keys, mask):
        return self.attention(query, keys, mask=mask, return_weights=True)


@pytest.mark.parametrize("make", [lambda: pyseq.nn.AdditiveAttention(6, 8, 7), lambda: pyseq.nn.DotAttention(6, 8,
                                                                                                              "general"),
                                  lambda: pyseq.nn.DotAttention(8, 8, "scaled")])
def test_attention(make):
    torch.manual_seed(0)
    attention = make().eval()
    query_size = 8 if isinstance(attention, pyseq.nn.DotAttention) and attention.score == "scaled" else 6
    B, Tq, Tk = Dim("B"), Dim("Tq"), Dim("Tk")
    mask = torch.arange(5) < torch.tensor([[5], [2]])
    program = export(Attend(attention), (torch.randn(2, 3, query_size), torch.randn(2, 5, 8), mask),
                     ({0: B, 1: Tq}, {0: B, 1: Tk}, {0: B, 1: Tk}))
    query, keys = torch.randn(3, 4, query_size), torch.randn(3, 9, 8)
    mask = torch.arange(9) < torch.tensor([[9], [4], [0]])  # the last query's keys all masked: zero weights
    got = run_in_ort(program, query, keys, mask)
    with torch.no_grad():
        expected = Attend(attention)(query, keys, mask)
    for a, b in zip(got, expected):
        torch.testing.assert_close(torch.from_numpy(a), b, rtol=1e-5, atol=1e-5)
    assert (expected[1][2] == 0).all()


class LogPartition(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.crf = pyseq.nn.CRF(3)

    def forward(self, emissions):
        return pyseq.functional.crf_log_partition(emissions, self.crf.transitions, self.crf.start_transitions,
                                                  self.crf.end_transitions)


class Write(torch.nn.Module):
    def forward(self, memory, weights, erase, add):
        return pyseq.functional.ntm_write(memory, weights, erase, add)


def test_untranslated_ops_name_themselves():
    with pytest.raises(pyseq.onnx.UnsupportedOpError, match=r"pyseq::crf_log_partition \(a training score\) has no"):
        export(LogPartition(), (torch.randn(2, 5, 3),), None)
    with pytest.raises(pyseq.onnx.UnsupportedOpError, match=r"pyseq::ntm_write"):
        export(Write(), (torch.randn(2, 4, 3), torch.rand(2, 4), torch.rand(2, 3), torch.randn(2, 3)), None)
    with pytest.raises(pyseq.onnx.UnsupportedOpError, match=r"LSTM projection \(proj_size\)"):
        export(Recurrent(pyseq.nn.LSTM(3, 5, proj_size=2)), (torch.randn(4, 2, 3), (torch.zeros(1, 2, 2),
                                                                                      torch.zeros(1, 2, 5))), None)
