"""Export to ONNX: translations of pyseq's ops into standard ONNX operators for torch's exporter
(``torch.onnx.export(..., dynamo=True)``), and :func:`export`, which passes them.

Translated (inference: what a served model runs):

- ``pyseq::rnn_layer`` (``pyseq.nn.LSTM``, ``GRU``, ``RNN``; padded input, any number of layers, bidirectional,
  initial states, ``batch_first``): ONNX's LSTM, GRU (``linear_before_reset=1``, torch's formula) and RNN (Tanh or
  Relu) operators. Not translated: PackedSequence input and LSTM projections (``proj_size``).
- ``pyseq::crf_viterbi`` with one path (``CRF.viterbi``, ``pyseq.functional.crf_viterbi`` without ``nbest``): the
  max-product recursion and the backtracking as ONNX loops.
- ``pyseq::ctc_greedy_decode`` (``pyseq.ctc.greedy_decode(..., padded=True)``): arg-max, repeats and blanks dropped,
  the kept tokens moved to the front, in tensor operators.
- ``pyseq::additive_attention`` and ``pyseq::dot_attention`` (``AdditiveAttention``, ``DotAttention``,
  ``LocationAwareAttention``, their functional forms): scores, masked softmax (zero weights for a query with no key
  to attend) and the weighted sum.

The other ops (the losses, the CRF's training ops and marginals, k-best Viterbi, forced alignment, the NTM's, the memory network's, the
Clockwork RNN's, the SCRN's) have no translation: exporting a model that runs one raises :class:`UnsupportedOpError`, naming the op.

Requires the packages ``onnx`` and ``onnxscript`` (and ``onnxruntime`` to run the exported model).
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar, Union

import numpy as np
import onnxscript
import torch
from onnxscript import BFLOAT16, DOUBLE, FLOAT, FLOAT16, INT64
from onnxscript import opset18 as op

from ._ops import rnn as _rnn

__all__ = ["UnsupportedOpError", "translation_table", "export"]

# The ONNX operator set the translations use.
OPSET = 18


class UnsupportedOpError(RuntimeError):
    """A model runs a pyseq op (or a form of one) that has no ONNX translation."""


def _static_size(value, axis: int) -> int | None:
    dim = value.shape[axis] if value.shape is not None else None
    return dim if isinstance(dim, int) else None


def _present(value) -> bool:
    """Whether an optional tensor argument (passed as an empty tensor when absent) is given."""
    return value is not None and _static_size(value, 0) != 0


def _ints(*values: int):
    return op.Constant(value_ints=list(values))


# The floating-point tensors of the typed translations (the functions with loops are ONNX script functions).
TFloat = TypeVar("TFloat", bound=Union[FLOAT, DOUBLE, FLOAT16, BFLOAT16])


# ---- recurrent layers ----------------------------------------------------------------------------------------------

# The gate blocks of torch's weights in ONNX's order: LSTM i f g o -> i o f c; GRU r z n -> z r h.
_GATE_ORDER = {_rnn.LSTM: (0, 3, 1, 2), _rnn.GRU: (1, 0, 2), _rnn.RNN_TANH: (0,), _rnn.RNN_RELU: (0,)}


def _onnx_gates(weight, mode: int):
    """A weight [G*H, ...] or bias [G*H] with its gate blocks in ONNX's order."""
    order = _GATE_ORDER[mode]
    if len(order) == 1:
        return weight
    blocks = op.Reshape(weight, _ints(len(order), -1))  # each gate's block is contiguous
    return op.Reshape(op.Gather(blocks, _ints(*order), axis=0), op.Shape(weight))


