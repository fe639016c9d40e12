// CUDA glue of the recurrent layers: the schedule of rnn_schedule.h (input projection and weight gradients as
// whole-sequence cuBLAS GEMMs through ATen, per step the recurrent product through ATen into a preallocated buffer
// and one fused cell-update kernel of rnn_cuda.cu), on the current stream, with no host synchronisation in the time
// loop; or, when set_cuda_recurrent_kernel("persistent") asks for it, the forward time loop in the persistent kernel
// of rnn_cuda.cu (the backward always runs the step schedule: the workspace is the same). Device-generic ATen only,
// so that it builds against a CPU torch too (see CMakeLists.txt). (In the emulation build the same glue runs on CPU
// tensors, the kernels through the CUDA emulator, the GEMMs through ATen's CPU kernels: cuda_glue.h.)
#include "rnn_cuda.h"

#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>

#include "../common/cuda_glue.h"
#include "rnn.h"
#include "rnn_ops.h"
#include "rnn_schedule.h"

namespace pyseq {
namespace {

// The cell updates (rnn_schedule.h) as kernels on the current stream of the tensors' device.
struct CudaKernels {
  void* stream;
  template <typename Rows>
  void run(const Rows& a, int64_t n) const {
    launch_cell_update(a, n, stream);
    check_kernel_launch("recurrent cell-update");
  }
};

CudaKernels kernels_on(const at::Tensor& x) { return {cuda_stream_of(x, "x")}; }

// run(T()) for the scalar type T of `dtype` (already checked): float, double, bfloat16 or float16.
template <typename Run>
auto for_dtype(at::ScalarType dtype, const Run& run) {
  if (dtype == at::kBFloat16) return run(at::BFloat16());
  if (dtype == at::kHalf) return run(at::Half());
  return dtype == at::kDouble ? run(double()) : run(float());
}

// The whole op: checks, then the schedule in the tensors' dtype.
RnnLayerResults steps_forward(const CudaKernels& kernels, int64_t mode, const at::Tensor& x,
                              const at::Tensor& batch_sizes, const at::Tensor& h0, const at::Tensor& c0,
                              const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& b_ih,
                              const at::Tensor& b_hh, const at::Tensor& w_hr, bool reverse, bool save) {
  const at::Tensor rows = input_rows(x);
  const Dims d = check_forward_args(mode, rows, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, /*reduced_precision=*/true);
  const Steps steps = read_steps(batch_sizes, d.N, d.B);
  const at::Tensor xc = rows.contiguous();
  RnnLayerResults out = for_dtype(x.scalar_type(), [&](auto scalar) {
    using T = decltype(scalar);
    return forward_with<T>(kernels, d, steps, xc, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, save);
  });
  std::get<0>(out) = in_layout_of(std::get<0>(out), x);
  return out;
}

RnnLayerGradients rnn_layer_backward_cuda(int64_t mode, const at::Tensor& x, const at::Tensor& batch_sizes,
                                          const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& w_hr,
                                          const at::Tensor& ws, const at::Tensor& grad_y, const at::Tensor& grad_hn,
                                          const at::Tensor& grad_cn, bool reverse, bool has_bias, bool need_dx,
                                          bool need_dh0) {
  const c10::DeviceGuard guard(x.device());
  const CudaKernels kernels = kernels_on(x);
  const at::Tensor rows = input_rows(x), gy = input_rows(grad_y);
  const Dims d =
      check_backward_args(mode, rows, w_ih, w_hh, w_hr, ws, gy, grad_hn, grad_cn, has_bias, /*reduced_precision=*/true,
                          /*float32_workspace=*/false);
  const Steps steps = read_steps(batch_sizes, d.N, d.B);
  const at::Tensor xc = rows.contiguous();
  return layer_gradients(for_dtype(x.scalar_type(),
                                   [&](auto scalar) {
                                     using T = decltype(scalar);
                                     return backward_with<T>(kernels, d, steps, xc, w_ih, w_hh, w_hr, ws, gy, grad_hn,
                                                             grad_cn, reverse, need_dx, need_dh0);
                                   }),
                         x);
}

// The forward in the persistent kernel (rnn_cuda.h), where the setting asks for it and it takes the layer: padded
// input (every sequence runs every step), no projection, B <= kPersistentMaxBatch, 32- or 16-bit floats, and a size
// whose W_hh share fits each block's shared memory. nullopt otherwise.
template <typename T>
std::optional<RnnLayerResults> persistent_forward_typed(const CudaKernels& kernels, const Dims& d, const Steps& steps,
                                                        const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                                                        const at::Tensor& w_ih, const at::Tensor& w_hh,
                                                        const at::Tensor& b_ih, const at::Tensor& b_hh, bool reverse,
                                                        bool save) {
  const auto opts = x.options();
  const int64_t T_steps = static_cast<int64_t>(steps.sizes.size()), GH = d.G * d.H;
  ForwardState st = forward_setup(d, x, h0, c0, w_ih, b_ih, b_hh, save, at::empty({d.N, GH}, opts));
  at::Tensor h = at::empty({2, d.B, d.H}, opts);
  h.select(0, 0).copy_(st.h);
  at::Tensor gh = at::empty({d.B, GH}, opts);
  const at::Tensor w = w_hh.contiguous();
  const bool lstm = d.mode == CellMode::Lstm, gru = d.mode == CellMode::Gru;
  const PersistentForward<storage_t<T>> args{static_cast<int>(d.mode),
                                             T_steps,
                                             d.B,
                                             d.H,
                                             reverse,
                                             data_of<T>(st.gi),
                                             data_of<T>(w),
                                             gru ? data_of<T>(st.gru_b_hh) : nullptr,
                                             data_of<T>(h),
                                             lstm ? data_of<T>(st.c) : nullptr,
                                             data_of<T>(gh),
                                             data_of<T>(st.y),
                                             save ? data_of<T>(st.ws) : nullptr,
                                             st.saved_ld};
  if (!launch_persistent_forward(args, kernels.stream)) return std::nullopt;
  st.h.copy_(h.select(0, T_steps % 2));
  return RnnLayerResults{st.y, st.h, st.c, st.ws};
}

std::optional<RnnLayerResults> persistent_forward(const CudaKernels& kernels, int64_t mode, const at::Tensor& x,
                                                  const at::Tensor& batch_sizes, const at::Tensor& h0,
                                                  const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                                                  const at::Tensor& b_ih, const at::Tensor& b_hh,
                                                  const at::Tensor& w_hr, bool reverse, bool save) {
  const at::Tensor rows = input_rows(x);
  const Dims d = check_forward_args(mode, rows, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, /*reduced_precision=*/true);
  const Steps steps = read_steps(batch_sizes, d.N, d.B);
  const bool padded = std::all_of(steps.sizes.begin(), steps.sizes.end(), [&](int64_t n) { return n == d.B; });
  if (d.proj || !padded || d.B < 1 || d.B > kPersistentMaxBatch) return std::nullopt;
  const at::Tensor xc = rows.contiguous();
  std::optional<RnnLayerResults> out;
  switch (x.scalar_type()) {
    case at::kFloat:
      out = persistent_forward_typed<float>(kernels, d, steps, xc, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, save);
      break;
    case at::kBFloat16:
      out =
          persistent_forward_typed<at::BFloat16>(kernels, d, steps, xc, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, save);
      break;
    case at::kHalf:
      out = persistent_forward_typed<at::Half>(kernels, d, steps, xc, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, save);
      break;
    default: break;
  }
  if (out) std::get<0>(*out) = in_layout_of(std::get<0>(*out), x);
  return out;
}

RnnLayerResults rnn_layer_cuda(int64_t mode, const at::Tensor& x, const at::Tensor& batch_sizes, const at::Tensor& h0,
                               const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                               const at::Tensor& b_ih, const at::Tensor& b_hh, const at::Tensor& w_hr, bool reverse,
                               bool save_workspace) {
  const c10::DeviceGuard guard(x.device());
  const CudaKernels kernels = kernels_on(x);
  if (cuda_persistent_forward_requested()) {
    std::optional<RnnLayerResults> out = persistent_forward(kernels, mode, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih,
                                                            b_hh, w_hr, reverse, save_workspace);
    if (out) return *out;
  }
  return steps_forward(kernels, mode, x, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, save_workspace);
}

}  // namespace
}  // namespace pyseq

PYSEQ_CUDA_LIBRARY_IMPL(m) {
  m.impl("rnn_layer", &pyseq::rnn_layer_cuda);
  m.impl("rnn_layer_backward", &pyseq::rnn_layer_backward_cuda);
}
