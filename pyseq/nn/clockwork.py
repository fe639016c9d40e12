"""The Clockwork RNN (Koutnik, Greff, Gomez and Schmidhuber 2014) on pyseq's fused kernels, which compute only the
modules active at each step (pyseq.functional.clockwork_rnn)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..functional import clockwork as _clockwork
from ._torchscript import NotScriptable


class ClockworkRNN(NotScriptable, nn.Module):
    r"""A Clockwork RNN layer, with the inputs and outputs of a one-layer ``torch.nn.RNN``.

    ``ClockworkRNN(input_size, hidden_size, periods=(1, 2, 4, 8), nonlinearity='tanh', bias=True,
    batch_first=False, device=None, dtype=None)``

    The hidden state is ``len(periods)`` modules of ``hidden_size / len(periods)`` units; module m, period
    ``periods[m]`` (non-decreasing: the fastest first), updates at the steps t = 0, 1, ... with ``t % periods[m] ==
    0``, from the input and the modules at least as slow as itself, and keeps its state at the others
    (:func:`pyseq.functional.clockwork_rnn`). The paper's exponential periods are ``(1, 2, 4, ..., 2**(g-1))``.

    Forward: ``output, h_n = layer(input, h_0)`` with ``input`` ``[T, B, I]`` (``[B, T, I]`` with ``batch_first``),
    unbatched ``[T, I]`` or a ``PackedSequence``; ``h_0 [1, B, H]`` (zeros when omitted); ``output [T, B, H]`` (a
    ``PackedSequence`` for one); ``h_n [1, B, H]``, each sequence's state after its last step.

    Parameters: ``weight_ih [H, I]``, ``weight_hh [H, H]``, ``bias_ih``, ``bias_hh [H]``, initialized as
    ``torch.nn.RNN``'s, with the entries of ``weight_hh`` the layer does not read (``connectivity()`` False) set to
    zero; those get no gradient and stay zero.
    """

    def __init__(self, input_size: int, hidden_size: int, periods: Sequence[int] = (1, 2, 4, 8),
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False, device=None, dtype=None):
        super().__init__()
        if input_size < 0 or hidden_size < 1:
            raise ValueError(f"input_size must be non-negative and hidden_size positive, got {input_size} and "
                             f"{hidden_size}")
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        self.periods = _clockwork.check_periods(periods, hidden_size)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.nonlinearity, self.bias, self.batch_first = nonlinearity, bias, batch_first
        factory = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(hidden_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(hidden_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def connectivity(self) -> Tensor:
        """``[H, H]`` bool: the entries of ``weight_hh`` the layer reads (block-upper-triangular)."""
        return _clockwork.clockwork_connectivity(self.periods, self.hidden_size, device=self.weight_hh.device)

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)
        with torch.no_grad():
            self.weight_hh.mul_(self.connectivity())

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, periods={self.periods}"
        if self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        return s

    def forward(self, input: Tensor | PackedSequence, hx: Tensor | None = None):
        packed = isinstance(input, PackedSequence)
        lengths = None
        if packed:
            input, lengths = pad_packed_sequence(input)
        elif input.dim() == 2:
            output, h_n = self.forward(input.unsqueeze(1), None if hx is None else hx.unsqueeze(1))
            return output.squeeze(1), h_n.squeeze(1)
        elif input.dim() != 3:
            raise ValueError(f"ClockworkRNN: expected input to be 2-D or 3-D, got {input.dim()}-D")
        elif self.batch_first:
            input = input.transpose(0, 1)
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, got "
                               f"{input.shape[-1]}")
        batch = input.shape[1]
        if hx is not None and tuple(hx.shape) != (1, batch, self.hidden_size):
            raise RuntimeError(f"Expected hidden size {(1, batch, self.hidden_size)}, got {list(hx.shape)}")
        output, h_n = _clockwork.clockwork_rnn(
            input, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.periods,
            None if hx is None else hx[0], self.nonlinearity, lengths)
        if packed:
            output = pack_padded_sequence(output, lengths, enforce_sorted=False)
        elif self.batch_first:
            output = output.transpose(0, 1)
        return output, h_n.unsqueeze(0)
