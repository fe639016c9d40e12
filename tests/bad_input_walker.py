"""Walks one public entry point of pyseq through a table of input classes, one argument at a time.

Run by test_bad_input.py in a subprocess per entry point (`python bad_input_walker.py <entry>`), so that a crash is
reported as a failure of that entry point and its case, not a dead test suite. Each case prints a line before it
runs ("case <arg> <class>"), then "ok", "raised <Error>" or "FAIL <why>".

Expectations, per input class:
- strided (a slice of a padded tensor) and expanded (stride 0 over the first dimension): the answer of the same
  values made contiguous, which is the reference here;
- meta (one argument on the meta device among CPU ones): an exception, never a result;
- nan: an exception, or a floating-point result that holds a NaN;
- every other class (dtypes, ranks, empty, inf, out-of-range ids and lengths): an exception, or a result.
Every exception must be a Python exception (never a crash) with a message.
"""

import sys

import torch

import pyseq
from pyseq import functional as F


def _rnn_weights(mode, I, H):
    return [p.detach() for p in getattr(torch.nn, mode)(I, H)._flat_weights]


def _crf_params(K):
    g = torch.Generator().manual_seed(0)
    return {"transitions": torch.randn(K, K, generator=g), "start": torch.randn(K, generator=g),
            "end": torch.randn(K, generator=g)}


torch.manual_seed(0)
_LP = torch.randn(8, 2, 5).log_softmax(2)
_CRF = pyseq.nn.CRF(4, batch_first=True)
_ADD = pyseq.nn.AdditiveAttention(3, 4, 5)
_LOC = pyseq.nn.LocationAwareAttention(3, 4, 5)
_DOT = pyseq.nn.DotAttention(3, 4, score="general")
_LSTM, _GRU, _RNN = pyseq.nn.LSTM(3, 4), pyseq.nn.GRU(3, 4), pyseq.nn.RNN(3, 4, nonlinearity="relu")
_NTM = pyseq.nn.NTM(3, 2, 6, memory_size=(5, 3))
_MEMNET = pyseq.nn.MemoryNetwork(7, 4, max_sentences=3, hops=2)
_CLOCKWORK = pyseq.nn.ClockworkRNN(3, 4, periods=(1, 2))
_SCRN = pyseq.nn.SCRN(3, 4, 2)
_W = {mode: _rnn_weights(mode, 3, 4) for mode in ("LSTM", "GRU", "RNN")}