def _rnn_layer(mode, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, save_workspace):
    if len(x.shape) != 3:
        raise UnsupportedOpError(
            "pyseq::rnn_layer on a PackedSequence has no ONNX translation: export the layer on padded input "
            "(the ONNX operators take the sequence lengths instead)"
        )
    if _present(w_hr):
        raise UnsupportedOpError("pyseq::rnn_layer with an LSTM projection (proj_size) has no ONNX translation")
    hidden = _static_size(w_hh, 1)
    first = _ints(0)
    inputs = [x, op.Unsqueeze(_onnx_gates(w_ih, mode), first), op.Unsqueeze(_onnx_gates(w_hh, mode), first)]
    inputs.append(op.Unsqueeze(op.Concat(_onnx_gates(b_ih, mode), _onnx_gates(b_hh, mode), axis=0), first)
                  if _present(b_ih) else None)
    inputs += [None, op.Unsqueeze(h0, first)]  # no sequence_lens: every sequence runs every step
    attributes = {"hidden_size": hidden, "direction": "reverse" if reverse else "forward"}
    if mode == _rnn.LSTM:
        y, h_n, c_n = op.LSTM(*inputs, op.Unsqueeze(c0, first), **attributes)
        c_n = op.Squeeze(c_n, first)
    elif mode == _rnn.GRU:
        y, h_n = op.GRU(*inputs, linear_before_reset=1, **attributes)
    else:
        y, h_n = op.RNN(*inputs, activations=["Tanh" if mode == _rnn.RNN_TANH else "Relu"], **attributes)
    empty = op.Constant(value=onnxscript.ir.tensor(np.zeros(0, dtype=np.float32)))
    empty = op.CastLike(empty, x)
    # Y [T, 1, B, H] -> [T, B, H]; the cell state of an LSTM, an empty tensor for the others (as the op)
    return op.Squeeze(y, _ints(1)), op.Squeeze(h_n, first), c_n if mode == _rnn.LSTM else empty, empty


# ---- CRF Viterbi -------------------------------------------------------------------------------------------------


@onnxscript.script(opset=op)
def _viterbi(emissions: TFloat, lengths: INT64[...], start: TFloat, end: TFloat,
             transitions: TFloat) -> tuple[INT64[...], TFloat]:
    """The best path [B, T] (-1 past each length, and everywhere for a sequence with no allowed path) and its score
    [B] (0 for a sequence of length 0), by the max-product recursion and backtracking."""
    zero = op.Constant(value_ints=[0])
    one = op.Constant(value_ints=[1])
    steps = op.Shape(emissions, start=1, end=2)
    tags = op.Shape(emissions, start=2, end=3)
    identity = op.Unsqueeze(op.Range(op.Constant(value_int=0), op.Squeeze(tags, zero), op.Constant(value_int=1)),
                            zero)  # [1, K]: a step past the length points each tag to itself
    keep_tag = op.Expand(identity, op.Concat(op.Shape(emissions, start=0, end=1), tags, axis=0))  # [B, K]
    score = op.Add(op.Unsqueeze(start, zero), op.Gather(emissions, op.Constant(value_int=0), axis=1))  # [B, K]
    history = op.Unsqueeze(keep_tag, one)  # [B, 1, K]: the pointers into each step (step 0's unused)
    for t in range(op.Squeeze(steps, zero) - 1):
        step = t + 1
        candidates = op.Add(op.Unsqueeze(score, op.Constant(value_ints=[2])), op.Unsqueeze(transitions, zero))
        best_previous = op.ArgMax(candidates, axis=1, keepdims=0)  # [B, K]
        advanced = op.Add(op.ReduceMax(candidates, one, keepdims=0), op.Gather(emissions, step, axis=1))
        active = op.Unsqueeze(op.Less(step, lengths), one)  # [B, 1]
        score = op.Where(active, advanced, score)
        history = op.Concat(history, op.Unsqueeze(op.Where(active, best_previous, keep_tag), one), axis=1)
    final = op.Add(score, op.Unsqueeze(end, zero))
    current = op.ArgMax(final, axis=1, keepdims=1)  # [B, 1]: the last tag (kept through the steps past the length)
    best = op.ReduceMax(final, one, keepdims=0)
    path = current
    for i in range(op.Squeeze(steps, zero) - 1):
        pointers = op.Gather(history, op.Squeeze(steps, zero) - 1 - i, axis=1)  # [B, K]
        current = op.GatherElements(pointers, current, axis=1)
        path = op.Concat(current, path, axis=1)
    positions = op.Unsqueeze(op.Range(op.Constant(value_int=0), op.Squeeze(steps, zero), op.Constant(value_int=1)),
                             zero)
    possible = op.Unsqueeze(op.Greater(best, op.CastLike(op.Constant(value_float=float("-inf")), best)), one)
    path = op.Where(op.And(op.Less(positions, op.Unsqueeze(lengths, one)), possible), path,
                    op.Constant(value_int=-1))
    best = op.Where(op.Equal(lengths, op.Constant(value_int=0)), op.CastLike(op.Constant(value_float=0.0), best),
                    best)
    return path, best


