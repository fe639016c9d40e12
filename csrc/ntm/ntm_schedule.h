// The NTM ops' device-independent schedule: argument checks, outputs, the argument structs of ntm_rows.h, the order
// of the phases; `Kernels` (CpuKernels: ntm_cpu.cpp's loops over rows; CudaKernels: ntm_cuda.cpp's kernels) runs
// each phase's per-row work.
#pragma once

#include <ATen/ATen.h>

#include <utility>
#include <vector>

#include "../common/checks.h"
#include "ntm.h"
#include "ntm_rows.h"

namespace pyseq {

inline void check_ntm_memory(const at::Tensor& memory, c10::DeviceType device) {
  check_dim(memory, "memory", 3, "(batch, memory_size, memory_width)");
  check_floating(memory, "memory");
  check_device_type(memory, "memory", device);
}

inline void check_ntm_address(const at::Tensor& memory, const at::Tensor& key, const at::Tensor& beta,
                              const at::Tensor& gate, const at::Tensor& shift, const at::Tensor& gamma,
                              const at::Tensor& prev_weights, c10::DeviceType device) {
  check_ntm_memory(memory, device);
  check_dim(key, "key", 3, "(batch, heads, memory_width)");
  const int64_t B = memory.size(0), N = memory.size(1), M = memory.size(2), H = key.size(1);
  TORCH_CHECK_VALUE(N >= 1, "memory must have at least one row, got memory_size = 0");
  check_shape(key, "key", {B, H, M});
  check_shape(beta, "beta", {B, H});
  check_shape(gate, "gate", {B, H});
  check_shape(gamma, "gamma", {B, H});
  check_dim(shift, "shift", 3, "(batch, heads, shifts)");
  const int64_t S = shift.size(2);
  check_shape(shift, "shift", {B, H, S});
  TORCH_CHECK_VALUE(S % 2 == 1, "shift must hold an odd number of shifts (2 r + 1, centred), got ", S);
  check_shape(prev_weights, "prev_weights", {B, H, N});
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{key, "key"},
                                {beta, "beta"},
                                {gate, "gate"},
                                {shift, "shift"},
                                {gamma, "gamma"},
                                {prev_weights, "prev_weights"}}) {
    check_like(t, name, memory, "memory");
  }
}

inline void check_ntm_write(const at::Tensor& memory, const at::Tensor& weights, const at::Tensor& erase,
                            const at::Tensor& add, c10::DeviceType device) {
  check_ntm_memory(memory, device);
  const int64_t B = memory.size(0), N = memory.size(1), M = memory.size(2);
  check_shape(weights, "weights", {B, N});
  check_shape(erase, "erase", {B, M});
  check_shape(add, "add", {B, M});
  check_like(weights, "weights", memory, "memory");
  check_like(erase, "erase", memory, "memory");
  check_like(add, "add", memory, "memory");
}

// The addressing's inputs, contiguous (the kernels read them in that layout), kept alive for the argument structs.
struct NtmAddressInputs {
  at::Tensor memory, key, beta, gate, shift, gamma, prev;
  template <typename T>
  NtmAddressArgs<T> args() const {
    NtmAddressArgs<T> a{};
    a.B = memory.size(0);
    a.N = memory.size(1);
    a.M = memory.size(2);
    a.H = key.size(1);
    a.S = shift.size(2);
    a.memory = memory.data_ptr<T>();
    a.key = key.data_ptr<T>();
    a.beta = beta.data_ptr<T>();
    a.gate = gate.data_ptr<T>();
    a.gamma = gamma.data_ptr<T>();
    a.shift = shift.data_ptr<T>();
    a.prev = prev.data_ptr<T>();
    return a;
  }
};

template <typename Kernels>
at::Tensor ntm_address_on(const Kernels& kernels, const at::Tensor& memory, const at::Tensor& key,
                          const at::Tensor& beta, const at::Tensor& gate, const at::Tensor& shift,
                          const at::Tensor& gamma, const at::Tensor& prev_weights) {
  check_ntm_address(memory, key, beta, gate, shift, gamma, prev_weights, kernels.device());
  const NtmAddressInputs in{memory.contiguous(), key.contiguous(),   beta.contiguous(),        gate.contiguous(),
                            shift.contiguous(),  gamma.contiguous(), prev_weights.contiguous()};
  at::Tensor out = at::empty(prev_weights.sizes(), memory.options());
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "ntm_address", [&] {
    NtmAddressArgs<scalar_t> a = in.args<scalar_t>();
    a.weights = out.data_ptr<scalar_t>();
    kernels.address(a);
  });
  return out;
}

