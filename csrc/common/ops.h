// Helpers for the ops registered in C++: the typed front functions of <family>_ops.h call the dispatcher through
// typed_op; autograd_kernel.h builds the Autograd kernels.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>

namespace pyseq {

// The dispatcher handle of op `name` ("pyseq::..."), typed by the signature of its front function. A call through it
// dispatches to the kernel of the tensors' device (below autograd when the caller excluded autograd).
template <typename Signature>
c10::TypedOperatorHandle<Signature> typed_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

}  // namespace pyseq

// The body of a front function `function` for op pyseq::`function`: the handle is found once, then each call is a
// typed call through the dispatcher. (...): the front function's parameters, in order.
#define PYSEQ_CALL_OP(function, ...)                                                 \
  static const auto op = ::pyseq::typed_op<decltype(function)>("pyseq::" #function); \
  return op.call(__VA_ARGS__)
