"""The ops of the NTM memory kernels (csrc/ntm), registered in C++ with their autograd (csrc/ntm/ntm_ops.cpp); their
fake kernels are here.

- ``pyseq::ntm_address(memory [B, N, M], key [B, H, M], beta [B, H], gate [B, H], shift [B, H, S], gamma [B, H],
  prev_weights [B, H, N]) -> weights [B, H, N]`` and its backward (the gradients of all seven inputs);
- ``pyseq::ntm_write(memory [B, N, M], weights [B, N], erase [B, M], add [B, M]) -> memory [B, N, M]`` and its backward;
- ``pyseq::ntm_step(memory [B, N, M], params [B, P], prev_weights [B, R + W, N], read_heads R, write_heads W) ->
  (weights [B, R + W, N], reads [B, R, M], memory [B, N, M])`` (csrc/ntm/ntm_step.cpp) and its backward (the
  gradients of memory, params and prev_weights).

Results are contiguous whatever the inputs' strides.
"""

from __future__ import annotations

import torch

from .checks import check_same_device

ntm_address = torch.ops.pyseq.ntm_address
ntm_write = torch.ops.pyseq.ntm_write
ntm_step = torch.ops.pyseq.ntm_step


def _check_devices(memory, **more):
    check_same_device("memory", memory, *more.items())


@torch.library.register_fake("pyseq::ntm_address")
def _ntm_address_fake(memory, key, beta, gate, shift, gamma, prev_weights):
    _check_devices(memory, key=key, beta=beta, gate=gate, shift=shift, gamma=gamma, prev_weights=prev_weights)
    return memory.new_empty(key.shape[0], key.shape[1], memory.shape[1])


@torch.library.register_fake("pyseq::ntm_address_backward")
def _ntm_address_backward_fake(grad_weights, memory, key, beta, gate, shift, gamma, prev_weights):
    _check_devices(memory, grad_weights=grad_weights, key=key, beta=beta, gate=gate, shift=shift, gamma=gamma,
                   prev_weights=prev_weights)
    return tuple(memory.new_empty(t.shape) for t in (memory, key, beta, gate, shift, gamma, prev_weights))


@torch.library.register_fake("pyseq::ntm_write")
def _ntm_write_fake(memory, weights, erase, add):
    _check_devices(memory, weights=weights, erase=erase, add=add)
    return memory.new_empty(memory.shape)


@torch.library.register_fake("pyseq::ntm_write_backward")
def _ntm_write_backward_fake(grad_memory, memory, weights, erase, add):
    _check_devices(memory, grad_memory=grad_memory, weights=weights, erase=erase, add=add)
    return tuple(memory.new_empty(t.shape) for t in (memory, weights, erase, add))


@torch.library.register_fake("pyseq::ntm_step")
def _ntm_step_fake(memory, params, prev_weights, read_heads, write_heads):
    _check_devices(memory, params=params, prev_weights=prev_weights)
    B, N, M = memory.shape
    return (memory.new_empty(B, read_heads + write_heads, N), memory.new_empty(B, read_heads, M),
            memory.new_empty(B, N, M))


@torch.library.register_fake("pyseq::ntm_step_backward")
def _ntm_step_backward_fake(grad_weights, grad_reads, grad_memory, memory, params, prev_weights, weights, read_heads,
                            write_heads):
    _check_devices(memory, grad_weights=grad_weights, grad_reads=grad_reads, grad_memory=grad_memory, params=params,
                   prev_weights=prev_weights, weights=weights)
    return tuple(memory.new_empty(t.shape) for t in (memory, params, prev_weights))