template <typename Kernels>
NtmAddressGradients ntm_address_backward_on(const Kernels& kernels, const at::Tensor& grad_weights,
                                            const at::Tensor& memory, const at::Tensor& key, const at::Tensor& beta,
                                            const at::Tensor& gate, const at::Tensor& shift, const at::Tensor& gamma,
                                            const at::Tensor& prev_weights) {
  check_ntm_address(memory, key, beta, gate, shift, gamma, prev_weights, kernels.device());
  check_shape(grad_weights, "grad_weights", prev_weights.sizes().vec());
  check_like(grad_weights, "grad_weights", memory, "memory");
  const NtmAddressInputs in{memory.contiguous(), key.contiguous(),   beta.contiguous(),        gate.contiguous(),
                            shift.contiguous(),  gamma.contiguous(), prev_weights.contiguous()};
  const at::Tensor grad = grad_weights.contiguous();
  const auto opts = memory.options();
  std::vector<at::Tensor> d = {at::empty(memory.sizes(), opts),      at::empty(key.sizes(), opts),
                               at::empty(beta.sizes(), opts),        at::empty(gate.sizes(), opts),
                               at::empty(shift.sizes(), opts),       at::empty(gamma.sizes(), opts),
                               at::empty(prev_weights.sizes(), opts)};
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "ntm_address_backward", [&] {
    using T = scalar_t;
    NtmAddressArgs<T> a = in.args<T>();
    a.grad = grad.data_ptr<T>();
    a.d_memory = d[0].data_ptr<T>();
    a.d_key = d[1].data_ptr<T>();
    a.d_beta = d[2].data_ptr<T>();
    a.d_gate = d[3].data_ptr<T>();
    a.d_shift = d[4].data_ptr<T>();
    a.d_gamma = d[5].data_ptr<T>();
    a.d_prev = d[6].data_ptr<T>();
    kernels.address_backward(a);
  });
  return {d[0], d[1], d[2], d[3], d[4], d[5], d[6]};
}

// t [B, N] as it is when each row is contiguous (a head's slice of [B, H, N] weights), else a contiguous copy.
inline at::Tensor rows_contiguous(const at::Tensor& t) { return t.stride(1) == 1 ? t : t.contiguous(); }

template <typename T>
NtmWriteArgs<T> ntm_write_args(const at::Tensor& memory, const at::Tensor& weights, const at::Tensor& erase,
                               const at::Tensor& add) {
  NtmWriteArgs<T> a{};
  a.B = memory.size(0);
  a.N = memory.size(1);
  a.M = memory.size(2);
  a.memory = memory.data_ptr<T>();
  a.weights = weights.data_ptr<T>();
  a.weights_stride = weights.stride(0);
  a.erase = erase.data_ptr<T>();
  a.add = add.data_ptr<T>();
  return a;
}

template <typename Kernels>
at::Tensor ntm_write_on(const Kernels& kernels, const at::Tensor& memory, const at::Tensor& weights,
                        const at::Tensor& erase, const at::Tensor& add) {
  check_ntm_write(memory, weights, erase, add, kernels.device());
  const at::Tensor m = memory.contiguous(), w = rows_contiguous(weights), e = erase.contiguous(), ad = add.contiguous();
  at::Tensor out = at::empty(memory.sizes(), memory.options());
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "ntm_write", [&] {
    NtmWriteArgs<scalar_t> a = ntm_write_args<scalar_t>(m, w, e, ad);
    a.out = out.data_ptr<scalar_t>();
    kernels.write(a);
  });
  return out;
}

template <typename Kernels>
NtmWriteGradients ntm_write_backward_on(const Kernels& kernels, const at::Tensor& grad_memory, const at::Tensor& memory,
                                        const at::Tensor& weights, const at::Tensor& erase, const at::Tensor& add) {
  check_ntm_write(memory, weights, erase, add, kernels.device());
  check_shape(grad_memory, "grad_memory", memory.sizes().vec());
  check_like(grad_memory, "grad_memory", memory, "memory");
  const at::Tensor m = memory.contiguous(), w = rows_contiguous(weights), e = erase.contiguous(), ad = add.contiguous();
  const at::Tensor grad = grad_memory.contiguous();
  const auto opts = memory.options();
  std::vector<at::Tensor> d = {at::empty(memory.sizes(), opts), at::empty(weights.sizes(), opts),
                               at::empty(erase.sizes(), opts), at::empty(add.sizes(), opts)};
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "ntm_write_backward", [&] {
    using T = scalar_t;
    NtmWriteArgs<T> a = ntm_write_args<T>(m, w, e, ad);
    a.grad = grad.data_ptr<T>();
    a.d_memory = d[0].data_ptr<T>();
    a.d_weights = d[1].data_ptr<T>();
    a.d_erase = d[2].data_ptr<T>();
    a.d_add = d[3].data_ptr<T>();
    kernels.write_backward(a);
  });
  return {d[0], d[1], d[2], d[3]};
}

}  // namespace pyseq
