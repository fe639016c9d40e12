"""Functional API: pyseq's fused ops for users who hold their own weights (like ``torch.nn.functional``).

Recurrent layers
----------------
``lstm``, ``gru`` and ``rnn`` run a stack of recurrent layers with the semantics of ``torch.nn.LSTM/GRU/RNN``.
``weights`` is a flat list in the order of torch's ``_flat_weights`` (and of ``pyseq.nn`` modules'
``_flat_weights``): for each layer, for each direction (forward, then reverse):
``w_ih [G*H, I_l], w_hh [G*H, Hr]``, then ``b_ih [G*H], b_hh [G*H]`` when there are biases, then
``w_hr [Hr, H]`` for an LSTM with a projection. ``G`` is 4 (LSTM, gates i, f, g, o), 3 (GRU, gates r, z, n) or 1;
``Hr`` is ``proj_size`` with a projection, else ``H``; ``I_l`` is the input size for layer 0, ``D * Hr`` after.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from ._ops import attention as _attention_ops
from ._ops import crf as _crf_ops
from ._ops import ctc as _ctc_ops
from ._ops import ntm as _ntm_ops
from ._ops import rnn as _rnn_ops
from ._ops.checks import check_same_device

__all__ = [
    "lstm",
    "gru",
    "rnn",
    "ctc_loss",
    "crf_log_partition",
    "crf_score",
    "crf_log_likelihood",
    "crf_marginals",
    "crf_viterbi",
    "crf_hinge_loss",
    "hmm_viterbi",
    "additive_attention",
    "dot_attention",
    "project_keys",
    "ProjectedKeys",
    "ntm_address",
    "ntm_read",
    "ntm_step",
    "ntm_write",
]

_NAMES = {_rnn_ops.RNN_TANH: "RNN", _rnn_ops.RNN_RELU: "RNN", _rnn_ops.LSTM: "LSTM", _rnn_ops.GRU: "GRU"}


def _layer_weights(mode, weights, num_layers, num_directions):
    """The number of tensors per (layer, direction) in the flat list, and whether there are biases and a
    projection."""
    groups = num_layers * num_directions
    per = len(weights) // groups if groups else 0
    allowed = (2, 3, 4, 5) if mode == _rnn_ops.LSTM else (2, 4)
    if per * groups != len(weights) or per not in allowed:
        raise ValueError(
            f"{_NAMES[mode]}: weights must hold {' or '.join(map(str, allowed))} tensors per layer and direction "
            f"({num_layers} layers x {num_directions} directions), got {len(weights)} tensors"
        )
    has_bias = per in (4, 5)
    has_proj = per in (3, 5)
    return per, has_bias, has_proj


_BATCH_SIZES: dict = {}


def _full_batch_sizes(steps: int, batch: int) -> Tensor:
    """batch_sizes [T] of a padded input (every sequence runs every step), made once per (T, B) in eager mode: the
    ops only read it, and a decoder step would otherwise make it every call."""
    if torch.compiler.is_compiling():
        return torch.full((steps,), batch, dtype=torch.int64)
    sizes = _BATCH_SIZES.get((steps, batch))
    if sizes is None:
        if len(_BATCH_SIZES) >= 64:
            _BATCH_SIZES.clear()
        sizes = _BATCH_SIZES[(steps, batch)] = torch.full((steps,), batch, dtype=torch.int64)
    return sizes


def _cpu_autocast_result_dtypes(mode, packed, has_proj, input_dtype, output, h_n, c_n):
    """The layer ops return their results in the autocast dtype; under CPU autocast torch.nn's modules hand some of
    theirs back in the input's dtype instead: the GRU's output and state, a projected LSTM's cell state, and
    everything of an LSTM run on a PackedSequence. The same results go back to the input's dtype here, so that the
    code after a pyseq layer sees torch's dtypes."""

    def keep(t):
        return t.to(input_dtype) if t is not None else None

    if mode == _rnn_ops.GRU or (mode == _rnn_ops.LSTM and packed and not has_proj):
        return keep(output), keep(h_n), keep(c_n)
    if mode == _rnn_ops.LSTM and has_proj:
        return output, h_n, keep(c_n)
    return output, h_n, c_n


def _states(h0, c0):
    return (h0,) if c0 is None else (h0, c0)


def _check_hidden(hx: Tensor, expected: tuple, msg: str) -> None:
    if tuple(hx.shape) != expected:
        raise RuntimeError(msg.format(expected, list(hx.shape)))