def _crf_viterbi(emissions, lengths, start, end, transitions, nbest):
    if nbest != 1:
        raise UnsupportedOpError(f"pyseq::crf_viterbi with nbest={nbest} (k-best decoding) has no ONNX translation; "
                                 "the best path (nbest=None) has")
    if len(lengths.shape) == 2:  # a [B, T] prefix mask
        lengths = op.ReduceSum(op.Cast(lengths, to=onnxscript.ir.DataType.INT64), _ints(1), keepdims=0)
    else:
        lengths = op.Cast(lengths, to=onnxscript.ir.DataType.INT64)
    path, best = _viterbi(emissions, lengths, start, end, transitions)
    return op.Unsqueeze(path, _ints(1)), op.Unsqueeze(best, _ints(1))  # [B, 1, T], [B, 1]


# ---- CTC greedy decoding -------------------------------------------------------------------------------------------


def _ctc_greedy_decode(log_probs, input_lengths, blank):
    """tokens [N, T] (the kept classes first, then -1) and counts [N], as the op."""
    int64 = onnxscript.ir.DataType.INT64
    best = op.Transpose(op.ArgMax(log_probs, axis=2, keepdims=0), perm=[1, 0])  # [N, T]
    first = op.Slice(best, _ints(0), _ints(1), _ints(1))
    previous = op.Concat(op.Sub(op.Mul(first, _ints(0)), _ints(1)), op.Slice(best, _ints(0), _ints(-1), _ints(1)),
                         axis=1)  # -1 before the first frame
    steps = op.Shape(log_probs, start=0, end=1)
    positions = op.Unsqueeze(op.Range(op.Constant(value_int=0), op.Squeeze(steps, _ints(0)),
                                      op.Constant(value_int=1)), _ints(0))  # [1, T]
    inside = op.Less(positions, op.Unsqueeze(op.Cast(input_lengths, to=int64), _ints(1)))
    keep = op.And(inside, op.And(op.Not(op.Equal(best, op.Constant(value_int=blank))),
                                 op.Not(op.Equal(best, previous))))
    kept = op.Cast(keep, to=int64)
    counts = op.ReduceSum(kept, _ints(1), keepdims=0)
    # each kept token to its rank among the kept ones; the others to a spare column T, cut off after
    target = op.Where(keep, op.Sub(op.CumSum(kept, op.Constant(value_int=1)), _ints(1)), steps)
    out = op.Expand(op.Constant(value_int=-1), op.Concat(op.Shape(best, start=0, end=1), op.Add(steps, _ints(1)),
                                                         axis=0))
    out = op.ScatterElements(out, target, best, axis=1)
    return op.Slice(out, _ints(0), steps, _ints(1)), counts


# ---- attention -------------------------------------------------------------------------------------------------------


