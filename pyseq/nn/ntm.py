"""The Neural Turing Machine (Graves, Wayne and Danihelka 2014) as a layer over whole sequences, on pyseq's LSTM and
its fused NTM memory ops: each time step's heads (activations, addressing, reads, writes) are one op,
pyseq.functional.ntm_step."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .. import functional as F
from ._torchscript import NotScriptable
from .rnn import LSTM


class NTMState(NamedTuple):
    """The state between steps: the controller's (h, c) ``[1, B, controller_size]`` each, the memory ``[B, N, M]``,
    the last read vectors ``[B, read_heads, M]`` and every head's weights ``[B, read_heads + write_heads, N]``
    (read heads first)."""

    controller: tuple[Tensor, Tensor]
    memory: Tensor
    reads: Tensor
    weights: Tensor


# A pytree node under a stable name, so that torch.export.save can write programs that take or return the state.
torch.utils._pytree._register_namedtuple(NTMState, serialized_type_name="pyseq.nn.NTMState")


class NTM(NotScriptable, nn.Module):
    """An NTM: an LSTM controller (``pyseq.nn.LSTM``) with read and write heads over an N x M memory.

    Args:
        input_size, output_size: sizes of the inputs and outputs per step.
        controller_size: the controller's hidden size.
        memory_size: ``(N, M)``: N rows of width M.
        read_heads, write_heads: the number of each.
        shift_range: r: each head shifts its weights by -r .. r rows (2r + 1 shifts).
        batch_first: inputs and outputs ``[B, T, *]`` instead of ``[T, B, *]``.

    Each step: the controller reads the input and the last read vectors; from its output every head emits a key
    (M), a key strength (softplus), an interpolation gate (sigmoid), a shift distribution (softmax over 2r + 1), a
    sharpening exponent (1 + softplus), and each write head an erase vector (sigmoid) and an add vector (tanh). All
    heads address the memory as it was at the start of the step; the read heads read it, then the write heads
    write in turn (all of it one op per step, ``pyseq.functional.ntm_step``). The output is a linear map of the
    controller's output and the new read vectors (logits: apply a sigmoid or softmax as the task needs).

    ``forward(x, state=None) -> (outputs [T, B, output_size], NTMState)``. The initial state (controller state,
    memory, read vectors, head weights) is learned, as in the common implementations, when ``state`` is None.
    """

    def __init__(self, input_size: int, output_size: int, controller_size: int, memory_size: tuple[int, int] = (128, 20),
                 read_heads: int = 1, write_heads: int = 1, shift_range: int = 1, batch_first: bool = False):
        super().__init__()
        N, M = memory_size
        if N < 1 or M < 1 or read_heads < 1 or write_heads < 0 or shift_range < 0:
            raise ValueError(f"need memory_size >= (1, 1), read_heads >= 1, write_heads >= 0 and shift_range >= 0, "
                             f"got {memory_size}, {read_heads}, {write_heads}, {shift_range}")
        self.memory_size, self.read_heads, self.write_heads = (N, M), read_heads, write_heads
        self.shifts, self.batch_first = 2 * shift_range + 1, batch_first
        self.controller = LSTM(input_size + read_heads * M, controller_size)
        self.address_size = M + 3 + self.shifts  # key, beta, gate, gamma, shift
        heads = read_heads + write_heads
        self.heads = nn.Linear(controller_size, heads * self.address_size + write_heads * 2 * M)
        self.out = nn.Linear(controller_size + read_heads * M, output_size)
        self.h0 = nn.Parameter(torch.zeros(1, 1, controller_size))
        self.c0 = nn.Parameter(torch.zeros(1, 1, controller_size))
        # Rows that differ and weights on row 0: with equal rows and uniform weights every row would look the same
        # to every head (and get the same gradient), so location-based addressing could never start.
        bound = (N + M) ** -0.5
        self.memory0 = nn.Parameter(torch.empty(1, N, M).uniform_(-bound, bound))
        self.reads0 = nn.Parameter(torch.randn(1, read_heads, M) * 0.01)
        self.weight_logits0 = nn.Parameter(torch.zeros(1, heads, N).index_fill_(2, torch.tensor([0]), 10.0))

    def initial_state(self, batch_size: int) -> NTMState:
        h0 = self.h0.expand(1, batch_size, -1).contiguous()
        c0 = self.c0.expand(1, batch_size, -1).contiguous()
        return NTMState((h0, c0), self.memory0.expand(batch_size, -1, -1), self.reads0.expand(batch_size, -1, -1),
                        torch.softmax(self.weight_logits0, -1).expand(batch_size, -1, -1))

    def step(self, x: Tensor, state: NTMState) -> tuple[Tensor, NTMState]:
        """One step: x ``[B, input_size]`` -> (output ``[B, output_size]``, state)."""
        B = x.shape[0]
        R, W, M = self.read_heads, self.write_heads, self.memory_size[1]
        out, controller = self.controller(torch.cat([x, state.reads.reshape(B, R * M)], 1).unsqueeze(0),
                                          state.controller)
        h = out[0]
        weights, reads, memory = F.ntm_step(state.memory, self.heads(h), state.weights, R, W)
        output = self.out(torch.cat([h, reads.reshape(B, R * M)], 1))
        return output, NTMState(controller, memory, reads, weights)

    def forward(self, x: Tensor, state: NTMState | None = None) -> tuple[Tensor, NTMState]:
        if x.dim() != 3:
            raise ValueError(f"NTM input must be 3-D ([T, B, input_size], or [B, T, input_size] with batch_first), "
                             f"got {x.dim()}-D")
        if self.batch_first:
            x = x.transpose(0, 1)
        if x.shape[0] == 0:
            raise ValueError("NTM input has no time steps (T = 0); the layer needs at least one")
        state = self.initial_state(x.shape[1]) if state is None else state
        outputs = []
        for t in range(x.shape[0]):
            output, state = self.step(x[t], state)
            outputs.append(output)
        outputs = torch.stack(outputs, 1 if self.batch_first else 0)
        return outputs, state