def _run(
    mode: int,
    input,
    hx,
    weights,
    num_layers: int,
    bidirectional: bool,
    batch_first: bool,
    dropout: float,
    training: bool,
):
    name = _NAMES[mode]
    lstm = mode == _rnn_ops.LSTM
    num_directions = 2 if bidirectional else 1
    per, has_bias, has_proj = _layer_weights(mode, weights, num_layers, num_directions)
    w_ih0, w_hh0 = weights[0], weights[1]
    hidden_size = w_hh0.shape[0] // _rnn_ops.GATES[mode]
    real_hidden = w_hh0.shape[1]
    input_size = w_ih0.shape[1]

    packed = isinstance(input, PackedSequence)
    if packed:
        data, batch_sizes, sorted_indices, unsorted_indices = input
        if data.dim() != 2:
            raise RuntimeError(f"input must have 2 dimensions, got {data.dim()}")
        batch = int(batch_sizes[0])
        batched = True
    else:
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: input must be a Tensor or a PackedSequence, got {type(input).__name__}")
        if input.dim() not in (2, 3):
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}D tensor instead")
        batched = input.dim() == 3
        x = input if batched else input.unsqueeze(1)
        if batched and batch_first:
            x = x.transpose(0, 1)
        steps, batch = x.shape[0], x.shape[1]
        if steps == 0:
            raise ValueError(f"{name}: input must have at least one time step, got a sequence of length 0")
        sorted_indices = unsorted_indices = None
        data = x  # [T, B, I]: the layer op takes padded input as it is
        batch_sizes = _full_batch_sizes(steps, batch)
    if data.device != w_ih0.device:
        raise RuntimeError(
            "Input and parameter tensors are not at the same device, found input tensor at "
            f"{data.device} and parameter tensor at {w_ih0.device}"
        )
    # Under autocast the layer op casts input, state and weights to the autocast dtype itself.
    if data.dtype != w_ih0.dtype and not torch.is_autocast_enabled(data.device.type):
        raise ValueError(
            f"RNN input dtype ({data.dtype}) does not match weight dtype ({w_ih0.dtype}). Convert input: "
            f"input.to({w_ih0.dtype}), or convert model: model.to({data.dtype})"  # torch's words, for every cell
        )
    if data.shape[-1] != input_size:
        raise RuntimeError(
            f"input.size(-1) must be equal to input_size. Expected {input_size}, got {data.shape[-1]}"
        )

    # Initial states: [L*D, B, Hr] (and [L*D, B, H] for the LSTM cell).
    if hx is None:
        h0 = data.new_zeros(num_layers * num_directions, batch, real_hidden)
        c0 = data.new_zeros(num_layers * num_directions, batch, hidden_size) if lstm else None
    else:
        if lstm:
            if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise TypeError("LSTM: hx must be a tuple (h_0, c_0)")
            h0, c0 = hx
        else:
            if not isinstance(hx, Tensor):
                raise TypeError(f"{name}: hx must be a Tensor")
            h0, c0 = hx, None
        ndim = 3 if batched else 2
        if any(s.dim() != ndim for s in _states(h0, c0)):
            dims = ", ".join(f"{s.dim()}-D" for s in _states(h0, c0))
            kind = "batched 3-D" if batched else "unbatched 2-D"
            what = "hx and cx" if lstm else "hx"
            raise RuntimeError(f"For {kind} input, {what} should also be {ndim}-D but got ({dims}) tensors")
        if not batched:
            h0 = h0.unsqueeze(1)
            c0 = c0.unsqueeze(1) if c0 is not None else None
        expected_h = (num_layers * num_directions, batch, real_hidden)
        if lstm:
            _check_hidden(h0, expected_h, "Expected hidden[0] size {}, got {}")
            _check_hidden(c0, (num_layers * num_directions, batch, hidden_size), "Expected hidden[1] size {}, got {}")
        else:
            _check_hidden(h0, expected_h, "Expected hidden size {}, got {}")
        for s, what in zip(_states(h0, c0), ("hx", "cx")):
            dtype_differs = s.dtype != data.dtype and not torch.is_autocast_enabled(data.device.type)
            if dtype_differs or s.device != data.device:
                raise RuntimeError(
                    f"{name}: {what} must have the dtype and device of the input ({data.dtype}, {data.device}), "
                    f"got ({s.dtype}, {s.device})"
                )
        if sorted_indices is not None:
            h0 = h0.index_select(1, sorted_indices)
            c0 = c0.index_select(1, sorted_indices) if c0 is not None else None

    # Whether the layers keep what their backward needs. Always under torch.jit.trace: the traced graph holds the
    # flag as a constant, and it must serve training as well as inference (the trace's check reruns it without grad).
    needs_grad = torch.jit.is_tracing() or torch.is_grad_enabled() and (
        data.requires_grad or h0.requires_grad or (c0 is not None and c0.requires_grad)
    )
    if not needs_grad and torch.is_grad_enabled():
        for w in weights:
            if w.requires_grad:
                needs_grad = True
                break
    empty = data.new_empty(0)
    layer_input = data
    h_n, c_n = [], []
    for layer in range(num_layers):
        outputs = []
        for direction in range(num_directions):
            index = layer * num_directions + direction
            base = index * per
            y, h, c, _ = _rnn_ops.rnn_layer(
                mode,
                layer_input,
                batch_sizes,
                h0[index],
                c0[index] if lstm else empty,
                weights[base],
                weights[base + 1],
                weights[base + 2] if has_bias else empty,
                weights[base + 3] if has_bias else empty,
                weights[base + per - 1] if has_proj else empty,
                direction == 1,
                needs_grad,
            )
            outputs.append(y)
            h_n.append(h)
            c_n.append(c)
        layer_input = outputs[0] if num_directions == 1 else torch.cat(outputs, -1)
        if dropout > 0 and training and layer < num_layers - 1:
            layer_input = F.dropout(layer_input, dropout, training=True)

    h_n = torch.stack(h_n) if len(h_n) > 1 else h_n[0].unsqueeze(0)
    c_n = (torch.stack(c_n) if len(c_n) > 1 else c_n[0].unsqueeze(0)) if lstm else None
    if data.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        layer_input, h_n, c_n = _cpu_autocast_result_dtypes(mode, packed, has_proj, data.dtype, layer_input, h_n, c_n)
    if packed:
        if unsorted_indices is not None:
            h_n = h_n.index_select(1, unsorted_indices)
            c_n = c_n.index_select(1, unsorted_indices) if lstm else None
        output = PackedSequence(layer_input, batch_sizes, sorted_indices, unsorted_indices)
    else:
        output = layer_input
        if not batched:
            output = output.squeeze(1)
            h_n = h_n.squeeze(1)
            c_n = c_n.squeeze(1) if lstm else None
        elif batch_first:
            output = output.transpose(0, 1)
    return output, ((h_n, c_n) if lstm else h_n)


