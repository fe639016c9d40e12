// Argument checks shared by the attention kernels of every backend (see attention.h for the shapes).
#pragma once

#include <ATen/ATen.h>

#include <utility>

#include "../common/checks.h"
#include "attention_elements.h"

namespace pyseq {

// queries: [B, Tq, *], keys: [B, Tk, *], value: [B, Tk, Dv], all of one floating dtype on a `device` device; mask:
// undefined or bool [B, Tk] / [B, Tq, Tk] on the device of the queries. Returns the mask's view.
inline MaskView check_attention(const at::Tensor& queries, const char* q_name, const at::Tensor& keys,
                                const char* k_name, const at::Tensor& value, const at::Tensor& mask,
                                c10::DeviceType device = c10::kCPU) {
  check_dim(queries, q_name, 3, "(batch, query_len, features)");
  check_dim(keys, k_name, 3, "(batch, key_len, features)");
  check_dim(value, "value", 3, "(batch, key_len, value_size)");
  check_floating(queries, q_name);
  check_device_type(queries, q_name, device);
  check_like(keys, k_name, queries, q_name);
  check_like(value, "value", queries, q_name);
  const int64_t B = queries.size(0), Tq = queries.size(1), Tk = keys.size(1);
  TORCH_CHECK_VALUE(keys.size(0) == B && value.size(0) == B, "batch sizes differ: ", q_name, " has ", B, ", ", k_name,
                    " ", keys.size(0), ", value ", value.size(0));
  TORCH_CHECK_VALUE(value.size(1) == Tk, "value must have one row per key: ", k_name, " has ", Tk,
                    " keys, value has ", value.size(1));
  TORCH_CHECK_VALUE(Tk >= 1, k_name, " must hold at least one key, got key_len = 0");
  MaskView m;
  if (!mask.defined()) return m;
  TORCH_CHECK_TYPE(mask.scalar_type() == at::kBool, "mask must be bool (True = attend), got ", mask.scalar_type());
  TORCH_CHECK(mask.device() == queries.device(), "mask must be on the device of ", q_name, " (", queries.device(),
              "), got ", mask.device());
  if (mask.dim() == 2) {
    TORCH_CHECK_VALUE(mask.size(0) == B && mask.size(1) == Tk, "mask must have shape [", B, ", ", Tk, "] or [", B,
                      ", ", Tq, ", ", Tk, "], got ", shape_str(mask.sizes()));
    m = {mask.data_ptr<bool>(), mask.stride(0), 0, mask.stride(1)};
  } else {
    TORCH_CHECK_VALUE(mask.dim() == 3 && mask.size(0) == B && mask.size(1) == Tq && mask.size(2) == Tk,
                      "mask must have shape [", B, ", ", Tk, "] or [", B, ", ", Tq, ", ", Tk, "], got ",
                      shape_str(mask.sizes()));
    m = {mask.data_ptr<bool>(), mask.stride(0), mask.stride(1), mask.stride(2)};
  }
  return m;
}

// The additive arguments beyond check_attention's: key_proj [B, Tk, A] with the A of query_proj, v [A].
inline void check_additive(const at::Tensor& query_proj, const at::Tensor& key_proj, const at::Tensor& v) {
  const int64_t A = query_proj.size(2);
  TORCH_CHECK_VALUE(key_proj.size(2) == A, "query_proj and key_proj must have the same attention size, got ", A,
                    " and ", key_proj.size(2));
  check_dim(v, "v", 1, "(attn_size,)");
  TORCH_CHECK_VALUE(v.size(0) == A, "v must have attn_size = ", A, " entries, got ", v.size(0));
  check_like(v, "v", query_proj, "query_proj");
}

// key_exp2x [B, Tk, A] and key_maxabs [B, Tk] of the dtype of key_proj, both given or both undefined. Returns them
// contiguous.
inline std::pair<at::Tensor, at::Tensor> check_key_factors(const at::Tensor& key_exp2x, const at::Tensor& key_maxabs,
                                                           const at::Tensor& key_proj) {
  TORCH_CHECK_VALUE(key_exp2x.defined() == key_maxabs.defined(), "key_exp2x and key_maxabs go together");
  if (!key_exp2x.defined()) return {};
  check_shape(key_exp2x, "key_exp2x", key_proj.sizes().vec());
  check_shape(key_maxabs, "key_maxabs", {key_proj.size(0), key_proj.size(1)});
  check_like(key_exp2x, "key_exp2x", key_proj, "key_proj");
  check_like(key_maxabs, "key_maxabs", key_proj, "key_proj");
  return {key_exp2x.contiguous(), key_maxabs.contiguous()};
}

inline void check_backward_inputs(const at::Tensor& grad_context, const at::Tensor& grad_weights,
                                  const at::Tensor& weights, int64_t B, int64_t Tq, int64_t Tk, int64_t Dv) {
  check_shape(grad_context, "grad_context", {B, Tq, Dv});
  check_shape(weights, "weights", {B, Tq, Tk});
  if (grad_weights.defined()) check_shape(grad_weights, "grad_weights", {B, Tq, Tk});
}

}  // namespace pyseq
