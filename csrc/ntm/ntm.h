// Neural Turing Machine memory (Graves, Wayne and Danihelka 2014): the addressing of a head (equations 5-9), fused
// per head, and the erase-then-add write (equations 3-4), fused in one pass over the memory; forward and backward.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace pyseq {

// memory [B, N, M], key [B, H, M], beta, gate, gamma [B, H], shift [B, H, S] (S odd: shift index s moves weight by
// s - (S - 1) / 2, circularly), prev_weights [B, H, N]. Returns the weights [B, H, N]:
//   w_c = softmax(beta K(key, memory rows)), w_g = gate w_c + (1 - gate) prev, w_s[i] = sum_s shift[s] w_g[i - s + r],
//   w = w_s^gamma / sum(w_s^gamma) (computed as (w_s / max w_s)^gamma, normalized, so that it does not underflow).
// The cosine similarity's epsilon is torch's: kNtmCosineEps (ntm_rows.h).
at::Tensor ntm_address_cpu(const at::Tensor& memory, const at::Tensor& key, const at::Tensor& beta,
                           const at::Tensor& gate, const at::Tensor& shift, const at::Tensor& gamma,
                           const at::Tensor& prev_weights);

// grad_weights [B, H, N]. Returns the gradients for (memory, key, beta, gate, shift, gamma, prev_weights),
// recomputing the forward's intermediates per head.
std::vector<at::Tensor> ntm_address_backward_cpu(const at::Tensor& grad_weights, const at::Tensor& memory,
                                                 const at::Tensor& key, const at::Tensor& beta, const at::Tensor& gate,
                                                 const at::Tensor& shift, const at::Tensor& gamma,
                                                 const at::Tensor& prev_weights);

// memory [B, N, M], weights [B, N], erase [B, M], add [B, M]: memory * (1 - weights erase^T) + weights add^T.
at::Tensor ntm_write_cpu(const at::Tensor& memory, const at::Tensor& weights, const at::Tensor& erase,
                         const at::Tensor& add);

// grad_memory [B, N, M]. Returns the gradients for (memory, weights, erase, add).
std::vector<at::Tensor> ntm_write_backward_cpu(const at::Tensor& grad_memory, const at::Tensor& memory,
                                               const at::Tensor& weights, const at::Tensor& erase,
                                               const at::Tensor& add);

}  // namespace pyseq