def lstm(
    input,
    hx,
    weights,
    num_layers: int = 1,
    bidirectional: bool = False,
    batch_first: bool = False,
    dropout: float = 0.0,
    training: bool = False,
):
    """Multi-layer LSTM with the semantics of ``torch.nn.LSTM``, on pyseq's fused kernels.

    Args:
        input: ``[T, B, I]`` (``[B, T, I]`` with ``batch_first``), unbatched ``[T, I]``, or a ``PackedSequence``.
        hx: ``None`` (zeros) or ``(h_0 [L*D, B, Hr], c_0 [L*D, B, H])`` (``[L*D, Hr]``, ``[L*D, H]`` unbatched).
        weights: flat list as described in this module's docstring (gates i, f, g, o).
        num_layers, bidirectional, batch_first: as in ``torch.nn.LSTM``.
        dropout, training: dropout on each layer's output except the last, when ``training``.

    Returns:
        ``(output, (h_n, c_n))``: output ``[T, B, D*Hr]`` (or as laid out by ``batch_first``, unbatched, or packed),
        ``h_n [L*D, B, Hr]``, ``c_n [L*D, B, H]``.
    """
    return _run(_rnn_ops.LSTM, input, hx, weights, num_layers, bidirectional, batch_first, dropout, training)


def gru(
    input,
    hx,
    weights,
    num_layers: int = 1,
    bidirectional: bool = False,
    batch_first: bool = False,
    dropout: float = 0.0,
    training: bool = False,
):
    """Multi-layer GRU with the semantics of ``torch.nn.GRU`` (gates r, z, n;
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, ``h' = (1 - z) * n + z * h``).

    Shapes as in :func:`lstm` with ``Hr = H`` and ``hx`` a single tensor ``[L*D, B, H]``.
    Returns ``(output, h_n)``.
    """
    return _run(_rnn_ops.GRU, input, hx, weights, num_layers, bidirectional, batch_first, dropout, training)


def rnn(
    input,
    hx,
    weights,
    nonlinearity: str = "tanh",
    num_layers: int = 1,
    bidirectional: bool = False,
    batch_first: bool = False,
    dropout: float = 0.0,
    training: bool = False,
):
    """Multi-layer Elman RNN, ``h' = act(W_ih x + b_ih + W_hh h + b_hh)`` with ``act`` tanh or relu, with the
    semantics of ``torch.nn.RNN``. Shapes as in :func:`gru`. Returns ``(output, h_n)``."""
    if nonlinearity == "tanh":
        mode = _rnn_ops.RNN_TANH
    elif nonlinearity == "relu":
        mode = _rnn_ops.RNN_RELU
    else:
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
    return _run(mode, input, hx, weights, num_layers, bidirectional, batch_first, dropout, training)


