// Helpers for the ops registered in C++ (<family>_ops.cpp).
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>

namespace pyseq {

// The dispatcher handle of op `name` ("pyseq::..."), typed by the signature of its kernels. The autograd kernels call
// the op through it, so that the call dispatches below autograd to the kernel of the tensors' device.
template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// Whether an autograd kernel must record a node for these inputs: grad mode is on and one of them requires grad.
// Where not (inference, a decoder step under torch.no_grad()), the kernel calls the op below autograd directly and
// saves the few microseconds that building the node costs.
template <typename... Tensors>
bool records_autograd(const Tensors&... inputs) {
  return at::GradMode::is_enabled() && (inputs.requires_grad() || ...);
}

}  // namespace pyseq
