"""Recurrent layers: drop-in replacements for ``torch.nn.LSTM``, ``GRU`` and ``RNN`` on pyseq's fused kernels.

Constructor arguments, parameter names and shapes, default initialization (drawn from the RNG in the same order),
forward arguments and outputs are torch's, so ``state_dict``s load both ways and a seeded script gives the same run.
"""

from __future__ import annotations

import math
import numbers
import warnings

import torch
from torch import Tensor, nn

from .. import functional as F
from .._ops import rnn as _rnn_ops

__all__ = ["LSTM", "GRU", "RNN", "init_irnn_"]

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
_MODE_IDS = {"LSTM": _rnn_ops.LSTM, "GRU": _rnn_ops.GRU, "RNN_TANH": _rnn_ops.RNN_TANH, "RNN_RELU": _rnn_ops.RNN_RELU}


class _RNNBase(nn.Module):
    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if not isinstance(dropout, numbers.Number) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
            raise ValueError(
                "dropout should be a number in range [0, 1] representing the probability of an element being zeroed"
            )
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero dropout expects "
                f"num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                stacklevel=3,
            )
        for arg, value in (("bias", bias), ("batch_first", batch_first)):
            if not isinstance(value, bool):
                raise TypeError(f"{arg} should be of type bool, got: {type(value).__name__}")
        for arg, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(value, int):
                raise TypeError(f"{arg} should be of type int, got: {type(value).__name__}")
            if value <= 0:
                raise ValueError(f"{arg} must be greater than zero")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        if mode not in _GATES:
            raise ValueError("Unrecognized RNN mode: " + mode)

        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size

        factory = {"device": device, "dtype": dtype}
        gate_size = _GATES[mode] * hidden_size
        real_hidden = proj_size if proj_size > 0 else hidden_size
        num_directions = 2 if bidirectional else 1
        self._flat_weights_names: list[str] = []
        self._all_weights: list[list[str]] = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else real_hidden * num_directions
            for direction in range(num_directions):
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                shapes = [("weight_ih", (gate_size, layer_input)), ("weight_hh", (gate_size, real_hidden))]
                if bias:
                    shapes += [("bias_ih", (gate_size,)), ("bias_hh", (gate_size,))]
                if proj_size > 0:
                    shapes += [("weight_hr", (proj_size, hidden_size))]
                names = []
                for prefix, shape in shapes:
                    setattr(self, prefix + suffix, nn.Parameter(torch.empty(shape, **factory)))
                    names.append(prefix + suffix)
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform on ``[-1/sqrt(hidden_size), 1/sqrt(hidden_size)]`` for every parameter, in registration order
        (torch's initialization, so the same seed gives the same weights)."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    @property
    def _flat_weights(self) -> list[Tensor]:
        # Straight from the parameter dict (a decoder step pays nn.Module.__getattr__ per weight otherwise); a name
        # that is not there (a parametrization, a plain tensor attribute) goes through getattr.
        params = self._parameters
        return [params[name] if name in params else getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """No-op, kept for drop-in compatibility: pyseq's kernels read the parameters where they are."""

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.proj_size != 0:
            s += ", proj_size={proj_size}"
        if self.num_layers != 1:
            s += ", num_layers={num_layers}"
        if self.bias is not True:
            s += ", bias={bias}"
        if self.batch_first is not False:
            s += ", batch_first={batch_first}"
        if self.dropout != 0:
            s += ", dropout={dropout}"
        if self.bidirectional is not False:
            s += ", bidirectional={bidirectional}"
        return s.format(**self.__dict__)

    def _forward(self, input, hx):
        # Straight to the functional layer's runner: a decoder step pays for every Python call on the way.
        return F._run(
            _MODE_IDS[self.mode],
            input,
            hx,
            self._flat_weights,
            self.num_layers,
            self.bidirectional,
            self.batch_first,
            self.dropout,
            self.training,
        )


class LSTM(_RNNBase):
    r"""Multi-layer LSTM, a drop-in for ``torch.nn.LSTM`` on pyseq's fused kernels.

    ``LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, proj_size=0, device=None, dtype=None)``

    Forward: ``output, (h_n, c_n) = lstm(input, (h_0, c_0))`` with ``input`` ``[T, B, I]`` (``[B, T, I]`` with
    ``batch_first``), unbatched ``[T, I]`` or a ``PackedSequence``; ``h_0 [L*D, B, Hr]``, ``c_0 [L*D, B, H]``
    (zeros when omitted); ``output [T, B, D*Hr]``; ``Hr`` is ``proj_size`` if set, else ``hidden_size``.
    Parameters ``weight_ih_l{k}[_reverse] [4H, I_k]``, ``weight_hh_l{k} [4H, Hr]``, ``bias_ih_l{k}``,
    ``bias_hh_l{k} [4H]``, ``weight_hr_l{k} [Hr, H]``; gate order i, f, g, o.
    """

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)

    def forward(self, input, hx=None):
        return self._forward(input, hx)


class GRU(_RNNBase):
    r"""Multi-layer GRU, a drop-in for ``torch.nn.GRU`` on pyseq's fused kernels.

    ``GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, device=None, dtype=None)``

    Forward: ``output, h_n = gru(input, h_0)``; shapes as in :class:`LSTM` with ``Hr = H``. Gate order r, z, n with
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`` and ``h' = (1 - z) * n + z * h``.
    """

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)

    def forward(self, input, hx=None):
        return self._forward(input, hx)


class RNN(_RNNBase):
    r"""Multi-layer Elman RNN with tanh or ReLU, a drop-in for ``torch.nn.RNN`` on pyseq's fused kernels.

    ``RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, device=None, dtype=None)``

    Forward: ``output, h_n = rnn(input, h_0)``; shapes as in :class:`GRU`. See :func:`init_irnn_` for the
    identity-initialized ReLU RNN.
    """

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 3:
            self.nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            self.nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if self.nonlinearity == "tanh":
            mode = "RNN_TANH"
        elif self.nonlinearity == "relu":
            mode = "RNN_RELU"
        else:
            raise ValueError(f"Unknown nonlinearity '{self.nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__(mode, *args, **kwargs)

    def forward(self, input, hx=None):
        return self._forward(input, hx)


def init_irnn_(module: nn.Module, scale: float = 1.0) -> nn.Module:
    """IRNN initialization (Le, Jaitly and Hinton, 2015): every recurrent weight ``weight_hh_l*`` set to
    ``scale * I`` and every bias to zero, input weights left as they are. Meant for ``RNN(...,
    nonlinearity='relu')``, where it lets a plain RNN carry information over long ranges. Works on ``pyseq.nn.RNN``
    and ``torch.nn.RNN`` alike; returns the module."""
    if getattr(module, "mode", None) not in ("RNN_TANH", "RNN_RELU"):
        raise TypeError(f"init_irnn_ expects an RNN module (pyseq.nn.RNN or torch.nn.RNN), got {type(module).__name__}")
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.startswith("weight_hh"):
                param.copy_(scale * torch.eye(param.shape[0], dtype=param.dtype, device=param.device))
            elif name.startswith("bias"):
                param.zero_()
    return module
