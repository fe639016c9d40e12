// Helpers for the ops registered in C++ (<family>_ops.cpp).
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>

namespace pyseq {

// The dispatcher handle of op `name` ("pyseq::..."), typed by the signature of its kernels. The autograd kernels call
// the op through it, so that the call dispatches below autograd to the kernel of the tensors' device.
template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

}  // namespace pyseq
