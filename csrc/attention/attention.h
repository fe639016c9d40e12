// Attention for sequence-to-sequence models: additive (Bahdanau) scores v . tanh(q_i + k_j) computed without the
// [B, Tq, Tk, A] tensor, and dot-product scores; masked softmax, weights and context, forward and backward.
//
// Shapes: queries [B, Tq, *], keys [B, Tk, *], value [B, Tk, Dv]; mask: an undefined tensor (attend everywhere) or a
// bool tensor [B, Tk] or [B, Tq, Tk], True = attend. A query row whose keys are all masked gets zero weights and a
// zero context (and zero gradients), never NaN. float32 or float64 on the CPU.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <vector>

namespace pyseq {

// query_proj: [B, Tq, A] (W_q q), key_proj: [B, Tk, A] (W_k k + b), v: [A]. key_exp2x [B, Tk, A] and key_maxabs
// [B, Tk]: undefined, or exp(2 key_proj) (arguments clamped to +-40) and max |key_proj| over A, computed once for
// the keys of a decoding loop (they make each term a multiply, an add and a division). Returns (context [B, Tq, Dv],
// weights [B, Tq, Tk]).
std::vector<at::Tensor> additive_attention_forward_cpu(const at::Tensor& query_proj, const at::Tensor& key_proj,
                                                       const at::Tensor& v, const at::Tensor& value,
                                                       const at::Tensor& mask, const at::Tensor& key_exp2x,
                                                       const at::Tensor& key_maxabs);

// grad_context: [B, Tq, Dv]; grad_weights: [B, Tq, Tk] or undefined. Returns the gradients for (query_proj, key_proj,
// v, value), recomputing the tanh terms (no [B, Tq, Tk, A] tensor).
std::vector<at::Tensor> additive_attention_backward_cpu(const at::Tensor& grad_context, const at::Tensor& grad_weights,
                                                        const at::Tensor& query_proj, const at::Tensor& key_proj,
                                                        const at::Tensor& v, const at::Tensor& value,
                                                        const at::Tensor& weights, const at::Tensor& key_exp2x,
                                                        const at::Tensor& key_maxabs);

// query: [B, Tq, D], key: [B, Tk, D]: scores scale * q . k. Returns (context [B, Tq, Dv], weights [B, Tq, Tk]).
std::vector<at::Tensor> dot_attention_forward_cpu(const at::Tensor& query, const at::Tensor& key,
                                                  const at::Tensor& value, const at::Tensor& mask, double scale);

// Returns the gradients for (query, key, value).
std::vector<at::Tensor> dot_attention_backward_cpu(const at::Tensor& grad_context, const at::Tensor& grad_weights,
                                                   const at::Tensor& query, const at::Tensor& key,
                                                   const at::Tensor& value, const at::Tensor& weights, double scale);

}  // namespace pyseq