def _lengths(value, name: str) -> Tensor:
    """Lengths as an int64 tensor on the CPU, from a tensor (int32 or int64) or a sequence of ints."""
    if isinstance(value, Tensor):
        if value.dtype not in (torch.int32, torch.int64):
            # torch's CTC loss raises RuntimeError("input_lengths must be integral") here
            raise RuntimeError(f"{name} must be integral (int32 or int64), got {value.dtype}")
        return value.to(device="cpu", dtype=torch.int64)
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{name} must be a tensor or a sequence of ints, got {type(value).__name__}") from None
    for i, item in enumerate(items):
        if not _is_integer(item):
            raise TypeError(f"{name} must be a tensor or a sequence of ints, but found {item!r} at position {i}")
    return torch.as_tensor([int(item) for item in items], dtype=torch.int64)


def _is_integer(item) -> bool:
    """An int (not a bool), a SymInt, a 0-d integer tensor or a numpy integer (what indexing an integer array
    gives)."""
    if isinstance(item, bool):
        return False
    if isinstance(item, (int, torch.SymInt)):
        return True
    if isinstance(item, Tensor):
        return item.dim() == 0 and not item.dtype.is_floating_point and not item.dtype.is_complex
    return hasattr(item, "dtype") and hasattr(item, "__index__")


def ctc_loss(
    log_probs: Tensor,
    targets: Tensor,
    input_lengths,
    target_lengths,
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = False,
) -> Tensor:
    """Connectionist temporal classification loss, a drop-in for ``torch.nn.functional.ctc_loss``.

    Args:
        log_probs: ``[T, N, C]`` (or unbatched ``[T, C]``) log-probabilities, usually ``log_softmax`` output;
            float32 or float64 (bfloat16 and float16 are computed in float32, and the loss is float32).
        targets: ``[N, S]`` padded, or 1-D ``[sum(target_lengths)]`` concatenated (unbatched: ``[S]``); class ids
            in ``[0, C)``, never the blank. Under ``torch.compile``, padded only.
        input_lengths, target_lengths: ``[N]`` tensors (int32/int64) or sequences of ints (unbatched: scalars).
        blank: the blank class.
        reduction: ``'none'`` (``[N]``), ``'sum'``, or ``'mean'`` (each loss divided by its target length clamped to
            1, then averaged over the batch).
        zero_infinity: zero the losses (and gradients) of sequences that have no alignment (target too long for
            its input); otherwise their loss is ``inf`` and their gradient zero.

    The gradient is the true gradient with respect to ``log_probs`` as given: minus the posterior occupancy of
    each class at each frame. torch returns ``exp(log_probs) - posterior``, which equals it only after a
    ``log_softmax``; through a ``log_softmax`` both give the same gradient for the logits, and pyseq's stays right
    for scores that are not normalized (label priors, temperature, blank penalties).
    """
    if reduction not in ("none", "sum", "mean"):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    if not isinstance(log_probs, Tensor) or log_probs.dim() not in (2, 3):
        dims = log_probs.dim() if isinstance(log_probs, Tensor) else type(log_probs).__name__
        raise RuntimeError(f"log_probs must be 3-D (T, N, C) or unbatched 2-D (T, C), got {dims}-D")
    unbatched = log_probs.dim() == 2
    if unbatched:
        log_probs = log_probs.unsqueeze(1)
        targets = targets.unsqueeze(0)
        input_lengths = [int(input_lengths)]
        target_lengths = [int(target_lengths)]
    if targets.dim() == 1 and torch.compiler.is_compiling():
        # The forward variables' size depends on the longest target, which a concatenated batch only tells at run
        # time; a compiled graph needs it from the shapes.
        raise RuntimeError("under torch.compile, pass ctc_loss targets padded as (N, S) rather than concatenated")
    input_lengths = _lengths(input_lengths, "input_lengths")
    target_lengths = _lengths(target_lengths, "target_lengths")
    nll, _ = _ctc_ops.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank)
    if zero_infinity:
        nll = torch.where(torch.isinf(nll), torch.zeros_like(nll), nll)
    if reduction == "none":
        return nll.squeeze(0) if unbatched else nll
    if reduction == "sum":
        return nll.sum()
    return (nll / target_lengths.clamp(min=1).to(nll.dtype)).mean()


# ---- linear-chain CRF ----------------------------------------------------------------------------------------------
#
# Shapes: emissions [B, T, K] (batch-major; a time-major tensor may be passed as .transpose(0, 1) and is read in
# place), tags [B, T] int64, lengths [B] (each sequence covers steps 0 .. lengths[b] - 1; all T when omitted) or,
# in its place, a mask [B, T] (bool or uint8) that is a prefix in each row: ones, then zeros,
# transitions [K, K] (transitions[i, j] scores tag i followed by tag j), start_transitions and end_transitions [K].
# The score of a path y of length L >= 1 is start[y_0] + sum_t emissions[t, y_t] + sum_{t>=1} transitions[y_{t-1},
# y_t] + end[y_{L-1}]; a sequence of length 0 has one path, the empty one, with score 0. A score of -inf forbids a
# tag or transition (pyseq.crf.apply_constraints writes constraints this way), exactly: a sequence with no allowed
# path has log Z = -inf and no Viterbi path.


