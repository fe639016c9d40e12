// Attention on CUDA: the glue between the ops and the kernels of attention_cuda.cu (device-generic ATen only, so that
// it builds against a CPU torch too; see CMakeLists.txt). The products with the values, and the dot scores, are
// batched GEMMs through ATen (cuBLAS); the additive scores, the masked softmax and the additive gradients are
// pyseq's kernels. The cached key factors of a decoding loop (key_exp2x, key_maxabs) are checked and not needed:
// the kernels compute each tanh term directly. (In the emulation build the same glue runs on CPU tensors, the
// kernels through the CUDA emulator: cuda_glue.h.)
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "attention_args.h"
#include "attention_elements.h"

#include <c10/core/DeviceGuard.h>

#include "../common/cuda_glue.h"
#include "../common/float32_compute.h"
#include "attention_cuda.h"

namespace pyseq {
namespace {

using Optional = std::optional<at::Tensor>;

// The kernels on the current stream of the queries' device.
struct CudaKernels {
  void* stream;
  template <typename T>
  void additive_scores(const AdditiveArgs<T>& a) const {
    launch_additive_scores(a, stream);
    check_kernel_launch("attention additive score");
  }
  template <typename T>
  void masked_softmax(T* scores, int64_t rows, int64_t Tq, int64_t Tk, MaskView mask, T scale) const {
    launch_masked_softmax(scores, rows, Tq, Tk, mask, scale, stream);
    check_kernel_launch("attention softmax");
  }
  template <typename T>
  void softmax_backward(const T* weights, T* grad, int64_t rows, int64_t Tk, T scale) const {
    launch_softmax_backward(weights, grad, rows, Tk, scale, stream);
    check_kernel_launch("attention softmax backward");
  }
  template <typename T>
  void additive_gradients(const AdditiveArgs<T>& a) const {
    launch_additive_gradients(a, stream);
    check_kernel_launch("attention additive gradient");
  }
};

CudaKernels kernels_on(const at::Tensor& queries) { return {cuda_stream_of(queries, "the queries")}; }

// weights [B, Tq, Tk] <- the masked softmax of its scores times `scale`, in place.
void softmax_in_place(const CudaKernels& r, at::Tensor& weights, const MaskView& mask, double scale) {
  const int64_t B = weights.size(0), Tq = weights.size(1), Tk = weights.size(2);
  AT_DISPATCH_FLOATING_TYPES(weights.scalar_type(), "attention_softmax", [&] {
    r.masked_softmax(weights.data_ptr<scalar_t>(), B * Tq, Tq, Tk, mask, static_cast<scalar_t>(scale));
  });
}

// d loss / d scores [B, Tq, Tk]: the gradient for the weights (through the context, plus grad_weights), then the
// softmax backward times `scale`.
at::Tensor score_gradient(const CudaKernels& r, const at::Tensor& grad_context, const at::Tensor& grad_weights,
                          const at::Tensor& value, const at::Tensor& weights, double scale) {
  at::Tensor grad = grad_weights.defined() ? at::baddbmm(grad_weights, grad_context, value.transpose(1, 2))
                                           : at::bmm(grad_context, value.transpose(1, 2));
  const at::Tensor w = weights.contiguous();
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "attention_score_gradient", [&] {
    r.softmax_backward(w.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(), grad.size(0) * grad.size(1), grad.size(2),
                       static_cast<scalar_t>(scale));
  });
  return grad;
}

std::tuple<at::Tensor, at::Tensor> additive_attention_cuda(const at::Tensor& query_proj, const at::Tensor& key_proj,
                                                           const at::Tensor& v, const at::Tensor& value,
                                                           const Optional& mask, const Optional& key_exp2x,
                                                           const Optional& key_maxabs) {
  const c10::DeviceGuard guard(query_proj.device());
  const CudaKernels r = kernels_on(query_proj);
  const MaskView m = check_attention(query_proj, "query_proj", key_proj, "key_proj", value, mask.value_or(at::Tensor()),
                                     query_proj.device().type());
  check_additive(query_proj, key_proj, v);
  check_key_factors(key_exp2x.value_or(at::Tensor()), key_maxabs.value_or(at::Tensor()), key_proj);
  const int64_t B = query_proj.size(0), Tq = query_proj.size(1), Tk = key_proj.size(1), A = query_proj.size(2);
  const at::Tensor q = query_proj.contiguous(), k = key_proj.contiguous(), vc = v.contiguous();
  at::Tensor weights = at::empty({B, Tq, Tk}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "additive_attention", [&] {
    using T = scalar_t;
    const AdditiveArgs<T> a{B, Tq, Tk, A, q.data_ptr<T>(), k.data_ptr<T>(), vc.data_ptr<T>(), m, weights.data_ptr<T>(),
                            nullptr, nullptr, nullptr, nullptr};
    r.additive_scores(a);
  });
  softmax_in_place(r, weights, m, 1.0);
  return {at::bmm(weights, value), weights};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> additive_attention_backward_cuda(
    const at::Tensor& grad_context, const Optional& grad_weights_given, const at::Tensor& query_proj,
    const at::Tensor& key_proj, const at::Tensor& v, const at::Tensor& value, const at::Tensor& weights,
    const Optional& key_exp2x, const Optional& key_maxabs) {
  const c10::DeviceGuard guard(query_proj.device());
  const CudaKernels r = kernels_on(query_proj);
  const at::Tensor grad_weights = grad_weights_given.value_or(at::Tensor());
  check_attention(query_proj, "query_proj", key_proj, "key_proj", value, at::Tensor(), query_proj.device().type());
  check_additive(query_proj, key_proj, v);
  check_key_factors(key_exp2x.value_or(at::Tensor()), key_maxabs.value_or(at::Tensor()), key_proj);
  const int64_t B = query_proj.size(0), Tq = query_proj.size(1), Tk = key_proj.size(1), A = query_proj.size(2);
  check_backward_inputs(grad_context, grad_weights, weights, B, Tq, Tk, value.size(2));
  const at::Tensor ds = score_gradient(r, grad_context, grad_weights, value, weights, 1.0);
  const at::Tensor q = query_proj.contiguous(), k = key_proj.contiguous(), vc = v.contiguous();
  at::Tensor grad_q = at::empty({B, Tq, A}, q.options()), grad_k = at::empty({B, Tk, A}, q.options());
  at::Tensor dv_part = at::empty({B, Tq, A}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "additive_attention_backward", [&] {
    using T = scalar_t;
    const AdditiveArgs<T> a{B, Tq, Tk, A, q.data_ptr<T>(), k.data_ptr<T>(), vc.data_ptr<T>(), MaskView{}, nullptr,
                            ds.data_ptr<T>(), grad_q.data_ptr<T>(), grad_k.data_ptr<T>(), dv_part.data_ptr<T>()};
    r.additive_gradients(a);
  });
  return {grad_q, grad_k, dv_part.sum({0, 1}), at::bmm(weights.transpose(1, 2), grad_context)};
}

std::tuple<at::Tensor, at::Tensor> dot_attention_cuda(const at::Tensor& query, const at::Tensor& key,
                                                      const at::Tensor& value, const Optional& mask, double scale) {
  const c10::DeviceGuard guard(query.device());
  const CudaKernels r = kernels_on(query);
  const MaskView m =
      check_attention(query, "query", key, "key", value, mask.value_or(at::Tensor()), query.device().type());
  TORCH_CHECK_VALUE(key.size(2) == query.size(2), "query and key must have the same feature size, got ",
                    query.size(2), " and ", key.size(2));
  at::Tensor weights = at::bmm(query, key.transpose(1, 2));  // [B, Tq, Tk], contiguous
  softmax_in_place(r, weights, m, scale);
  return {at::bmm(weights, value), weights};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dot_attention_backward_cuda(
    const at::Tensor& grad_context, const Optional& grad_weights_given, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& weights, double scale) {
  const c10::DeviceGuard guard(query.device());
  const CudaKernels r = kernels_on(query);
  const at::Tensor grad_weights = grad_weights_given.value_or(at::Tensor());
  check_attention(query, "query", key, "key", value, at::Tensor(), query.device().type());
  check_backward_inputs(grad_context, grad_weights, weights, query.size(0), query.size(1), key.size(1),
                        value.size(2));
  const at::Tensor ds = score_gradient(r, grad_context, grad_weights, value, weights, scale);
  return {at::bmm(ds, key), at::bmm(ds.transpose(1, 2), query), at::bmm(weights.transpose(1, 2), grad_context)};
}

}  // namespace
}  // namespace pyseq

PYSEQ_CUDA_LIBRARY_IMPL(m) {
  m.impl("additive_attention", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::additive_attention_cuda));
  m.impl("additive_attention_backward", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::additive_attention_backward_cuda));
  m.impl("dot_attention", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::dot_attention_cuda));
  m.impl("dot_attention_backward", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::dot_attention_backward_cuda));
}
