// The memory-network ops' device-independent schedule: argument checks, outputs, the argument structs of
// memnet_elements.h, the table gradient's sort into runs per word and the H gradient's GEMM (device-generic ATen);
// `Kernels` (CpuKernels: memnet_cpu.cpp's loops; CudaKernels: memnet_cuda.cpp's kernels) runs the per-element work.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "../common/checks.h"
#include "memnet_elements.h"

namespace pyseq {

// Every entry of `values` (int64, any device) in [0, top]: one reduction, one read on the host.
inline void check_range(const at::Tensor& values, const char* name, int64_t top, const char* what) {
  if (values.numel() == 0) return;
  const auto [low, high] = at::aminmax(values);
  const at::Tensor both = at::stack({low, high}).cpu();
  const int64_t lo = both.data_ptr<int64_t>()[0], hi = both.data_ptr<int64_t>()[1];
  TORCH_CHECK_INDEX(lo >= 0 && hi <= top, name, " must be in [0, ", top, "] (", what, "), got values in [", lo, ", ",
                    hi, "]");
}

// table [V, D], indices [N, W] int64, weights [W, D], lengths [N] int64 (each in [0, W]).
inline void check_bag(const at::Tensor& table, const at::Tensor& indices, const at::Tensor& weights,
                      const at::Tensor& lengths, c10::DeviceType device) {
  check_dim(table, "table", 2, "(num_embeddings, embedding_dim)");
  check_floating(table, "table");
  check_device_type(table, "table", device);
  check_dim(indices, "indices", 2, "(sentences, words)");
  TORCH_CHECK_TYPE(indices.scalar_type() == at::kLong, "indices must be int64, got ", indices.scalar_type());
  TORCH_CHECK(indices.device() == table.device(), "indices must be on the device of table (", table.device(),
              "), got ", indices.device());
  const int64_t N = indices.size(0), W = indices.size(1), D = table.size(1);
  check_shape(weights, "weights", {W, D});
  check_like(weights, "weights", table, "table");
  check_shape(lengths, "lengths", {N});
  TORCH_CHECK_TYPE(lengths.scalar_type() == at::kLong, "lengths must be int64, got ", lengths.scalar_type());
  TORCH_CHECK(lengths.device() == indices.device(), "lengths must be on the device of indices (", indices.device(),
              "), got ", lengths.device());
  check_range(lengths, "lengths", W, "words per sentence, W");
  check_range(indices, "indices", table.size(0) - 1, "rows of table");
}

template <typename T>
BagArgs<T> bag_args(const at::Tensor& table, const at::Tensor& indices, const at::Tensor& weights,
                    const at::Tensor& lengths) {
  BagArgs<T> a{};
  a.rows = indices.size(0);
  a.W = indices.size(1);
  a.D = table.size(1);
  a.V = table.size(0);
  a.table = table.data_ptr<T>();
  a.indices = indices.data_ptr<int64_t>();
  a.weights = weights.data_ptr<T>();
  a.lengths = lengths.data_ptr<int64_t>();
  return a;
}

template <typename Kernels>
at::Tensor position_encoded_bag_on(const Kernels& kernels, const at::Tensor& table, const at::Tensor& indices,
                                   const at::Tensor& weights, const at::Tensor& lengths) {
  check_bag(table, indices, weights, lengths, kernels.device());
  const at::Tensor tc = table.contiguous(), ic = indices.contiguous(), wc = weights.contiguous(),
                   lc = lengths.contiguous();
  at::Tensor out = at::empty({indices.size(0), table.size(1)}, table.options());
  AT_DISPATCH_FLOATING_TYPES(table.scalar_type(), "position_encoded_bag", [&] {
    BagArgs<scalar_t> a = bag_args<scalar_t>(tc, ic, wc, lc);
    a.out = out.data_ptr<scalar_t>();
    kernels.bag(a);
  });
  return out;
}

// grad [N, D]. Returns the gradients of (table, weights).
template <typename Kernels>
std::tuple<at::Tensor, at::Tensor> position_encoded_bag_backward_on(const Kernels& kernels, const at::Tensor& grad,
                                                                    const at::Tensor& table,
                                                                    const at::Tensor& indices,
                                                                    const at::Tensor& weights,
                                                                    const at::Tensor& lengths) {
  check_bag(table, indices, weights, lengths, kernels.device());
  check_shape(grad, "grad", {indices.size(0), table.size(1)});
  check_like(grad, "grad", table, "table");
  const at::Tensor tc = table.contiguous(), ic = indices.contiguous(), wc = weights.contiguous(),
                   lc = lengths.contiguous(), gc = grad.contiguous();
  const int64_t W = indices.size(1);
  // The word positions p = row * W + j (j < lengths[row]), grouped by word in a stable sort: each word's gradient
  // row sums its positions in their order, whatever the device.
  const at::Tensor valid = at::arange(W, lc.options()).unsqueeze(0) < lc.unsqueeze(1);  // [N, W]
  const at::Tensor positions = at::nonzero(valid.reshape({-1})).reshape({-1});
  const auto [sorted_words, order] = at::sort(ic.reshape({-1}).index_select(0, positions), /*stable=*/true, 0,
                                              /*descending=*/false);
  const at::Tensor sorted_positions = positions.index_select(0, order).contiguous();
  const auto [words, inverse, counts] = at::unique_consecutive(sorted_words, false, true);
  const at::Tensor first = (counts.cumsum(0) - counts).contiguous(), words_c = words.contiguous(),
                   counts_c = counts.contiguous();
  at::Tensor d_table = at::zeros(table.sizes(), table.options());
  at::Tensor d_weights = at::empty(weights.sizes(), weights.options());
  AT_DISPATCH_FLOATING_TYPES(table.scalar_type(), "position_encoded_bag_backward", [&] {
    using T = scalar_t;
    BagArgs<T> a = bag_args<T>(tc, ic, wc, lc);
    a.grad = gc.data_ptr<T>();
    a.d_weights = d_weights.data_ptr<T>();
    kernels.bag_weight_gradients(a);
    const BagTableGradientArgs<T> t{words_c.numel(),
                                    table.size(1),
                                    words_c.data_ptr<int64_t>(),
                                    first.data_ptr<int64_t>(),
                                    counts_c.data_ptr<int64_t>(),
                                    sorted_positions.data_ptr<int64_t>(),
                                    W,
                                    wc.data_ptr<T>(),
                                    gc.data_ptr<T>(),
                                    d_table.data_ptr<T>()};
    kernels.bag_table_gradient(t);
  });
  return {d_table, d_weights};
}

// u [B, D]; memory_in and memory_out [B, S, D] (every hop) or [K, B, S, D] (one per hop); mask [B, S] bool;
// H [D, D]. Returns the number of hops K after checking it against hops.
inline int64_t check_hops(const at::Tensor& u, const at::Tensor& memory_in, const at::Tensor& memory_out,
                          const std::optional<at::Tensor>& mask, int64_t hops, const std::optional<at::Tensor>& H,
                          c10::DeviceType device) {
  check_dim(u, "u", 2, "(batch, embedding_dim)");
  check_floating(u, "u");
  check_device_type(u, "u", device);
  TORCH_CHECK_VALUE(hops >= 1, "hops must be at least 1, got ", hops);
  TORCH_CHECK_VALUE(memory_in.dim() == 3 || memory_in.dim() == 4,
                    "memory_in must be 3-D (batch, sentences, embedding_dim) or 4-D (hops, batch, sentences, "
                    "embedding_dim), got ",
                    memory_in.dim(), "-D");
  const int64_t B = u.size(0), D = u.size(1), S = memory_in.size(-2);
  std::vector<int64_t> shape{B, S, D};
  if (memory_in.dim() == 4) shape.insert(shape.begin(), hops);
  check_shape(memory_in, "memory_in", shape);
  check_shape(memory_out, "memory_out", shape);
  check_like(memory_in, "memory_in", u, "u");
  check_like(memory_out, "memory_out", u, "u");
  if (mask) {
    check_shape(*mask, "mask", {B, S});
    TORCH_CHECK_TYPE(mask->scalar_type() == at::kBool, "mask must be bool, got ", mask->scalar_type());
    TORCH_CHECK(mask->device() == u.device(), "mask must be on the device of u (", u.device(), "), got ",
                mask->device());
  }
  if (H) {
    check_shape(*H, "H", {D, D});
    check_like(*H, "H", u, "u");
  }
  return hops;
}

// The inputs of the hops, contiguous, kept alive for the argument struct.
struct HopInputs {
  at::Tensor memory_in, memory_out, mask, H;
  HopInputs(const at::Tensor& in, const at::Tensor& out, const std::optional<at::Tensor>& m,
            const std::optional<at::Tensor>& h)
      : memory_in(in.contiguous()),
        memory_out(out.contiguous()),
        mask(m ? m->contiguous() : at::Tensor()),
        H(h ? h->contiguous() : at::Tensor()) {}