def _crf_inputs(emissions: Tensor, transitions: Tensor, start: Tensor, end: Tensor, lengths):
    if not isinstance(emissions, Tensor) or emissions.dim() != 3:
        dims = emissions.dim() if isinstance(emissions, Tensor) else type(emissions).__name__
        raise ValueError(f"emissions must have dimension of 3 (batch, seq_length, num_tags), got {dims}")
    B, T, K = emissions.shape
    for name, t, shape in (
        ("transitions", transitions, (K, K)),
        ("start_transitions", start, (K,)),
        ("end_transitions", end, (K,)),
    ):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} for num_tags = {K}, got {tuple(t.shape)}")
    if emissions.stride(2) != 1:
        emissions = emissions.contiguous()
    if lengths is None:
        lengths = torch.full((B,), T, dtype=torch.int64)
    elif isinstance(lengths, Tensor) and lengths.dim() == 2:  # a [B, T] prefix mask goes to the kernels (bool)
        lengths = _crf_mask(lengths)
    else:
        lengths = _lengths(lengths, "lengths")
    return emissions, lengths


def _crf_tags(tags: Tensor, emissions: Tensor) -> Tensor:
    if not isinstance(tags, Tensor) or tags.shape != emissions.shape[:2]:
        shape = tuple(tags.shape) if isinstance(tags, Tensor) else type(tags).__name__
        raise ValueError(
            f"the first two dimensions of emissions and tags must match, got {tuple(emissions.shape[:2])} and {shape}"
        )
    if tags.dtype != torch.int64:
        if tags.dtype.is_floating_point or tags.dtype.is_complex or tags.dtype == torch.bool:
            raise TypeError(f"tags must hold integer tag ids, got {tags.dtype}")
        tags = tags.long()
    return tags


def _crf_mask(mask: Tensor) -> Tensor:
    """A [B, T] mask of bool or any integer dtype as bool (nonzero = on)."""
    if mask.dtype == torch.bool:
        return mask
    if mask.dtype.is_floating_point or mask.dtype.is_complex:
        raise TypeError(f"mask must be bool or an integer dtype, got {mask.dtype}")
    return mask != 0


def crf_log_partition(
    emissions: Tensor, transitions: Tensor, start_transitions: Tensor, end_transitions: Tensor, lengths=None
) -> Tensor:
    """log Z: the log of the summed exponentiated scores of all tag paths, ``[B]``, by the forward algorithm.

    Differentiable: the gradient is the tag and transition marginals, computed by the backward recursion in C++.
    """
    emissions, lengths = _crf_inputs(emissions, transitions, start_transitions, end_transitions, lengths)
    log_z = _crf_ops.crf_log_partition(emissions, lengths, start_transitions, end_transitions, transitions)[0]
    return log_z


def crf_score(
    emissions: Tensor,
    tags: Tensor,
    transitions: Tensor,
    start_transitions: Tensor,
    end_transitions: Tensor,
    lengths=None,
) -> Tensor:
    """The score of the tag path ``tags [B, T]`` of each sequence, ``[B]`` (differentiable). Tags past a sequence's
    length are ignored; within it they must lie in ``[0, K)``."""
    emissions, lengths = _crf_inputs(emissions, transitions, start_transitions, end_transitions, lengths)
    tags = _crf_tags(tags, emissions)
    return _crf_ops.crf_path_score(emissions, tags, lengths, start_transitions, end_transitions, transitions)


def crf_log_likelihood(
    emissions: Tensor,
    tags: Tensor,
    transitions: Tensor,
    start_transitions: Tensor,
    end_transitions: Tensor,
    lengths=None,
) -> Tensor:
    """log P(tags | emissions) = score(tags) - log Z, ``[B]``, in one op whose backward writes the path indicators
    minus the marginals in one pass. A forbidden tag path gets -inf (and no gradient)."""
    emissions, lengths = _crf_inputs(emissions, transitions, start_transitions, end_transitions, lengths)
    tags = _crf_tags(tags, emissions)
    llh, _, _ = _crf_ops.crf_log_likelihood(
        emissions, tags, lengths, start_transitions, end_transitions, transitions
    )
    return llh


def crf_marginals(
    emissions: Tensor, transitions: Tensor, start_transitions: Tensor, end_transitions: Tensor, lengths=None
) -> Tensor:
    """Tag marginals ``P(y_t = k | x)``: ``[B, T, K]``, zero past each length and for sequences with no allowed path.
    Not differentiable (backward through it raises)."""
    emissions, lengths = _crf_inputs(emissions, transitions, start_transitions, end_transitions, lengths)
    return _crf_ops.crf_marginals(emissions, lengths, start_transitions, end_transitions, transitions)


