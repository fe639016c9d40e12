"""The Structurally Constrained Recurrent Network (Mikolov et al. 2015) on pyseq's fused kernels
(pyseq.functional.scrn): a slow context state beside a fast hidden state."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .. import functional as F
from ._torchscript import NotScriptable


class SCRN(NotScriptable, nn.Module):
    r"""An SCRN layer: ``s_t = (1 - alpha) B x_t + alpha s_{t-1}`` (the slow context, ``context_size`` units) and
    ``h_t = sigmoid(P s_t + A x_t + R h_{t-1} + b)`` (the fast hidden state, ``hidden_size`` units).

    ``SCRN(input_size, hidden_size, context_size, alpha=0.95, nonlinearity='sigmoid', bias=True, batch_first=False,
    device=None, dtype=None)``

    Forward: ``output, (h_n, s_n) = layer(input, (h_0, s_0))`` with ``input`` ``[T, B, I]`` (``[B, T, I]`` with
    ``batch_first``), unbatched ``[T, I]`` or a ``PackedSequence``; ``h_0 [1, B, H]`` and ``s_0 [1, B, C]`` (zeros
    when omitted); ``output [T, B, H + C]``: ``[h_t, s_t]`` (a ``PackedSequence`` for one), which an output layer
    reads as the paper's ``y_t = f(U h_t + V s_t)``; ``h_n [1, B, H]``, ``s_n [1, B, C]``, each sequence's states
    after its last step.

    Parameters: ``weight_ih [H, I]`` (A), ``weight_hh [H, H]`` (R), ``weight_ic [C, I]`` (B), ``weight_ch [H, C]``
    (P), ``bias [H]``, drawn uniformly from ±1/sqrt(H) as ``torch.nn.RNN``'s. ``alpha`` is fixed, as in the paper.
    """

    def __init__(self, input_size: int, hidden_size: int, context_size: int, alpha: float = 0.95,
                 nonlinearity: str = "sigmoid", bias: bool = True, batch_first: bool = False, device=None,
                 dtype=None):
        super().__init__()
        if input_size < 0 or hidden_size < 1 or context_size < 0:
            raise ValueError(f"input_size and context_size must be non-negative and hidden_size positive, got "
                             f"{input_size}, {hidden_size} and {context_size}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if nonlinearity not in ("sigmoid", "tanh"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'sigmoid' or 'tanh'.")
        self.input_size, self.hidden_size, self.context_size = input_size, hidden_size, context_size
        self.alpha, self.nonlinearity, self.batch_first = float(alpha), nonlinearity, batch_first
        factory = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size, **factory))
        self.weight_ic = nn.Parameter(torch.empty(context_size, input_size, **factory))
        self.weight_ch = nn.Parameter(torch.empty(hidden_size, context_size, **factory))
        self.bias = nn.Parameter(torch.empty(hidden_size, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, {self.context_size}, alpha={self.alpha}"
        if self.nonlinearity != "sigmoid":
            s += f", nonlinearity={self.nonlinearity!r}"
        if self.bias is None:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        return s

    def forward(self, input: Tensor | PackedSequence, hx: tuple[Tensor, Tensor] | None = None):
        packed = isinstance(input, PackedSequence)
        lengths = None
        if packed:
            input, lengths = pad_packed_sequence(input)
        elif input.dim() == 2:
            state = None if hx is None else tuple(h.unsqueeze(1) for h in hx)
            output, (h_n, s_n) = self.forward(input.unsqueeze(1), state)
            return output.squeeze(1), (h_n.squeeze(1), s_n.squeeze(1))
        elif input.dim() != 3:
            raise ValueError(f"SCRN: expected input to be 2-D or 3-D, got {input.dim()}-D")
        elif self.batch_first:
            input = input.transpose(0, 1)
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, got "
                               f"{input.shape[-1]}")
        batch = input.shape[1]
        if hx is not None:
            for h, size, name in zip(hx, (self.hidden_size, self.context_size), ("h_0", "s_0")):
                if tuple(h.shape) != (1, batch, size):
                    raise RuntimeError(f"Expected {name} of size {(1, batch, size)}, got {list(h.shape)}")
            hx = (hx[0][0], hx[1][0])
        hidden, context, h_n, s_n = F.scrn(
            input, self.weight_ih, self.weight_hh, self.weight_ic, self.weight_ch, self.bias, self.alpha, hx,
            self.nonlinearity, lengths)
        output = torch.cat([hidden, context], -1)
        if packed:
            output = pack_padded_sequence(output, lengths, enforce_sorted=False)
        elif self.batch_first:
            output = output.transpose(0, 1)
        return output, (h_n.unsqueeze(0), s_n.unsqueeze(0))