  template <typename T>
  HopArgs<T> args(int64_t K, int64_t B, int64_t D, bool softmax) const {
    HopArgs<T> a{};
    a.softmax = softmax;
    a.K = K;
    a.B = B;
    a.S = memory_in.size(-2);
    a.D = D;
    a.memory_in = memory_in.data_ptr<T>();
    a.memory_out = memory_out.data_ptr<T>();
    a.hop_stride = memory_in.dim() == 4 ? B * a.S * D : 0;
    a.mask = mask.defined() ? reinterpret_cast<const uint8_t*>(mask.data_ptr<bool>()) : nullptr;
    a.H = H.defined() ? H.data_ptr<T>() : nullptr;
    return a;
  }
};

// Returns (states [K + 1, B, D]: u_0 = u, then u after each hop; weights [K, B, S]). softmax false: linear weights.
template <typename Kernels>
std::tuple<at::Tensor, at::Tensor> memory_hops_on(const Kernels& kernels, const at::Tensor& u,
                                                  const at::Tensor& memory_in, const at::Tensor& memory_out,
                                                  const std::optional<at::Tensor>& mask, int64_t hops,
                                                  const std::optional<at::Tensor>& H, bool softmax) {
  const int64_t K = check_hops(u, memory_in, memory_out, mask, hops, H, kernels.device());
  const int64_t B = u.size(0), D = u.size(1), S = memory_in.size(-2);
  const HopInputs in(memory_in, memory_out, mask, H);
  at::Tensor states = at::empty({K + 1, B, D}, u.options());
  states.select(0, 0).copy_(u);
  at::Tensor weights = at::empty({K, B, S}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "memory_hops", [&] {
    HopArgs<scalar_t> a = in.args<scalar_t>(K, B, D, softmax);
    a.states = states.data_ptr<scalar_t>();
    a.weights = weights.data_ptr<scalar_t>();
    kernels.hops(a);
  });
  return {states, weights};
}

// grad_states [K + 1, B, D], grad_weights [K, B, S] or absent; states and weights: the forward's. Returns the
// gradients of (u, memory_in, memory_out, H) (H's: empty when H is absent).
template <typename Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> memory_hops_backward_on(
    const Kernels& kernels, const at::Tensor& grad_states, const std::optional<at::Tensor>& grad_weights,
    const at::Tensor& memory_in, const at::Tensor& memory_out, const std::optional<at::Tensor>& mask,
    const std::optional<at::Tensor>& H, const at::Tensor& states, const at::Tensor& weights, bool softmax) {
  check_dim(states, "states", 3, "(hops + 1, batch, embedding_dim)");
  const int64_t K = states.size(0) - 1, B = states.size(1), D = states.size(2);
  check_hops(states.select(0, 0), memory_in, memory_out, mask, K, H, kernels.device());
  const int64_t S = memory_in.size(-2);
  check_shape(weights, "weights", {K, B, S});
  check_like(weights, "weights", states, "states");
  check_shape(grad_states, "grad_states", {K + 1, B, D});
  check_like(grad_states, "grad_states", states, "states");
  if (grad_weights) {
    check_shape(*grad_weights, "grad_weights", {K, B, S});
    check_like(*grad_weights, "grad_weights", states, "states");
  }
  const HopInputs in(memory_in, memory_out, mask, H);
  const at::Tensor sc = states.contiguous(), wc = weights.contiguous(), gs = grad_states.contiguous();
  const at::Tensor gw = grad_weights ? grad_weights->contiguous() : at::Tensor();
  const auto opts = states.options();
  at::Tensor d_states = at::empty({K, B, D}, opts), d_query = at::empty({B, D}, opts);
  at::Tensor d_memory_in = at::empty(memory_in.sizes(), opts), d_memory_out = at::empty(memory_in.sizes(), opts);
  AT_DISPATCH_FLOATING_TYPES(states.scalar_type(), "memory_hops_backward", [&] {
    using T = scalar_t;
    HopArgs<T> a = in.args<T>(K, B, D, softmax);
    a.states = sc.data_ptr<T>();
    a.weights = wc.data_ptr<T>();
    a.grad_states = gs.data_ptr<T>();
    a.grad_weights = gw.defined() ? gw.data_ptr<T>() : nullptr;
    a.d_states = d_states.data_ptr<T>();
    a.d_query = d_query.data_ptr<T>();
    a.d_memory_in = d_memory_in.data_ptr<T>();
    a.d_memory_out = d_memory_out.data_ptr<T>();
    kernels.hops_backward(a);
  });
  // u_{k+1} = H u_k + o_k: d H = sum over hops and the batch of d u_{k+1} u_k^T, one GEMM.
  const at::Tensor d_H = H ? at::mm(d_states.reshape({K * B, D}).t(), sc.narrow(0, 0, K).reshape({K * B, D}))
                           : at::empty({0}, opts);
  return {d_query, d_memory_in, d_memory_out, d_H};
}

}  // namespace pyseq
