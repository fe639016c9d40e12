// The attention ops, called through the dispatcher: each function runs pyseq::<its name> on the kernel of its
// tensors' device. Schemas and autograd: attention_ops.cpp; kernels: attention_cpu.cpp, attention_cuda.cpp.
//
// Additive (Bahdanau) scores v . tanh(q_i + k_j) are computed without the [B, Tq, Tk, A] tensor; dot-product scores
// are scale * q . k; then the masked softmax, the weights and the context. Shapes: queries [B, Tq, *], keys
// [B, Tk, *], value [B, Tk, Dv]; mask: absent (attend everywhere) or a bool tensor [B, Tk] or [B, Tq, Tk], True =
// attend. A query row whose keys are all masked gets zero weights and a zero context (and zero gradients), never
// NaN. float32 or float64 (16-bit computed in float32, results in the 16-bit dtype).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace pyseq {

// query_proj: [B, Tq, A] (W_q q), key_proj: [B, Tk, A] (W_k k + b), v: [A]. key_exp2x [B, Tk, A] and key_maxabs
// [B, Tk]: absent, or exp(2 key_proj) (arguments clamped to +-40) and max |key_proj| over A, computed once for the
// keys of a decoding loop (they make each term a multiply, an add and a division). Returns (context [B, Tq, Dv],
// weights [B, Tq, Tk]).
std::tuple<at::Tensor, at::Tensor> additive_attention(const at::Tensor& query_proj, const at::Tensor& key_proj,
                                                      const at::Tensor& v, const at::Tensor& value,
                                                      const std::optional<at::Tensor>& mask,
                                                      const std::optional<at::Tensor>& key_exp2x,
                                                      const std::optional<at::Tensor>& key_maxabs);

// grad_context: [B, Tq, Dv]; grad_weights: [B, Tq, Tk] or absent. Returns the gradients for (query_proj, key_proj,
// v, value), recomputing the tanh terms (no [B, Tq, Tk, A] tensor).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> additive_attention_backward(
    const at::Tensor& grad_context, const std::optional<at::Tensor>& grad_weights, const at::Tensor& query_proj,
    const at::Tensor& key_proj, const at::Tensor& v, const at::Tensor& value, const at::Tensor& weights,
    const std::optional<at::Tensor>& key_exp2x, const std::optional<at::Tensor>& key_maxabs);

// query: [B, Tq, D], key: [B, Tk, D]: scores scale * q . k. Returns (context [B, Tq, Dv], weights [B, Tq, Tk]).
std::tuple<at::Tensor, at::Tensor> dot_attention(const at::Tensor& query, const at::Tensor& key,
                                                 const at::Tensor& value, const std::optional<at::Tensor>& mask,
                                                 double scale);

// Returns the gradients for (query, key, value).
std::tuple<at::Tensor, at::Tensor, at::Tensor> dot_attention_backward(const at::Tensor& grad_context,
                                                                      const std::optional<at::Tensor>& grad_weights,
                                                                      const at::Tensor& query, const at::Tensor& key,
                                                                      const at::Tensor& value,
                                                                      const at::Tensor& weights, double scale);

}  // namespace pyseq
