// The memory-network ops (end-to-end memory networks, Sukhbaatar et al. 2015), called through the dispatcher: each
// function runs pyseq::<its name> on the kernel of its tensors' device. Schemas and autograd: memnet_ops.cpp;
// kernels: memnet_cpu.cpp, memnet_cuda.cpp; the element math: memnet_elements.h.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace pyseq {

// Position-encoded bags of words: table [V, D], indices [N, W] int64 (each in [0, V)), weights [W, D] (the position
// encoding: weights[j] scales the j-th word's vector), lengths [N] int64 (each in [0, W]: the words of each
// sentence; the indices past it are ignored). Returns [N, D]: out[n] = sum_{j < lengths[n]} weights[j] *
// table[indices[n, j]], without the [N, W, D] tensor of the word vectors.
at::Tensor position_encoded_bag(const at::Tensor& table, const at::Tensor& indices, const at::Tensor& weights,
                                const at::Tensor& lengths);

// grad [N, D]. Returns the gradients of (table [V, D], weights [W, D]); each table row sums the positions of its word
// in order (deterministic).
std::tuple<at::Tensor, at::Tensor> position_encoded_bag_backward(const at::Tensor& grad, const at::Tensor& table,
                                                                 const at::Tensor& indices, const at::Tensor& weights,
                                                                 const at::Tensor& lengths);

// K = hops hops of attention over memories: u [B, D] (the query's embedding, u_0), memory_in and memory_out
// [B, S, D] (the same memories every hop) or [K, B, S, D] (one pair per hop), mask [B, S] bool (True: the sentence
// is there) or absent, H [D, D] or absent. Per hop k: p = softmax over the kept sentences of memory_in[k] u_k,
// o = p memory_out[k], u_{k+1} = H u_k + o (u_k + o without H); a batch entry with no kept sentence reads nothing.
// Returns (states [K + 1, B, D]: u_0 .. u_K; weights [K, B, S]: p of every hop).
std::tuple<at::Tensor, at::Tensor> memory_hops(const at::Tensor& u, const at::Tensor& memory_in,
                                               const at::Tensor& memory_out, const std::optional<at::Tensor>& mask,
                                               int64_t hops, const std::optional<at::Tensor>& H, bool softmax);

// grad_states [K + 1, B, D], grad_weights [K, B, S] or absent; states, weights: the forward's. Returns the gradients
// of (u, memory_in, memory_out, H), H's empty when H is absent.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> memory_hops_backward(
    const at::Tensor& grad_states, const std::optional<at::Tensor>& grad_weights, const at::Tensor& memory_in,
    const at::Tensor& memory_out, const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& H,
    const at::Tensor& states, const at::Tensor& weights, bool softmax);

}  // namespace pyseq