def _softmax_context(scores, mask, value):
    """Weights (masked softmax over the keys; zeros for a query with no key to attend) and context."""
    if mask is None:
        weights = op.Softmax(scores, axis=-1)
    else:
        if len(mask.shape) == 2:  # [B, Tk] -> [B, 1, Tk]
            mask = op.Unsqueeze(mask, _ints(1))
        attend = op.Cast(mask, to=onnxscript.ir.DataType.BOOL)
        attend = op.Expand(attend, op.Shape(scores))
        any_key = op.Cast(op.ReduceMax(op.Cast(attend, to=onnxscript.ir.DataType.INT32), _ints(-1), keepdims=1),
                          to=onnxscript.ir.DataType.BOOL)
        lowest = op.CastLike(op.Constant(value_float=float("-inf")), scores)
        zero = op.CastLike(op.Constant(value_float=0.0), scores)
        masked = op.Where(attend, scores, lowest)
        masked = op.Where(any_key, masked, zero)  # a row with no key: uniform, then zeroed
        weights = op.Where(any_key, op.Softmax(masked, axis=-1), zero)
    return op.MatMul(weights, value), weights


def _additive_attention(query_proj, key_proj, v, value, mask=None, key_exp2x=None, key_maxabs=None):
    terms = op.Tanh(op.Add(op.Unsqueeze(query_proj, _ints(2)), op.Unsqueeze(key_proj, _ints(1))))  # [B, Tq, Tk, A]
    return _softmax_context(op.MatMul(terms, v), mask, value)


def _dot_attention(query, key, value, mask=None, scale=1.0):
    scores = op.MatMul(query, op.Transpose(key, perm=[0, 2, 1]))
    scores = op.Mul(scores, op.CastLike(op.Constant(value_float=float(scale)), scores))
    return _softmax_context(scores, mask, value)


# ---- the table -------------------------------------------------------------------------------------------------------

_UNSUPPORTED = {
    "ctc_loss": "a training loss",
    "ctc_forced_align": "forced alignment",
    "crf_log_likelihood": "a training loss",
    "crf_log_partition": "a training score",
    "crf_path_score": "a training score",
    "crf_marginals": "the marginals",
    "ntm_address": "the NTM's addressing",
    "ntm_write": "the NTM's write",
    "ntm_step": "the NTM's heads",
}


def _unsupported(name: str, what: str) -> Callable:
    def refuse(*args, **kwargs):
        raise UnsupportedOpError(f"pyseq::{name} ({what}) has no ONNX translation")
    refuse.__name__ = f"pyseq_{name}_unsupported"
    return refuse


def translation_table() -> dict[Callable, Callable]:
    """The ``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)``: pyseq's ops and their ONNX
    translations (an op without one raises :class:`UnsupportedOpError` naming it)."""
    ops = torch.ops.pyseq
    table: dict[Callable, Callable] = {
        ops.rnn_layer.default: _rnn_layer,
        ops.crf_viterbi.default: _crf_viterbi,
        ops.ctc_greedy_decode.default: _ctc_greedy_decode,
        ops.additive_attention.default: _additive_attention,
        ops.dot_attention.default: _dot_attention,
    }
    for name, what in _UNSUPPORTED.items():
        table[getattr(ops, name).default] = _unsupported(name, what)
    return table


def export(model: torch.nn.Module, args: tuple, f=None, **kwargs: Any):
    """``torch.onnx.export(model, args, f, dynamo=True, custom_translation_table=...)`` with pyseq's translations
    (merged with a ``custom_translation_table`` of the caller's) and opset 18. Returns the ``ONNXProgram``; raises
    :class:`UnsupportedOpError` when the model runs a pyseq op without a translation."""
    table = translation_table()
    table.update(kwargs.pop("custom_translation_table", None) or {})
    kwargs.setdefault("opset_version", OPSET)
    try:
        return torch.onnx.export(model, args, f, dynamo=True, custom_translation_table=table, **kwargs)
    except Exception as error:
        cause: BaseException | None = error
        while cause is not None:
            if isinstance(cause, UnsupportedOpError):
                raise UnsupportedOpError(str(cause)) from error
            cause = cause.__cause__ or cause.__context__
        raise
