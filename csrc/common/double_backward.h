// Double backward for the ops whose backward is a hand-written kernel.
//
// The backward kernels write into preallocated buffers and record no autograd graph, so a gradient they return is a
// constant to autograd: with create_graph=True (gradient penalties, Hessian-vector products, MAML, torch.func) its
// own derivative would silently be zero. When the engine builds a graph through a backward it runs that backward
// with grad mode on; then the autograd kernels differentiate a composite of ATen ops that computes the same forward
// instead, recomputed from the saved inputs, with create_graph: the first gradients come out as differentiable
// functions of the inputs and of the incoming gradients, so every higher derivative is right. The composites are
// slower than the kernels and only run in that case.
//
// The same composites stand in for the whole op under torch.func's transforms (grad, vjp, jacrev, ...): those cannot
// run a C++ autograd Function, and differentiate the composite op by op instead.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/autograd.h>

#include <limits>
#include <vector>

namespace pyseq {

// Whether the backward running now must itself be differentiable (create_graph=True).
inline bool backward_builds_graph() { return at::GradMode::is_enabled(); }

// Whether a torch.func transform is running (the autograd kernels then compute the composite instead of the kernel):
// torch.func includes its dispatch keys in the thread's dispatch while it holds any transform level.
inline bool inside_functorch_transform() {
  return c10::impl::tls_is_dispatch_key_included(c10::DispatchKey::FuncTorchDynamicLayerBackMode);
}

// The vector-Jacobian product sum_i <grads[i], d outputs[i] / d inputs[j]> for every input, with create_graph,
// where outputs = composite(inputs). grads: the incoming gradients (an undefined one is zero); inputs: the op's tensor
// inputs as saved (undefined, not requiring grad, or unused: undefined gradient). The composite sees each input that
// requires grad through its own alias, so that one tensor passed as two arguments (self-attention's query and key)
// gets each argument's part once, as the op's other gradients do.
template <typename Composite>
torch::autograd::variable_list differentiable_vjp(const torch::autograd::variable_list& grads,
                                                 const torch::autograd::variable_list& inputs,
                                                 const Composite& composite) {
  torch::autograd::variable_list aliases(inputs), wanted;
  std::vector<size_t> positions;
  for (size_t j = 0; j < inputs.size(); ++j) {
    if (inputs[j].defined() && inputs[j].requires_grad()) {
      aliases[j] = inputs[j].view_as(inputs[j]);
      wanted.push_back(aliases[j]);
      positions.push_back(j);
    }
  }
  const torch::autograd::variable_list outputs = composite(aliases);
  torch::autograd::variable_list used_outputs, used_grads;
  for (size_t i = 0; i < outputs.size() && i < grads.size(); ++i) {
    if (grads[i].defined() && outputs[i].defined() && outputs[i].requires_grad()) {
      used_outputs.push_back(outputs[i]);
      used_grads.push_back(grads[i]);
    }
  }
  torch::autograd::variable_list result(inputs.size());
  if (used_outputs.empty() || wanted.empty()) return result;
  const torch::autograd::variable_list g = torch::autograd::grad(used_outputs, wanted, used_grads,
                                                                 /*retain_graph=*/true, /*create_graph=*/true,
                                                                 /*allow_unused=*/true);
  for (size_t k = 0; k < positions.size(); ++k) result[positions[k]] = g[k];
  return result;
}

// A score that stands for -inf in the composites of the log-space dynamic programs (CTC, CRF): exp of it is 0 as
// exp(-inf) is, but, finite, it keeps the gradients of logsumexp over all-impossible states 0 instead of NaN.
constexpr double kCompositeLogZero = -1e30;

// A composite's log-space result with the kernels' meaning: -inf where it sums no possible path (it is then near
// kCompositeLogZero; a possible one is far from it), with gradient 0 there as the kernels'.
inline at::Tensor impossible_as_neginf(const at::Tensor& log_score) {
  return at::where(log_score < kCompositeLogZero / 2, -std::numeric_limits<double>::infinity(), log_score);
}

// A 16-bit tensor as float32 (the composites compute as the kernels do: 16-bit inputs in float32); others as they are.
inline at::Tensor composite_compute_type(const at::Tensor& t) {
  return at::isReducedFloatingType(t.scalar_type()) ? t.to(at::kFloat) : t;
}

}  // namespace pyseq