# name -> (call(args) -> result, valid args). Tensors in args are walked; other values are passed as they are.
ENTRIES = {
    "functional.lstm": (lambda a: F.lstm(a["input"], (a["h0"], a["c0"]), _W["LSTM"]),
                        {"input": torch.randn(5, 2, 3), "h0": torch.zeros(1, 2, 4), "c0": torch.zeros(1, 2, 4)}),
    "functional.gru": (lambda a: F.gru(a["input"], a["h0"], _W["GRU"]),
                       {"input": torch.randn(5, 2, 3), "h0": torch.zeros(1, 2, 4)}),
    "functional.rnn": (lambda a: F.rnn(a["input"], a["h0"], _W["RNN"]),
                       {"input": torch.randn(5, 2, 3), "h0": torch.zeros(1, 2, 4)}),
    "nn.LSTM": (lambda a: _LSTM(a["input"]), {"input": torch.randn(5, 2, 3)}),
    "nn.GRU": (lambda a: _GRU(a["input"], a["hx"]), {"input": torch.randn(5, 2, 3), "hx": torch.randn(1, 2, 4)}),
    "nn.RNN": (lambda a: _RNN(a["input"]), {"input": torch.randn(5, 2, 3)}),
    "functional.ctc_loss": (
        lambda a: F.ctc_loss(a["log_probs"], a["targets"], a["input_lengths"], a["target_lengths"], reduction="none"),
        {"log_probs": _LP, "targets": torch.randint(1, 5, (2, 3)), "input_lengths": torch.tensor([8, 6]),
         "target_lengths": torch.tensor([3, 2])}),
    "nn.CTCLoss": (lambda a: pyseq.nn.CTCLoss()(a["log_probs"], a["targets"], [8, 6], [3, 2]),
                   {"log_probs": _LP, "targets": torch.randint(1, 5, (5,))}),
    "ctc.greedy_decode": (lambda a: pyseq.ctc.greedy_decode(a["log_probs"], a["input_lengths"]),
                          {"log_probs": _LP, "input_lengths": torch.tensor([8, 3])}),
    "ctc.beam_search": (lambda a: pyseq.ctc.beam_search(a["log_probs"], a["input_lengths"], beam_width=3, nbest=2),
                        {"log_probs": _LP, "input_lengths": torch.tensor([8, 3])}),
    "ctc.forced_align": (lambda a: pyseq.ctc.forced_align(a["log_probs"], a["targets"], a["input_lengths"],
                                                          a["target_lengths"]),
                         {"log_probs": _LP, "targets": torch.randint(1, 5, (2, 3)), "input_lengths": torch.tensor([8, 6]),
                          "target_lengths": torch.tensor([3, 2])}),
    "ctc.merge_tokens": (lambda a: pyseq.ctc.merge_tokens(a["tokens"], a["scores"]),
                         {"tokens": torch.tensor([0, 1, 1, 0, 2]), "scores": torch.randn(5)}),
    **{
        f"functional.crf_{name}": (
            (lambda fn, with_tags: lambda a: fn(a["emissions"], *([a["tags"]] if with_tags else []), a["transitions"],
                                                a["start"], a["end"], a["lengths"]))(fn, with_tags),
            {"emissions": torch.randn(2, 5, 4), **({"tags": torch.randint(4, (2, 5))} if with_tags else {}),
             **_crf_params(4), "lengths": torch.tensor([5, 3])})
        for name, fn, with_tags in (
            ("log_partition", F.crf_log_partition, False), ("score", F.crf_score, True),
            ("log_likelihood", F.crf_log_likelihood, True), ("marginals", F.crf_marginals, False),
            ("viterbi", F.crf_viterbi, False), ("hinge_loss", F.crf_hinge_loss, True))
    },
    "functional.hmm_viterbi": (lambda a: F.hmm_viterbi(a["log_posteriors"], a["log_transitions"], a["log_initial"],
                                                       a["log_priors"], lengths=a["lengths"]),
                               {"log_posteriors": torch.randn(2, 5, 4), "log_transitions": torch.randn(4, 4),
                                "log_initial": torch.randn(4), "log_priors": torch.randn(4),
                                "lengths": torch.tensor([5, 2])}),
    "nn.CRF.forward": (lambda a: _CRF(a["emissions"], a["tags"], a["mask"], reduction="none"),
                       {"emissions": torch.randn(2, 5, 4), "tags": torch.randint(4, (2, 5)),
                        "mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)}),
    "nn.CRF.decode": (lambda a: _CRF.decode(a["emissions"], a["mask"], nbest=2),
                      {"emissions": torch.randn(2, 5, 4), "mask": torch.ones(2, 5, dtype=torch.uint8)}),
    "nn.CRF.marginals": (lambda a: _CRF.marginals(a["emissions"], a["mask"]),
                         {"emissions": torch.randn(2, 5, 4), "mask": torch.ones(2, 5, dtype=torch.bool)}),
    "nn.CRF.hinge_loss": (lambda a: _CRF.hinge_loss(a["emissions"], a["tags"], reduction="none"),
                          {"emissions": torch.randn(2, 5, 4), "tags": torch.randint(4, (2, 5))}),
    "functional.additive_attention": (
        lambda a: F.additive_attention(a["query_proj"], a["key_proj"], a["v"], a["value"], a["mask"], True),
        {"query_proj": torch.randn(2, 3, 5), "key_proj": torch.randn(2, 4, 5), "v": torch.randn(5),
         "value": torch.randn(2, 4, 2), "mask": torch.ones(2, 4, dtype=torch.bool)}),
    "functional.dot_attention": (
        lambda a: F.dot_attention(a["query"], a["key"], a["value"], a["mask"], return_weights=True),
        {"query": torch.randn(2, 3, 5), "key": torch.randn(2, 4, 5), "value": torch.randn(2, 4, 2),
         "mask": torch.ones(2, 3, 4, dtype=torch.bool)}),
    "functional.project_keys": (lambda a: F.project_keys(a["key_proj"]), {"key_proj": torch.randn(2, 4, 5)}),
    "nn.AdditiveAttention": (lambda a: _ADD(a["query"], a["key"], mask=a["mask"], return_weights=True),
                             {"query": torch.randn(2, 3), "key": torch.randn(2, 6, 4),
                              "mask": torch.ones(2, 6, dtype=torch.bool)}),
    "nn.DotAttention": (lambda a: _DOT(a["query"], a["key"], return_weights=True),
                        {"query": torch.randn(2, 2, 3), "key": torch.randn(2, 6, 4)}),
    "nn.LocationAwareAttention": (lambda a: _LOC(a["query"], a["key"], prev_weights=a["prev_weights"]),
                                  {"query": torch.randn(2, 3), "key": torch.randn(2, 6, 4),
                                   "prev_weights": torch.softmax(torch.randn(2, 6), -1)}),
    "functional.ntm_address": (
        lambda a: F.ntm_address(a["memory"], a["key"], a["beta"], a["gate"], a["shift"], a["gamma"], a["prev"]),
        {"memory": torch.randn(2, 5, 3), "key": torch.randn(2, 2, 3), "beta": torch.rand(2, 2) + 0.5,
         "gate": torch.rand(2, 2), "shift": torch.softmax(torch.randn(2, 2, 3), -1), "gamma": torch.rand(2, 2) + 1,
         "prev": torch.softmax(torch.randn(2, 2, 5), -1)}),
    "functional.ntm_write": (lambda a: F.ntm_write(a["memory"], a["weights"], a["erase"], a["add"]),
                             {"memory": torch.randn(2, 5, 3), "weights": torch.softmax(torch.randn(2, 5), -1),
                              "erase": torch.rand(2, 3), "add": torch.randn(2, 3)}),
    "functional.ntm_read": (lambda a: F.ntm_read(a["memory"], a["weights"]),
                            {"memory": torch.randn(2, 5, 3), "weights": torch.softmax(torch.randn(2, 2, 5), -1)}),
    # one read and one write head over a [5, 3] memory with 3 shifts: (2 heads) (3 + 3 + 3) + 2 * 3 = 24 parameters
    "functional.ntm_step": (lambda a: F.ntm_step(a["memory"], a["params"], a["prev_weights"], 1, 1),
                            {"memory": torch.randn(2, 5, 3), "params": torch.randn(2, 24),
                             "prev_weights": torch.softmax(torch.randn(2, 2, 5), -1)}),
    "nn.NTM": (lambda a: _NTM(a["input"]), {"input": torch.randn(4, 2, 3)}),
    "functional.position_encoded_bag": (
        lambda a: F.position_encoded_bag(a["indices"], a["weights"], a["lengths"], table=a["table"]),
        {"indices": torch.tensor([[0, 2, 1], [3, 0, 0]]), "weights": torch.randn(3, 4),
         "lengths": torch.tensor([3, 1]), "table": torch.randn(5, 4)}),
    "functional.memory_hops": (
        lambda a: F.memory_hops(a["u"], a["memory_in"], a["memory_out"], a["mask"], 2, a["H"]),
        {"u": torch.randn(2, 4), "memory_in": torch.randn(2, 3, 4), "memory_out": torch.randn(2, 3, 4),
         "mask": torch.ones(2, 3, dtype=torch.bool), "H": torch.randn(4, 4)}),
    "functional.clockwork_rnn": (
        lambda a: F.clockwork_rnn(a["input"], a["weight_ih"], a["weight_hh"], a["bias_ih"], a["bias_hh"], (1, 2),
                                  a["hx"], lengths=a["lengths"]),
        {"input": torch.randn(5, 2, 3), "weight_ih": torch.randn(4, 3), "weight_hh": torch.randn(4, 4),
         "bias_ih": torch.randn(4), "bias_hh": torch.randn(4), "hx": torch.zeros(2, 4),
         "lengths": torch.tensor([5, 3])}),
    "nn.ClockworkRNN": (lambda a: _CLOCKWORK(a["input"], a["hx"]),
                        {"input": torch.randn(5, 2, 3), "hx": torch.randn(1, 2, 4)}),
    "functional.scrn": (
        lambda a: F.scrn(a["input"], a["weight_ih"], a["weight_hh"], a["weight_ic"], a["weight_ch"], a["bias"], 0.9,
                         (a["h0"], a["s0"]), lengths=a["lengths"]),
        {"input": torch.randn(5, 2, 3), "weight_ih": torch.randn(4, 3), "weight_hh": torch.randn(4, 4),
         "weight_ic": torch.randn(2, 3), "weight_ch": torch.randn(4, 2), "bias": torch.randn(4),
         "h0": torch.zeros(2, 4), "s0": torch.zeros(2, 2), "lengths": torch.tensor([5, 3])}),
    "nn.SCRN": (lambda a: _SCRN(a["input"], (a["h0"], a["s0"])),
                {"input": torch.randn(5, 2, 3), "h0": torch.randn(1, 2, 4), "s0": torch.randn(1, 2, 2)}),
    "nn.MemoryNetwork": (lambda a: _MEMNET(a["story"], a["question"]),
                         {"story": torch.tensor([[[1, 2, 0], [3, 4, 5], [0, 0, 0]], [[6, 1, 0], [2, 0, 0], [1, 1, 1]]]),
                          "question": torch.tensor([[1, 3], [2, 0]])}),
}


# Entry points that read only some of an argument's values (the scores along the given paths), so that a NaN placed
# elsewhere is rightly not seen, as in the torch composition that gathers the same scores.
NAN_MAY_BE_UNREAD = {"functional.crf_score"}


def _padded_slice(x):
    padded = torch.zeros(*(s + 2 for s in x.shape), dtype=x.dtype)
    index = tuple(slice(0, s) for s in x.shape)
    padded[index] = x
    return padded[index]


def _with_value(x, value):
    y = x.clone()
    if y.numel():
        y.view(-1)[0] = value
    return y


def input_classes(x):
    """(class name, transformed tensor) pairs for one argument."""
    out = [("meta", x.to("meta")), ("rank+1", x.unsqueeze(0)), ("rank-1", x.reshape(-1)),
           ("empty", x.narrow(0, 0, 0) if x.dim() else x.reshape(0))]
    if x.dim() >= 1 and x.numel():
        out += [("strided", _padded_slice(x)), ("expanded", x[:1].expand(x.shape))]
    if x.is_floating_point():
        out += [(f"dtype {d}", x.to(d)) for d in (torch.float16, torch.bfloat16, torch.int64, torch.complex64)]
        out += [("nan", _with_value(x, float("nan"))), ("inf", _with_value(x, float("inf"))),
                ("-inf", _with_value(x, float("-inf")))]
    else:
        out += [(f"dtype {d}", x.to(d)) for d in (torch.float32, torch.bool, torch.int8)]
        if x.dtype != torch.bool:
            high = 1000 if x.dtype != torch.uint8 else 255
            out += [("out of range +", _with_value(x, high)), ("out of range -", _with_value(x, -3 * x.is_signed()))]
    return out


def _leaves(result):
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, (list, tuple)):
        return [t for r in result for t in _leaves(r)]
    if hasattr(result, "__dict__"):  # dataclasses such as TokenSpan
        return [t for r in vars(result).values() for t in _leaves(r)]
    return []


def _same(a, b):
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.nan_to_num(), b.nan_to_num())
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def walk(entry):
    call, valid = ENTRIES[entry]
    call(dict(valid))  # the valid arguments work
    failures = 0
    for name, x in valid.items():
        if not isinstance(x, torch.Tensor):
            continue
        for cls, variant in input_classes(x):
            print(f"case {name} {cls}", flush=True)
            args = {**valid, name: variant}
            try:
                result = call(args)
            except Exception as e:  # noqa: BLE001 - any Python exception is a clean answer
                if not str(e):
                    print(f"FAIL {type(e).__name__} without a message", flush=True)
                    failures += 1
                else:
                    print(f"raised {type(e).__name__}", flush=True)
                continue
            why = None
            tensor_args = [v for v in valid.values() if isinstance(v, torch.Tensor)]
            if cls == "meta" and (len(tensor_args) > 1 or any(t.device.type != "meta" for t in _leaves(result))):
                why = "returned a result with an argument on the meta device"
            elif cls in ("strided", "expanded"):
                expected = call({**valid, name: variant.contiguous()})
                if not _same(result, expected):
                    why = "differs from the same values made contiguous"
            elif cls == "nan" and entry not in NAN_MAY_BE_UNREAD:
                floats = [t for t in _leaves(result) if t.is_floating_point() and t.device.type != "meta"]
                if floats and not any(t.isnan().any() for t in floats):
                    why = "a NaN input gave a result without NaN"
            if why:
                print(f"FAIL {why}", flush=True)
                failures += 1
            else:
                print("ok", flush=True)
    return failures


if __name__ == "__main__":
    sys.exit(1 if walk(sys.argv[1]) else 0)
