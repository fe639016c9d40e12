// Autocast kernels shared by the ops, boxed, registered per op for AutocastCPU and AutocastCUDA in the family's
// <family>_ops.cpp:
// - in_autocast_dtype, for the ops that run in the autocast dtype as torch's recurrent layers and attention do:
//   float32 tensor arguments are cast to the autocast dtype (autocast's own cast, cached for weights that are
//   leaves), float64 ones and integer ones pass as they are;
// - float32_under_autocast, for the ops that run in float32 under autocast as torch's CTC loss does (CTC, CRF):
//   16-bit floating tensor arguments are cast to float32 (recorded by autograd, so their gradients come back in
//   their own dtype), float32 and float64 ones pass as they are;
// - below_autocast, for the backward ops: no casts (a backward computes in the dtypes its forward saved), only
//   autocast kept from intercepting the ATen calls inside the kernel when backward() runs inside an autocast region.
#pragma once

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <vector>

namespace pyseq {

template <c10::DispatchKey kAutocast, c10::DeviceType kDevice>
void in_autocast_dtype(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(kAutocast);
  const at::ScalarType dtype = at::autocast::get_autocast_dtype(kDevice);
  const size_t arguments = op.schema().arguments().size();
  for (size_t i = stack->size() - arguments; i < stack->size(); ++i) {
    c10::IValue& value = (*stack)[i];
    if (value.isTensor()) value = at::autocast::cached_cast(dtype, value.toTensor(), kDevice);
  }
  op.callBoxed(stack);
}

template <c10::DispatchKey kAutocast>
void float32_under_autocast(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(kAutocast);
  const size_t arguments = op.schema().arguments().size();
  for (size_t i = stack->size() - arguments; i < stack->size(); ++i) {
    c10::IValue& value = (*stack)[i];
    if (!value.isTensor()) continue;
    const at::Tensor& t = value.toTensor();
    if (t.defined() && (t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf)) value = t.to(at::kFloat);
  }
  op.callBoxed(stack);
}

template <c10::DispatchKey kAutocast>
void below_autocast(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(kAutocast);
  op.callBoxed(stack);
}

// A family's ops by what they do under autocast: in_autocast_dtype, float32_under_autocast, below_autocast.
struct AutocastOps {
  std::vector<const char*> autocast_dtype, float32, backward;
};

// Registers `ops` in m, a TORCH_LIBRARY_IMPL block of kAutocast (the autocast key of kDevice).
template <c10::DispatchKey kAutocast, c10::DeviceType kDevice>
void register_autocast(torch::Library& m, const AutocastOps& ops) {
  for (const char* name : ops.autocast_dtype) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&in_autocast_dtype<kAutocast, kDevice>>());
  }
  for (const char* name : ops.float32) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&float32_under_autocast<kAutocast>>());
  }
  for (const char* name : ops.backward) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&below_autocast<kAutocast>>());
  }
}

}  // namespace pyseq

// The AutocastCPU and AutocastCUDA registrations of a family's AutocastOps `ops` (a namespace-scope object defined
// before the macro, in the same file).
#define PYSEQ_REGISTER_AUTOCAST(ops)                                                            \
  TORCH_LIBRARY_IMPL(pyseq, AutocastCPU, m) {                                                  \
    pyseq::register_autocast<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>(m, ops);    \
  }                                                                                            \
  TORCH_LIBRARY_IMPL(pyseq, AutocastCUDA, m) {                                                 \
    pyseq::register_autocast<c10::DispatchKey::AutocastCUDA, c10::DeviceType::CUDA>(m, ops);  \
  }
