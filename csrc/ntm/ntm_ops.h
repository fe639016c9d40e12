// The NTM memory ops (Graves, Wayne and Danihelka 2014), called through the dispatcher: each function runs
// pyseq::<its name> on the kernel of its tensors' device. The addressing of a head (equations 5-9), fused per head;
// the erase-then-add write (equations 3-4), fused in one pass over the memory; one step of all heads. Schemas and
// autograd: ntm_ops.cpp; kernels: ntm_cpu.cpp, ntm_step_cpu.cpp, ntm_cuda.cpp (the step on CUDA: ntm_step.cpp).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace pyseq {

using NtmAddressGradients =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using NtmWriteGradients = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using NtmStepTensors = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// memory [B, N, M], key [B, H, M], beta, gate, gamma [B, H], shift [B, H, S] (S odd: shift index s moves weight by
// s - (S - 1) / 2, circularly), prev_weights [B, H, N]. Returns the weights [B, H, N]:
//   w_c = softmax(beta K(key, memory rows)), w_g = gate w_c + (1 - gate) prev, w_s[i] = sum_s shift[s] w_g[i - s + r],
//   w = w_s^gamma / sum(w_s^gamma) (computed as (w_s / max w_s)^gamma, normalized, so that it does not underflow).
// The cosine similarity's epsilon is torch's: kNtmCosineEps (ntm_rows.h).
at::Tensor ntm_address(const at::Tensor& memory, const at::Tensor& key, const at::Tensor& beta, const at::Tensor& gate,
                       const at::Tensor& shift, const at::Tensor& gamma, const at::Tensor& prev_weights);

// grad_weights [B, H, N]. Returns the gradients for (memory, key, beta, gate, shift, gamma, prev_weights),
// recomputing the forward's intermediates per head.
NtmAddressGradients ntm_address_backward(const at::Tensor& grad_weights, const at::Tensor& memory,
                                         const at::Tensor& key, const at::Tensor& beta, const at::Tensor& gate,
                                         const at::Tensor& shift, const at::Tensor& gamma,
                                         const at::Tensor& prev_weights);

// memory [B, N, M], weights [B, N], erase [B, M], add [B, M]: memory * (1 - weights erase^T) + weights add^T.
at::Tensor ntm_write(const at::Tensor& memory, const at::Tensor& weights, const at::Tensor& erase,
                     const at::Tensor& add);

// grad_memory [B, N, M]. Returns the gradients for (memory, weights, erase, add).
NtmWriteGradients ntm_write_backward(const at::Tensor& grad_memory, const at::Tensor& memory, const at::Tensor& weights,
                                     const at::Tensor& erase, const at::Tensor& add);

// One step of an NTM's heads (pyseq.functional.ntm_step): memory [B, N, M], params [B, P] with
// P = (R + W) (M + 3 + S) + W 2 M (per head, read heads first: key M, key strength, gate, sharpening, S shift logits;
// then per write head: erase M, add M), prev_weights [B, R + W, N]. Returns (weights [B, R + W, N], reads [B, R, M],
// memory after the writes [B, N, M]).
NtmStepTensors ntm_step(const at::Tensor& memory, const at::Tensor& params, const at::Tensor& prev_weights,
                        int64_t read_heads, int64_t write_heads);

// grad_weights [B, R + W, N], grad_reads [B, R, M], grad_memory [B, N, M]; weights: the forward's. Returns the
// gradients of (memory, params, prev_weights).
NtmStepTensors ntm_step_backward(const at::Tensor& grad_weights, const at::Tensor& grad_reads,
                                 const at::Tensor& grad_memory, const at::Tensor& memory, const at::Tensor& params,
                                 const at::Tensor& prev_weights, const at::Tensor& weights, int64_t read_heads,
                                 int64_t write_heads);

}  // namespace pyseq
