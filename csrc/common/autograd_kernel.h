// The Autograd kernel of a differentiable op, built from a description of how it is differentiated.
//
// Every differentiable op registers PYSEQ_AUTOGRAD_KERNEL(Derivative) for its Autograd key, where Derivative is a
// struct with:
//   forward: Results(Args...)              the op below autograd: its typed front function (<family>_ops.h), as
//                                           `static constexpr auto forward = &front_function;`
//   static constexpr std::array<size_t, K> kDifferentiable;   the positions in Args of its differentiable arguments
//   static void save(AutogradContext*, const Results&, Args...);   what backward needs (save_for_backward,
//                                           saved_data, mark_non_differentiable)
//   static variable_list backward(AutogradContext*, const variable_list& grads);
//                                           the gradients of the differentiable arguments, in kDifferentiable's
//                                           order, by the op's backward op; grads: one per result, undefined for a
//                                           result the loss does not use (never all undefined)
//   static variable_list backward_composite(AutogradContext*, const variable_list& grads);
//                                           the same as differentiable functions of the saved inputs and of grads,
//                                           for a backward that builds a graph (csrc/common/double_backward.h)
//   static Results composite(Args...);      the op as differentiable ATen ops, run under torch.func's transforms
// The kernel:
// - under a torch.func transform, runs the composite (a transform differentiates it op by op);
// - when grad mode is off or no differentiable argument requires grad (inference; a decoder step under
//   torch.no_grad()), calls the op below autograd without building a node, which saves a few microseconds a call;
// - otherwise runs the op in a torch::autograd::Function whose backward calls Derivative::backward, or
//   Derivative::backward_composite when the backward must itself be differentiable.
#pragma once

#include <ATen/core/grad_mode.h>
#include <torch/autograd.h>

#include <algorithm>
#include <array>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

#include "double_backward.h"

namespace pyseq {
namespace autograd_kernel_detail {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

inline bool requires_grad(const at::Tensor& t) { return t.defined() && t.requires_grad(); }
inline bool requires_grad(const std::optional<at::Tensor>& t) { return t && requires_grad(*t); }

inline variable_list as_list(const at::Tensor& result) { return {result}; }
template <typename... Results>
variable_list as_list(const std::tuple<Results...>& results) {
  return std::apply([](const auto&... r) { return variable_list{r...}; }, results);
}

template <typename Results>
struct FromList;
template <>
struct FromList<at::Tensor> {
  static at::Tensor from(const variable_list& list) { return list[0]; }
};
template <typename... Results>
struct FromList<std::tuple<Results...>> {
  static std::tuple<Results...> from(const variable_list& list) {
    return from(list, std::index_sequence_for<Results...>());
  }
  template <size_t... I>
  static std::tuple<Results...> from(const variable_list& list, std::index_sequence<I...>) {
    return {list[I]...};
  }
};

// Derivative::forward as a function pointer type (it may be a static member function or a constexpr pointer to the
// front function).
template <typename Derivative>
using ForwardOf = std::decay_t<decltype(Derivative::forward)>;

// The number of arguments of a function pointer type.
template <typename Function>
struct Arity;
template <typename Results, typename... Args>
struct Arity<Results (*)(Args...)> {
  static constexpr size_t value = sizeof...(Args);
};

template <typename Derivative>
class Node : public torch::autograd::Function<Node<Derivative>> {
 public:
  template <typename... Args>
  static variable_list forward(AutogradContext* ctx, const Args&... args) {
    const auto results = [&] {
      const at::AutoDispatchBelowADInplaceOrView below_autograd;
      return Derivative::forward(args...);
    }();
    Derivative::save(ctx, results, args...);
    // A result the loss does not use arrives in backward undefined, not as materialized zeros.
    ctx->set_materialize_grads(false);
    return as_list(results);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list all(Arity<ForwardOf<Derivative>>::value);
    if (std::none_of(grads.begin(), grads.end(), [](const at::Tensor& g) { return g.defined(); })) return all;
    const variable_list g =
        backward_builds_graph() ? Derivative::backward_composite(ctx, grads) : Derivative::backward(ctx, grads);
    for (size_t k = 0; k < Derivative::kDifferentiable.size(); ++k) all[Derivative::kDifferentiable[k]] = g[k];
    return all;
  }
};

template <typename Derivative, typename Forward = ForwardOf<Derivative>>
struct Kernel;
template <typename Derivative, typename Results, typename... Args>
struct Kernel<Derivative, Results (*)(Args...)> {
  static Results call(Args... args) {
    if (inside_functorch_transform()) return Derivative::composite(args...);
    if (!records_autograd(std::forward_as_tuple(args...),
                          std::make_index_sequence<Derivative::kDifferentiable.size()>())) {
      const at::AutoDispatchBelowADInplaceOrView below_autograd;
      return Derivative::forward(args...);
    }
    return FromList<Results>::from(Node<Derivative>::apply(args...));
  }

  template <typename Tuple, size_t... K>
  static bool records_autograd(const Tuple& args, std::index_sequence<K...>) {
    return at::GradMode::is_enabled() && (requires_grad(std::get<Derivative::kDifferentiable[K]>(args)) || ...);
  }
};

}  // namespace autograd_kernel_detail

using autograd_kernel_detail::AutogradContext;
using autograd_kernel_detail::variable_list;

}  // namespace pyseq

// The Autograd kernel to register for the op that Derivative describes (see above).
#define PYSEQ_AUTOGRAD_KERNEL(Derivative) (&::pyseq::autograd_kernel_detail::Kernel<Derivative>::call)