def crf_viterbi(
    emissions: Tensor,
    transitions: Tensor,
    start_transitions: Tensor,
    end_transitions: Tensor,
    lengths=None,
    nbest: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Viterbi decoding in C++.

    Returns ``(tags [B, T] int64, scores [B])`` for ``nbest=None``, or ``(tags [B, nbest, T], scores [B, nbest])``
    holding the ``nbest`` highest-scoring distinct paths, best first. Tags past a sequence's length are -1; a rank
    beyond the number of allowed paths (or a sequence with none) has tags -1 and score -inf. Not differentiable
    (``crf_score`` of the decoded tags is).
    """
    emissions, lengths = _crf_inputs(emissions, transitions, start_transitions, end_transitions, lengths)
    k = 1 if nbest is None else nbest
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"nbest must be a positive integer, got {nbest!r}")
    paths, scores = _crf_ops.crf_viterbi(
        emissions.detach(), lengths, start_transitions.detach(), end_transitions.detach(), transitions.detach(), k
    )
    if nbest is None:
        return paths[:, 0], scores[:, 0]
    return paths, scores


def crf_hinge_loss(
    emissions: Tensor,
    tags: Tensor,
    transitions: Tensor,
    start_transitions: Tensor,
    end_transitions: Tensor,
    lengths=None,
    cost: float = 1.0,
) -> Tensor:
    """Structured-SVM (margin-rescaled) loss, ``[B]``: ``max_y [score(y) + cost * hamming(y, tags)] - score(tags)``.

    The maximum is found by cost-augmented Viterbi (``cost`` added to every non-gold tag's emission); the loss is
    >= 0, and zero once the gold path beats every other path by a margin of ``cost`` per wrong tag. Its (sub)gradient
    flows through the two path scores. A forbidden gold path gives +inf; a NaN among the scores a sequence reads, NaN.
    """
    emissions, lengths = _crf_inputs(emissions, transitions, start_transitions, end_transitions, lengths)
    tags = _crf_tags(tags, emissions)
    B, T, K = emissions.shape
    valid = lengths.bool() if lengths.dim() == 2 else torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)  # [B, T]
    gold = tags.masked_fill(~valid, 0)
    args = (lengths, start_transitions, end_transitions, transitions)
    gold_score = _crf_ops.crf_path_score(emissions, gold, *args)  # also checks the tags against [0, K)
    with torch.no_grad():
        wrong_tag = torch.ones_like(emissions, dtype=torch.bool).scatter_(2, gold.unsqueeze(2), False)
        augmented = emissions.detach() + cost * (wrong_tag & valid.unsqueeze(2)).to(emissions.dtype)
        best, best_scores = crf_viterbi(augmented, transitions, start_transitions, end_transitions, lengths)
        hamming = ((best != gold) & valid).sum(1).to(emissions.dtype)
    best_score = _crf_ops.crf_path_score(emissions, best.clamp(min=0), *args)
    loss = best_score + cost * hamming - gold_score
    loss = torch.where(best_scores.isnan(), best_scores, loss)  # a NaN score makes the maximum NaN
    return torch.where(best_scores == float("-inf"), torch.full_like(loss, float("inf")), loss)


def hmm_viterbi(
    log_posteriors: Tensor,
    log_transitions: Tensor,
    log_initial: Tensor,
    log_priors: Tensor | None = None,
    prior_scale: float = 1.0,
    lengths=None,
) -> tuple[Tensor, Tensor]:
    """Viterbi for hybrid DNN-HMM decoding: the best state sequence under the scaled likelihoods
    ``log P(state | x) - prior_scale * log P(state)``.

    Args:
        log_posteriors: ``[B, T, S]`` the network's state log-posteriors.
        log_transitions: ``[S, S]`` ``log P(s_t = j | s_{t-1} = i)``; log_initial: ``[S]``.
        log_priors: ``[S]`` log state priors (omit to decode the posteriors as they are).
        lengths: ``[B]`` frames per sequence.

    Returns ``(states [B, T] int64, -1 past each length; scores [B])``.
    """
    emissions = log_posteriors if log_priors is None else log_posteriors - prior_scale * log_priors
    final = log_initial.new_zeros(log_initial.shape)
    return crf_viterbi(emissions, log_transitions, log_initial, final, lengths)


# ---- attention -----------------------------------------------------------------------------------------------------
#
# Queries [B, Tq, *] (or [B, *] for one decoder step: the outputs then drop the Tq dimension too), keys [B, Tk, *],
# value [B, Tk, Dv]; mask None or bool [B, Tk] / [B, Tq, Tk], True = attend. A query whose keys are all masked gets
# zero weights and a zero context (and zero gradients), never NaN. Returns (context [B, Tq, Dv], weights [B, Tq, Tk]
# or None); the weights are differentiable when returned.


def _attention_inputs(query: Tensor, key: Tensor, value: Tensor, mask, names: tuple[str, str]):
    for name, t in ((names[0], query), (names[1], key), ("value", value)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if key.dim() != 3:
        raise ValueError(f"{names[1]} must be 3-D (batch, key_len, features), got {key.dim()}-D")
    step = query.dim() == 2
    if query.dim() not in (2, 3):
        raise ValueError(
            f"{names[0]} must be 3-D (batch, query_len, features) or 2-D (batch, features), got {query.dim()}-D"
        )
    if step:
        query = query.unsqueeze(1)
        if mask is not None and mask.dim() == 3:
            raise ValueError(f"mask must be 2-D (batch, key_len) for a 2-D {names[0]}, got 3-D")
    if mask is not None and (not isinstance(mask, Tensor) or mask.dtype != torch.bool):
        raise TypeError(f"mask must be a bool tensor (True = attend), got {getattr(mask, 'dtype', type(mask))}")
    return query, step


def _attention_outputs(context: Tensor, weights: Tensor, step: bool, return_weights: bool):
    if step:
        context, weights = context.squeeze(1), weights.squeeze(1)
    # A traced function cannot return None: under torch.jit.trace the weights come back whatever return_weights says.
    return context, (weights if return_weights or torch.jit.is_tracing() else None)


class ProjectedKeys(NamedTuple):
    """Projected keys for additive attention with the factors of their tanh terms, computed once for a decoding
    loop by :func:`project_keys` (pass it as ``key_proj``): every later call then spends a multiply, an add and a
    division per (query, key, feature) term instead of a tanh. ``proj [B, Tk, A]`` carries the gradient."""

    proj: Tensor
    exp2x: Tensor  # exp(2 proj), arguments clamped to +-40 (factors used only where |proj| <= 40)
    maxabs: Tensor  # max |proj| over A: [B, Tk]


def project_keys(key_proj: Tensor) -> ProjectedKeys:
    """Caches the tanh factors of projected keys ``[B, Tk, A]`` for repeated :func:`additive_attention` calls."""
    if not isinstance(key_proj, Tensor) or key_proj.dim() != 3:
        raise ValueError(f"key_proj must be a 3-D tensor (batch, key_len, attn_size), got {key_proj!r:.60}")
    with torch.no_grad():
        exp2x = torch.exp(2 * key_proj.clamp(-40, 40))
        maxabs = key_proj.abs().amax(-1) if key_proj.shape[-1] else key_proj.new_zeros(key_proj.shape[:2])
    return ProjectedKeys(key_proj, exp2x, maxabs)


def additive_attention(
    query_proj: Tensor,
    key_proj: Tensor,
    v: Tensor,
    value: Tensor,
    mask: Tensor | None = None,
    return_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Additive (Bahdanau) attention, fused: scores ``e_ij = v . tanh(query_proj_i + key_proj_j)``, masked softmax
    over the keys, context ``sum_j w_ij value_j``, without the ``[B, Tq, Tk, A]`` tensor a composition of torch
    ops builds (the backward recomputes the tanh terms).

    Args:
        query_proj: ``[B, Tq, A]`` projected queries (``W_q q``), or ``[B, A]`` for one decoder step.
        key_proj: ``[B, Tk, A]`` projected keys (``W_k k + b``), or :class:`ProjectedKeys` from
            :func:`project_keys` (decoding loops: the keys' tanh factors computed once).
        v: ``[A]`` the score vector.
        value: ``[B, Tk, Dv]``.
        mask: None, or bool ``[B, Tk]`` / ``[B, Tq, Tk]``, True = attend.
        return_weights: also return the attention weights ``[B, Tq, Tk]`` (otherwise None; always under
            ``torch.jit.trace``, whose traced functions cannot return None).
    """
    keys = key_proj if isinstance(key_proj, ProjectedKeys) else ProjectedKeys(key_proj, None, None)
    query_proj, step = _attention_inputs(query_proj, keys.proj, value, mask, ("query_proj", "key_proj"))
    context, weights = _attention_ops.additive_attention(query_proj, keys.proj, v, value, mask, keys.exp2x,
                                                         keys.maxabs)
    return _attention_outputs(context, weights, step, return_weights)


def dot_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None = None,
    scale: float | None = None,
    return_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Dot-product (Luong) attention: scores ``scale * query_i . key_j``, masked softmax, context.

    Args:
        query: ``[B, Tq, D]`` (or ``[B, D]`` for one decoder step); key: ``[B, Tk, D]``; value: ``[B, Tk, Dv]``.
        mask: None, or bool ``[B, Tk]`` / ``[B, Tq, Tk]``, True = attend.
        scale: the score scale; ``None`` gives ``1 / sqrt(D)`` (``scaled_dot_product_attention``'s default), 1.0
            plain dot-product scores.
        return_weights: also return the attention weights ``[B, Tq, Tk]`` (otherwise None; always under
            ``torch.jit.trace``, whose traced functions cannot return None).
    """
    query, step = _attention_inputs(query, key, value, mask, ("query", "key"))
    if scale is None:
        if query.shape[-1] == 0:
            raise ValueError("query must have at least one feature for the default scale 1 / sqrt(D), got D = 0")
        scale = 1.0 / math.sqrt(query.shape[-1])
    context, weights = _attention_ops.dot_attention(query, key, value, mask, float(scale))
    return _attention_outputs(context, weights, step, return_weights)


# ---- Neural Turing Machine memory ----------------------------------------------------------------------------------
#
# Shapes: memory [B, N, M] (N rows of width M), H heads per call. Graves, Wayne and Danihelka (2014), equations 3-9.


def ntm_address(memory: Tensor, key: Tensor, beta: Tensor, gate: Tensor, shift: Tensor, gamma: Tensor,
                prev_weights: Tensor) -> Tensor:
    """The addressing of H heads, fused per head: content weights by cosine similarity sharpened by a key strength,
    interpolation with the previous weights, circular shift, sharpening.

    Args:
        memory: ``[B, N, M]``. key: ``[B, H, M]``. beta (key strength, > 0), gate (in [0, 1]), gamma (>= 1):
            ``[B, H]``. shift: ``[B, H, S]``, a distribution over S = 2r + 1 shifts, centred: index s moves weight by
            s - r rows, circularly. prev_weights: ``[B, H, N]``.

    Returns the weights ``[B, H, N]``: ``w_c = softmax(beta * K(key, memory rows))`` with ``K`` the cosine similarity
    of ``torch.nn.functional.cosine_similarity`` (eps 1e-8), ``w_g = gate w_c + (1 - gate) prev_weights``,
    ``w_s[i] = sum_s shift[s] w_g[(i - s + r) mod N]``, ``w = w_s^gamma / sum(w_s^gamma)`` (computed as
    ``(w_s / max w_s)^gamma``, normalized: the same weights without the underflow to 0 / 0 of ``w_s^gamma`` in
    float32 for flat weights and a large gamma). Differentiable in every input.
    """
    return _ntm_ops.ntm_address(memory, key, beta, gate, shift, gamma, prev_weights)


def ntm_read(memory: Tensor, weights: Tensor) -> Tensor:
    """The read vectors of H heads: ``weights [B, H, N] @ memory [B, N, M] -> [B, H, M]`` (a batched GEMM)."""
    check_same_device("memory", memory, ("weights", weights))  # torch.bmm lets a meta tensor and a CPU one mix
    return torch.bmm(weights, memory)


def ntm_step(memory: Tensor, params: Tensor, prev_weights: Tensor, read_heads: int,
             write_heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """One step of an NTM's heads in one op (what ``pyseq.nn.NTM`` runs per time step): the activations of the heads'
    parameters as a controller's linear layer emits them, the addressing of every head against the memory as it is
    at the start of the step, the read heads' reads, then the write heads' writes in turn. One autograd node per
    step instead of the two dozen small ops of the same written in Python.

    Args:
        memory: ``[B, N, M]``. prev_weights: ``[B, R + W, N]``, read heads first.
        params: ``[B, (R + W) (M + 3 + S) + W 2 M]``: for each head (read heads first) its key (M), key strength
            (softplus of the entry), gate (sigmoid), sharpening (1 + softplus) and S shift logits (softmax; S odd);
            then for each write head its erase vector (sigmoid, M) and add vector (tanh, M).
        read_heads, write_heads: R >= 0 and W >= 0, at least one head.

    Returns ``(weights [B, R + W, N], reads [B, R, M], memory [B, N, M])``: the new weights of every head, the read
    vectors (``ntm_read``), and the memory after the writes (``ntm_write`` of each write head in turn). Differentiable
    in memory, params and prev_weights.
    """
    return _ntm_ops.ntm_step(memory, params, prev_weights, read_heads, write_heads)


def ntm_write(memory: Tensor, weights: Tensor, erase: Tensor, add: Tensor) -> Tensor:
    """One write head, erase then add, in one pass over the memory: ``memory * (1 - weights erase^T) + weights
    add^T``. memory ``[B, N, M]``, weights ``[B, N]``, erase (in [0, 1]) and add ``[B, M]``; returns the new memory
    ``[B, N, M]`` (the input is not modified). Differentiable in every input."""
    return _ntm_ops.ntm_write(memory, weights, erase, add)
