"""Recurrent layers: drop-in replacements for ``torch.nn.LSTM``, ``GRU`` and ``RNN`` on pyseq's fused kernels.

Constructor arguments, parameter names and shapes, default initialization (drawn from the RNG in the same order),
forward arguments and outputs are torch's, so ``state_dict``s load both ways and a seeded script gives the same run:
the layers are ``torch.nn.RNNBase`` subclasses, built by its constructor.
"""

from __future__ import annotations

import torch
from torch import nn

from ..functional.rnn import run_layers
from .._ops import rnn as _rnn_ops
from ._torchscript import NotScriptable

__all__ = ["LSTM", "GRU", "RNN", "init_irnn_"]

_MODE_IDS = {"LSTM": _rnn_ops.LSTM, "GRU": _rnn_ops.GRU, "RNN_TANH": _rnn_ops.RNN_TANH, "RNN_RELU": _rnn_ops.RNN_RELU}


def _reject(unsupported: dict) -> None:
    """The keyword arguments torch.nn.GRU and RNN reject, with their errors."""
    if "proj_size" in unsupported:
        raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
    if unsupported:
        raise TypeError(f"unexpected keyword arguments: {', '.join(sorted(unsupported))}")


class _RNNBase(NotScriptable, nn.RNNBase):
    """torch's ``nn.RNNBase`` (its constructor: argument checks, parameters, initialization; and its helpers:
    ``check_forward_args``, ``get_expected_hidden_size``, ``permute_hidden``, ``flatten_parameters``, ...) with
    pyseq's kernels behind ``forward``. Not a subclass of ``nn.LSTM``/``nn.GRU``/``nn.RNN`` themselves:
    ``torch.compile`` graph-breaks on instances of those three (Dynamo's RNN check), and pyseq's layers compile
    without one."""

    def _forward(self, input, hx):
        # Straight to the functional layer's runner: a decoder step pays for every Python call on the way. The
        # weights are read by name at every call, as torch.nn.LSTM refreshes its flat weights: what a name returns is
        # what torch.func.functional_call, stateless substitution and parametrizations (weight_norm, orthogonal)
        # make of it, never a list cached at construction.
        return run_layers(
            _MODE_IDS[self.mode],
            input,
            hx,
            [getattr(self, name) for name in self._flat_weights_names],
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

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device, dtype)

    # torch.nn.LSTM's helpers for its (h, c) state, in place of RNNBase's single-tensor ones
    get_expected_cell_size = nn.LSTM.get_expected_cell_size
    check_forward_args = nn.LSTM.check_forward_args
    permute_hidden = nn.LSTM.permute_hidden

    def forward(self, input, hx=None):
        return self._forward(input, hx)


class GRU(_RNNBase):
    r"""Multi-layer GRU, a drop-in for ``torch.nn.GRU`` on pyseq's fused kernels.

    ``GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, device=None, dtype=None)``

    Forward: ``output, h_n = gru(input, h_0)``; shapes as in :class:`LSTM` with ``Hr = H``. Gate order r, z, n with
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`` and ``h' = (1 - z) * n + z * h``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, device=None,
                 dtype=None, **unsupported):
        _reject(unsupported)
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         0, device, dtype)

    def forward(self, input, hx=None):
        return self._forward(input, hx)


class RNN(_RNNBase):
    r"""Multi-layer Elman RNN with tanh or ReLU, a drop-in for ``torch.nn.RNN`` on pyseq's fused kernels.

    ``RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, device=None, dtype=None)``

    Forward: ``output, h_n = rnn(input, h_0)``; shapes as in :class:`GRU`. See :func:`init_irnn_` for the
    identity-initialized ReLU RNN.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, **unsupported):
        _reject(unsupported)
        modes = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}
        if nonlinearity not in modes:
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        self.nonlinearity = nonlinearity
        super().__init__(modes[nonlinearity], input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, device, dtype)

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
