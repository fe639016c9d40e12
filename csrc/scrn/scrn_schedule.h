// The SCRN's device-independent schedule: argument checks, outputs, the context state's argument struct
// (scrn_elements.h), the products with the context by GEMMs (device-generic ATen), and the hidden layer as a
// Clockwork RNN of one module of period 1 (clockwork_schedule.h). `Kernels` (ScrnCpuKernels: scrn_cpu.cpp;
// ScrnCudaKernels: scrn_cuda.cpp) runs the time loops: the context's (context, context_backward) and the Clockwork
// RNN's (forward, backward).
#pragma once

#include <ATen/ATen.h>

#include <tuple>
#include <vector>

#include "../clockwork/clockwork_schedule.h"
#include "../common/checks.h"
#include "scrn_elements.h"

namespace pyseq {

// input_proj [T, B, H], context_proj [T, B, C], h0 [B, H], s0 [B, C], w_hh [H, H], w_ch [H, C], alpha in [0, 1],
// lengths [B] int64 on the CPU.
inline void check_scrn(const at::Tensor& input_proj, const at::Tensor& context_proj, const at::Tensor& h0,
                       const at::Tensor& s0, const at::Tensor& w_hh, const at::Tensor& w_ch, double alpha,
                       const at::Tensor& lengths, c10::DeviceType device) {
  check_dim(input_proj, "input_proj", 3, "(T, batch, hidden_size)");
  check_floating(input_proj, "input_proj");
  check_device_type(input_proj, "input_proj", device);
  const int64_t T = input_proj.size(0), B = input_proj.size(1), H = input_proj.size(2);
  check_dim(context_proj, "context_proj", 3, "(T, batch, context_size)");
  const int64_t C = context_proj.size(2);
  check_shape(context_proj, "context_proj", {T, B, C});
  check_like(context_proj, "context_proj", input_proj, "input_proj");
  for (const auto& [t, name, shape] :
       {std::tuple<const at::Tensor&, const char*, std::vector<int64_t>>{h0, "h0", {B, H}},
        {s0, "s0", {B, C}},
        {w_hh, "weight_hh", {H, H}},
        {w_ch, "weight_ch", {H, C}}}) {
    check_shape(t, name, shape);
    check_like(t, name, input_proj, "input_proj");
  }
  TORCH_CHECK_VALUE(alpha >= 0 && alpha <= 1, "alpha must be in [0, 1], got ", alpha);
  read_lengths(lengths, "lengths", B, T, "T = " + std::to_string(T));
}

inline RecurrentActivation scrn_activation(bool sigmoid) {
  return sigmoid ? RecurrentActivation::Sigmoid : RecurrentActivation::Tanh;
}

// The context's argument struct over contiguous tensors that outlive it.
template <typename T>
ScrnContextArgs<T> scrn_context_args(const at::Tensor& s0, const at::Tensor& lengths, int64_t steps, double alpha) {
  ScrnContextArgs<T> a{};
  a.steps = steps;
  a.B = s0.size(0);
  a.C = s0.size(1);
  a.alpha = static_cast<T>(alpha);
  a.lengths = lengths.data_ptr<int64_t>();
  a.s0 = s0.data_ptr<T>();
  return a;
}

// Returns (hidden [T, B, H], context [T, B, C], h_n [B, H], s_n [B, C]).
template <typename Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> scrn_on(const Kernels& kernels, const at::Tensor& input_proj,
                                                                   const at::Tensor& context_proj, const at::Tensor& h0,
                                                                   const at::Tensor& s0, const at::Tensor& w_hh,
                                                                   const at::Tensor& w_ch, double alpha,
                                                                   const at::Tensor& lengths, bool sigmoid) {
  check_scrn(input_proj, context_proj, h0, s0, w_hh, w_ch, alpha, lengths, kernels.device());
  const int64_t T = input_proj.size(0), B = input_proj.size(1), H = input_proj.size(2), C = context_proj.size(2);
  const at::Tensor on_device = kernels.lengths_on_device(lengths, input_proj).contiguous();
  const at::Tensor cp = context_proj.contiguous(), s0c = s0.contiguous();
  at::Tensor context = at::empty({T, B, C}, input_proj.options());
  at::Tensor s_n = at::empty({B, C}, input_proj.options());
  AT_DISPATCH_FLOATING_TYPES(input_proj.scalar_type(), "scrn", [&] {
    ScrnContextArgs<scalar_t> a = scrn_context_args<scalar_t>(s0c, on_device, T, alpha);
    a.context_proj = cp.data_ptr<scalar_t>();
    a.context = context.data_ptr<scalar_t>();
    kernels.context(a, s_n.data_ptr<scalar_t>());
  });
  // the hidden layer's input: A x_t + b + P s_t, one GEMM over the sequence
  // (a contiguous P: the same bits whatever its strides)
  const at::Tensor pre =
      at::addmm(input_proj.reshape({T * B, H}), context.view({T * B, C}), w_ch.contiguous().t()).view({T, B, H});
  auto [hidden, h_n] = run_clockwork(kernels, pre, h0, w_hh, {1}, on_device, scrn_activation(sigmoid));
  return {hidden, context, h_n, s_n};
}

// grad_hidden [T, B, H], grad_context [T, B, C], grad_h_n [B, H], grad_s_n [B, C]; hidden, context: the forward's.
// Returns the gradients of (input_proj, context_proj, h0, s0, w_hh, w_ch).
template <typename Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> scrn_backward_on(
    const Kernels& kernels, const at::Tensor& grad_hidden, const at::Tensor& grad_context, const at::Tensor& grad_h_n,
    const at::Tensor& grad_s_n, const at::Tensor& hidden, const at::Tensor& context, const at::Tensor& h0,
    const at::Tensor& s0, const at::Tensor& w_hh, const at::Tensor& w_ch, double alpha, const at::Tensor& lengths,
    bool sigmoid) {
  check_scrn(hidden, context, h0, s0, w_hh, w_ch, alpha, lengths, kernels.device());
  for (const auto& [t, name, like] :
       {std::tuple<const at::Tensor&, const char*, const at::Tensor&>{grad_hidden, "grad_hidden", hidden},
        {grad_context, "grad_context", context},
        {grad_h_n, "grad_h_n", h0},
        {grad_s_n, "grad_s_n", s0}}) {
    check_shape(t, name, like.sizes().vec());
    check_like(t, name, hidden, "hidden");
  }
  const int64_t T = hidden.size(0), B = hidden.size(1), H = hidden.size(2), C = context.size(2);
  const at::Tensor on_device = kernels.lengths_on_device(lengths, hidden).contiguous();
  auto [d_pre, d_h0, d_w_hh] = run_clockwork_backward(kernels, grad_hidden, grad_h_n, hidden, h0, w_hh, {1}, on_device,
                                                      scrn_activation(sigmoid));
  const at::Tensor d_pre_rows = d_pre.view({T * B, H}), context_rows = context.contiguous().view({T * B, C});
  const at::Tensor d_w_ch = at::mm(d_pre_rows.t(), context_rows);
  // d loss / d s_t: from the outputs, and through P from the hidden layer
  const at::Tensor d_context =
      at::addmm(grad_context.reshape({T * B, C}), d_pre_rows, w_ch.contiguous()).view({T, B, C});
  const at::Tensor s0c = s0.contiguous();
  at::Tensor d_context_proj = at::empty({T, B, C}, hidden.options());
  at::Tensor d_s0 = grad_s_n.contiguous().clone();
  AT_DISPATCH_FLOATING_TYPES(hidden.scalar_type(), "scrn_backward", [&] {
    ScrnContextArgs<scalar_t> a = scrn_context_args<scalar_t>(s0c, on_device, T, alpha);
    a.grad_context = d_context.data_ptr<scalar_t>();
    a.grad_context_proj = d_context_proj.data_ptr<scalar_t>();
    a.grad_s0 = d_s0.data_ptr<scalar_t>();
    kernels.context_backward(a);
  });
  return {d_pre, d_context_proj, d_h0, d_s0, d_w_hh, d_w_ch};
}

}  // namespace pyseq
