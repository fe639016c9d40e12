"""The ops of the memory-network kernels (csrc/memnet), registered in C++ with their autograd
(csrc/memnet/memnet_ops.cpp); their fake kernels are here.

- ``pyseq::position_encoded_bag(table [V, D], indices [N, W], weights [W, D], lengths [N]) -> [N, D]`` and its
  backward (the gradients of table and weights);
- ``pyseq::memory_hops(u [B, D], memory_in, memory_out ([B, S, D] or [K, B, S, D]), mask [B, S]?, hops K, H [D, D]?,
  softmax) -> (states [K + 1, B, D], weights [K, B, S])`` and its backward (the gradients of u, both memories and H).

Results are contiguous whatever the inputs' strides; 16-bit inputs give 16-bit results.
"""

from __future__ import annotations

import torch

from .checks import check_same_device

position_encoded_bag = torch.ops.pyseq.position_encoded_bag
memory_hops = torch.ops.pyseq.memory_hops


@torch.library.register_fake("pyseq::position_encoded_bag")
def _position_encoded_bag_fake(table, indices, weights, lengths):
    check_same_device("table", table, ("indices", indices), ("weights", weights), ("lengths", lengths))
    return table.new_empty(indices.shape[0], table.shape[1])


@torch.library.register_fake("pyseq::position_encoded_bag_backward")
def _position_encoded_bag_backward_fake(grad, table, indices, weights, lengths):
    check_same_device("table", table, ("grad", grad), ("indices", indices), ("weights", weights),
                      ("lengths", lengths))
    return table.new_empty(table.shape), table.new_empty(weights.shape)


@torch.library.register_fake("pyseq::memory_hops")
def _memory_hops_fake(u, memory_in, memory_out, mask, hops, H, softmax):
    check_same_device("u", u, ("memory_in", memory_in), ("memory_out", memory_out), ("mask", mask), ("H", H))
    return u.new_empty(hops + 1, *u.shape), u.new_empty(hops, u.shape[0], memory_in.shape[-2])


@torch.library.register_fake("pyseq::memory_hops_backward")
def _memory_hops_backward_fake(grad_states, grad_weights, memory_in, memory_out, mask, H, states, weights, softmax):
    check_same_device("states", states, ("grad_states", grad_states), ("grad_weights", grad_weights),
                      ("memory_in", memory_in), ("memory_out", memory_out), ("mask", mask), ("H", H),
                      ("weights", weights))
    d_h = states.new_empty(H.shape) if H is not None else states.new_empty(0)
    return (states.new_empty(states.shape[1:]), states.new_empty(memory_in.shape), states.new_empty(memory_in.shape),
            d_h)
