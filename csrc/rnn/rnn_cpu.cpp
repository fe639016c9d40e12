// CPU recurrent layers. The time loop runs either in the packed-weight kernels (packed_cpu.cpp: float32 without a
// projection) or in the ATen-GEMM schedule of rnn_schedule.h (shared with CUDA), whose cell updates are the row
// kernels below, run on the CPU threads.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../common/cpu_dispatch.h"
#include "../common/float32_compute.h"
#include "../common/scratch.h"
#include "packed_cpu.h"
#include "rnn.h"
#include "rnn_ops.h"
#include "rnn_schedule.h"

namespace pyseq {
namespace {

// Elements of pointwise work below which a step runs on one thread: a parallel region costs a few microseconds.
constexpr int64_t kPointwiseGrain = 8192;

// The ATen-GEMM schedule serves float64, the LSTM with a projection, short sequences and the `aten` kernel setting;
// float32 otherwise runs the packed-weight schedule of packed_cpu.cpp.

// Pointwise step kernels: rows [r0, r1) of a step (the *Rows structs of rnn_steps.h), compiled into the ISA clones
// of their float wrappers below.

// The cell updates run over blocks of kGateBlock units: in inference the activated gates of a block go to a row on
// the stack (see cell_rows.h), so that a step allocates nothing.
constexpr int64_t kGateBlock = 64;

template <typename T>
PYSEQ_ALWAYS_INLINE void lstm_forward_rows_impl(const LstmForwardRows<T>& a, int64_t r0, int64_t r1) {
  const int64_t H = a.H, Hr = a.Hr;
  T gates[4 * kGateBlock];
  for (int64_t b = r0; b < r1; ++b) {
    T* c = a.c + b * H;
    T* h = a.h_raw ? a.h_raw + b * H : a.h + b * Hr;
    T* s = a.saved ? a.saved + b * a.saved_ld : nullptr;
    if (s) {
      std::memcpy(s + 4 * H, c, H * sizeof(T));
      std::memcpy(s + 5 * H, a.h + b * Hr, Hr * sizeof(T));
    }
    for (int64_t u = 0; u < H; u += kGateBlock) {
      lstm_units_forward(std::min(kGateBlock, H - u), H, a.gi + b * 4 * H + u, a.gh + b * 4 * H + u, H, c + u, h + u,
                         s ? s + u : gates, s ? H : kGateBlock);
    }
    if (!a.h_raw) std::memcpy(a.y + b * Hr, h, H * sizeof(T));
  }
}


template <typename T>
PYSEQ_ALWAYS_INLINE void gru_forward_rows_impl(const GruForwardRows<T>& a, int64_t r0, int64_t r1) {
  const int64_t H = a.H;
  T gates[4 * kGateBlock];
  for (int64_t b = r0; b < r1; ++b) {
    T* h = a.h + b * H;
    T* y = a.y + b * H;
    T* s = a.saved ? a.saved + b * a.saved_ld : nullptr;
    if (s) std::memcpy(s + 4 * H, h, H * sizeof(T));
    for (int64_t u = 0; u < H; u += kGateBlock) {
      gru_units_forward(std::min(kGateBlock, H - u), H, a.gi + b * 3 * H + u, a.gh + b * 3 * H + u, H, a.b_hh + u,
                        h + u, y + u, s ? s + u : gates, s ? H : kGateBlock);
    }
    std::memcpy(h, y, H * sizeof(T));
  }
}


template <typename T>
PYSEQ_ALWAYS_INLINE void rnn_forward_rows_impl(const RnnForwardRows<T>& a, int64_t r0, int64_t r1) {
  const int64_t H = a.H;
  for (int64_t b = r0; b < r1; ++b) {
    T* h = a.h + b * H;
    T* y = a.y + b * H;
    T* s = a.saved ? a.saved + b * a.saved_ld : nullptr;
    if (s) std::memcpy(s + H, h, H * sizeof(T));
    rnn_units_forward(H, a.relu, a.gi + b * H, a.gh + b * H, y);
    std::memcpy(h, y, H * sizeof(T));
    if (s) std::memcpy(s, y, H * sizeof(T));
  }
}


template <typename T>
PYSEQ_ALWAYS_INLINE void lstm_backward_rows_impl(const LstmBackwardRows<T>& a, int64_t r0, int64_t r1) {
  const int64_t H = a.H;
  for (int64_t b = r0; b < r1; ++b) {
    lstm_units_backward(H, H, a.saved + b * a.saved_ld, a.dh + b * H, a.dy ? a.dy + b * H : nullptr, a.dc + b * H,
                        a.dgates + b * 4 * H, a.h_raw ? a.h_raw + b * H : nullptr);
  }
}


template <typename T>
PYSEQ_ALWAYS_INLINE void gru_backward_rows_impl(const GruBackwardRows<T>& a, int64_t r0, int64_t r1) {
  const int64_t H = a.H;
  for (int64_t b = r0; b < r1; ++b) {
    gru_units_backward(H, H, a.saved + b * a.saved_ld, a.dh + b * H, a.dy + b * H, a.dgates + b * 4 * H,
                       a.dh_skip + b * H);
  }
}


template <typename T>
PYSEQ_ALWAYS_INLINE void rnn_backward_rows_impl(const RnnBackwardRows<T>& a, int64_t r0, int64_t r1) {
  const int64_t H = a.H;
  for (int64_t b = r0; b < r1; ++b) {
    rnn_units_backward(H, a.relu, a.saved + b * a.saved_ld, a.dh + b * H, a.dy + b * H, a.dgates + b * H);
  }
}

// float: ISA clones; double: one portable version (float64 is for checking, not speed).
#define PYSEQ_ROWS_KERNEL(name, Args)                                                                 \
  PYSEQ_CPU_CLONES void name(const Args<float>& a, int64_t r0, int64_t r1) { name##_impl(a, r0, r1); } \
  void name(const Args<double>& a, int64_t r0, int64_t r1) { name##_impl(a, r0, r1); }

PYSEQ_ROWS_KERNEL(lstm_forward_rows, LstmForwardRows)
PYSEQ_ROWS_KERNEL(gru_forward_rows, GruForwardRows)
PYSEQ_ROWS_KERNEL(rnn_forward_rows, RnnForwardRows)
PYSEQ_ROWS_KERNEL(lstm_backward_rows, LstmBackwardRows)
PYSEQ_ROWS_KERNEL(gru_backward_rows, GruBackwardRows)
PYSEQ_ROWS_KERNEL(rnn_backward_rows, RnnBackwardRows)
#undef PYSEQ_ROWS_KERNEL

// Runs a row kernel over the n active rows, on several threads when the step is large enough to pay for it.
template <typename Args>
void for_rows(int64_t n, int64_t row_elements, const Args& args,
              void (*kernel)(const Args&, int64_t, int64_t)) {
  const int64_t grain = std::max<int64_t>(1, kPointwiseGrain / std::max<int64_t>(1, row_elements));
  if (n <= grain) {
    kernel(args, 0, n);
  } else {
    at::parallel_for(0, n, grain, [&](int64_t r0, int64_t r1) { kernel(args, r0, r1); });
  }
}

// The cell updates of the schedule in rnn_schedule.h, on the CPU threads.
struct CpuKernels {
  template <typename S>
  void run(const LstmForwardRows<S>& a, int64_t n) const { for_rows(n, 5 * a.H, a, &lstm_forward_rows); }
  template <typename S>
  void run(const GruForwardRows<S>& a, int64_t n) const { for_rows(n, 4 * a.H, a, &gru_forward_rows); }
  template <typename S>
  void run(const RnnForwardRows<S>& a, int64_t n) const { for_rows(n, a.H, a, &rnn_forward_rows); }
  template <typename S>
  void run(const LstmBackwardRows<S>& a, int64_t n) const { for_rows(n, 5 * a.H, a, &lstm_backward_rows); }
  template <typename S>
  void run(const GruBackwardRows<S>& a, int64_t n) const { for_rows(n, 4 * a.H, a, &gru_backward_rows); }
  template <typename S>
  void run(const RnnBackwardRows<S>& a, int64_t n) const { for_rows(n, a.H, a, &rnn_backward_rows); }
};

// Sequences shorter than this skip the weight copies (the transposed W_hh of the GEMM-library schedule, the
// packed panels) that pay off over many steps: a decoder that feeds one step per call pays them every call.
constexpr int64_t kMinStepsToCopyWeights = 8;

bool long_enough_to_copy_weights(const Steps& steps) {
  return static_cast<int64_t>(steps.sizes.size()) >= kMinStepsToCopyWeights;
}

StepLayout layout_of(const Steps& steps, bool reverse) {
  return {steps.sizes.data(), steps.offsets.data(), static_cast<int64_t>(steps.sizes.size()), reverse};
}

// Above this many multiply-adds per step the backward's per-step product (dgates @ W_hh, reduction length G*H) runs
// faster through the GEMM library than through the packed kernel, unless a kernel is forced: measured GRU training
// at (T=100, B=64, I=H=512) 261 ms packed vs 232 ms ATen, equal at (B=32, H=256), packed ahead at batch 1.
constexpr int64_t kMaxPackedBackwardStepFma = int64_t(1) << 22;

// bfloat16 and float16 run through the float32 kernels unless the bfloat16 kernel serves them: their tensors are
// converted on the way in, and the results go back to the input's dtype (not the workspace, see below).
at::Tensor as_float(const at::Tensor& t) { return t.to(at::kFloat); }
std::vector<at::Tensor> to_dtype(std::vector<at::Tensor> tensors, at::ScalarType dtype) {
  for (at::Tensor& t : tensors) t = t.to(dtype);
  return tensors;
}
// The forward's results (y, h_n, c_n, workspace) of a 16-bit layer: the workspace stays float32, so that the
// backward reads the saved gates at the precision they were computed in (and converts nothing).
RnnLayerResults forward_results_to(RnnLayerResults results, at::ScalarType dtype) {
  auto& [y, h_n, c_n, workspace] = results;
  y = y.to(dtype);
  h_n = h_n.to(dtype);
  c_n = c_n.to(dtype);
  return results;
}

// float32 without a projection runs the packed-weight kernels unless the `aten` kernel is forced, or, under `auto`,
// the sequence is too short to repay packing W_hh (measured at batch 1 and 32, H=256 and 512: under 8 steps the
// GEMM library on the untransposed weights is faster, from 8 steps on the packed kernels are).
bool packed_schedule(const Dims& d, const Steps& steps) {
  const RecurrentKernel setting = recurrent_kernel_setting();
  return !d.proj && setting != RecurrentKernel::Aten &&
         (setting != RecurrentKernel::Auto || long_enough_to_copy_weights(steps));
}

template <typename T>
bool use_packed(const Dims& d, const Steps& steps) {
  return std::is_same_v<T, float> && packed_schedule(d, steps);
}

// A bfloat16 layer whose float32 counterpart would run the packed schedule runs its bfloat16 variant where the CPU
// has AVX512-BF16 (bf16_recurrent_kernel()).
bool use_packed_bf16(const at::Tensor& x, const Dims& d, const Steps& steps) {
  return x.scalar_type() == at::kBFloat16 && packed_schedule(d, steps) && bf16_recurrent_kernel() == "avx512_bf16";
}

const uint16_t* bf16_data(const at::Tensor& t) {
  return reinterpret_cast<const uint16_t*>(t.data_ptr<at::BFloat16>());
}

// The forward of a bfloat16 layer through packed_forward_bf16: x, W_ih and W_hh stay bfloat16; the biases, the
// initial state, the results and the workspace are float32 here (the caller converts the results back).
std::vector<at::Tensor> forward_bf16(const Dims& d, const Steps& steps, const at::Tensor& x, const at::Tensor& h0,
                                     const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                                     const at::Tensor& b_ih, const at::Tensor& b_hh, bool reverse, bool save) {
  const bool lstm = d.mode == CellMode::Lstm, gru = d.mode == CellMode::Gru;
  const int64_t GH = d.G * d.H, I = x.size(1);
  const at::TensorOptions f32 = x.options().dtype(at::kFloat);
  const at::Tensor xp = I % 2 ? at::constant_pad_nd(x, {0, 1}) : x.contiguous();
  const at::Tensor wi = w_ih.contiguous(), wh = w_hh.contiguous();
  const at::Tensor bias =
      !d.bias ? at::zeros({GH}, f32) : gru ? b_ih.to(at::kFloat) : b_ih.to(at::kFloat) + b_hh.to(at::kFloat);
  const at::Tensor gru_b_hh = gru ? (d.bias ? b_hh.to(at::kFloat) : at::zeros({GH}, f32)) : at::Tensor();
  at::Tensor gi = scratch(Scratch::InputProjection, {d.N, GH}, f32);
  at::Tensor y = at::empty({d.N, d.H}, f32);
  at::Tensor h = h0.to(at::kFloat).contiguous().clone();
  at::Tensor c = lstm ? c0.to(at::kFloat).contiguous().clone() : at::empty({0}, f32);
  const int64_t saved_ld = rnn_workspace_columns(d.mode, d.H, d.Hr);
  at::Tensor ws = at::empty({save ? d.N : 0, saved_ld}, f32);
  const Bf16Inputs inputs{bf16_data(xp), d.N, xp.size(1), I, bf16_data(wi), bf16_data(wh),
                          bias.data_ptr<float>(), gi.data_ptr<float>()};
  const PackedForwardArgs args{d.mode,
                               d.H,
                               d.B,
                               layout_of(steps, reverse),
                               gi.data_ptr<float>(),
                               nullptr,
                               gru ? gru_b_hh.data_ptr<float>() : nullptr,
                               h.data_ptr<float>(),
                               y.data_ptr<float>(),
                               h.data_ptr<float>(),
                               lstm ? c.data_ptr<float>() : nullptr,
                               save ? ws.data_ptr<float>() : nullptr,
                               saved_ld};
  packed_forward_bf16(args, inputs);
  return {y, h, c, ws};
}


template <typename T>
std::vector<at::Tensor> forward_impl(const Dims& d, const Steps& steps, const at::Tensor& x, const at::Tensor& h0,
                                     const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                                     const at::Tensor& b_ih, const at::Tensor& b_hh, const at::Tensor& w_hr,
                                     bool reverse, bool save) {
  ForwardState st = forward_setup(d, x, h0, c0, w_ih, b_ih, b_hh, save,
                                  scratch(Scratch::InputProjection, {d.N, d.G * d.H}, x.options()));
  if constexpr (std::is_same_v<T, float>) {
    if (use_packed<T>(d, steps)) {
      const bool lstm = d.mode == CellMode::Lstm, gru = d.mode == CellMode::Gru;
      const at::Tensor w = w_hh.contiguous();
      PackedForwardArgs args{d.mode,
                             d.H,
                             d.B,
                             layout_of(steps, reverse),
                             st.gi.data_ptr<float>(),
                             w.data_ptr<float>(),
                             gru ? st.gru_b_hh.data_ptr<float>() : nullptr,
                             st.h.data_ptr<float>(),
                             st.y.data_ptr<float>(),
                             st.h.data_ptr<float>(),
                             lstm ? st.c.data_ptr<float>() : nullptr,
                             save ? st.ws.data_ptr<float>() : nullptr,
                             st.saved_ld};
      packed_forward(args);
      return {st.y, st.h, st.c, st.ws};
    }
  }
  forward_steps<T>(d, steps, st, w_hh, w_hr, reverse, long_enough_to_copy_weights(steps), CpuKernels{});
  return {st.y, st.h, st.c, st.ws};
}

// The packed backward kernel's arguments (W_hh set by the caller).
PackedBackwardArgs packed_backward_args(const Dims& d, const Steps& steps, bool reverse, const at::Tensor& ws,
                                        BackwardState& b) {
  return {d.mode,
          d.H,
          d.B,
          layout_of(steps, reverse),
          nullptr,
          ws.data_ptr<float>(),
          ws.size(1),
          b.gy.data_ptr<float>(),
          b.dh.data_ptr<float>(),
          d.mode == CellMode::Lstm ? b.dc.data_ptr<float>() : nullptr,
          b.dgates.data_ptr<float>(),
          b.dgates.size(1)};
}

template <typename T>
std::vector<at::Tensor> backward_impl(const Dims& d, const Steps& steps, const at::Tensor& x, const at::Tensor& w_ih,
                                      const at::Tensor& w_hh, const at::Tensor& w_hr, const at::Tensor& ws,
                                      const at::Tensor& grad_y, const at::Tensor& grad_hn, const at::Tensor& grad_cn,
                                      bool reverse, bool need_dx, bool need_dh0) {
  BackwardState b = backward_setup(d, grad_y, grad_hn, grad_cn,
                                   scratch(Scratch::GateGradients, {d.N, dgates_columns(d)}, x.options()));
  bool done = false;
  if constexpr (std::is_same_v<T, float>) {
    if (use_packed<T>(d, steps) && (recurrent_kernel_setting() != RecurrentKernel::Auto ||
                                    d.B * d.G * d.H * d.H <= kMaxPackedBackwardStepFma)) {
      const at::Tensor w = w_hh.contiguous();
      PackedBackwardArgs args = packed_backward_args(d, steps, reverse, ws, b);
      args.w_hh = w.data_ptr<float>();
      packed_backward(args);
      done = true;
    }
  }
  if (!done) backward_steps<T>(d, steps, w_hh, w_hr, ws, b, reverse, need_dh0, CpuKernels{});
  return parameter_gradients(d, x, w_ih, previous_states(d, ws), b, need_dx, need_dh0);
}

// The backward of a bfloat16 layer that forward_bf16 serves: the cell backward in float32, the products on bfloat16
// operands: per step through packed_backward_bf16, which also leaves the gate gradients rounded to bfloat16 for
// the whole-sequence GEMMs (weight and input gradients) after the loop, through the GEMM library.
std::vector<at::Tensor> backward_bf16(const Dims& d, const Steps& steps, const at::Tensor& x, const at::Tensor& w_ih,
                                      const at::Tensor& w_hh, const at::Tensor& ws, const at::Tensor& grad_y,
                                      const at::Tensor& grad_hn, const at::Tensor& grad_cn, bool reverse,
                                      bool need_dx, bool need_dh0) {
  const int64_t columns = dgates_columns(d), ld = columns + columns % 2;
  const at::Tensor ws_float = as_float(ws);
  BackwardState b = backward_setup(d, as_float(grad_y), as_float(grad_hn), as_float(grad_cn),
                                   scratch(Scratch::GateGradients, {d.N, columns}, ws_float.options()));
  at::Tensor dgates = at::empty({d.N, ld}, x.options());
  if (ld > columns) dgates.narrow(1, columns, 1).zero_();
  const at::Tensor w = w_hh.contiguous();
  packed_backward_bf16(packed_backward_args(d, steps, reverse, ws_float, b), bf16_data(w),
                       reinterpret_cast<uint16_t*>(dgates.data_ptr<at::BFloat16>()), ld);
  b.dgates = dgates.narrow(1, 0, columns);
  return to_dtype(parameter_gradients(d, x.contiguous(), w_ih, previous_states(d, ws).to(x.scalar_type()), b,
                                      need_dx, need_dh0),
                  x.scalar_type());
}

void check_cpu(const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu(), "x must be on the CPU for the CPU kernel, got ", x.device());
}


}  // namespace

int64_t rnn_workspace_columns(CellMode mode, int64_t H, int64_t Hr) {
  switch (mode) {
    case CellMode::Lstm: return 5 * H + Hr;
    case CellMode::Gru: return 5 * H;
    default: return 2 * H;
  }
}

namespace {

RnnLayerResults rnn_layer_cpu(int64_t mode, const at::Tensor& x, const at::Tensor& batch_sizes, const at::Tensor& h0,
                              const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                              const at::Tensor& b_ih, const at::Tensor& b_hh, const at::Tensor& w_hr, bool reverse,
                              bool save_workspace) {
  check_cpu(x);
  const at::Tensor rows = input_rows(x);
  const Dims d = check_forward_args(mode, rows, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, /*reduced_precision=*/true);
  const Steps steps = read_steps(batch_sizes, d.N, d.B);
  if (use_packed_bf16(x, d, steps)) {
    const std::vector<at::Tensor> out =
        forward_bf16(d, steps, rows, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, save_workspace);
    return forward_results_to({in_layout_of(out[0], x), out[1], out[2], out[3]}, x.scalar_type());
  }
  if (is_16_bit_float(x)) {
    return forward_results_to(
        rnn_layer_cpu(mode, as_float(x), batch_sizes, as_float(h0), as_float(c0), as_float(w_ih), as_float(w_hh),
                      as_float(b_ih), as_float(b_hh), as_float(w_hr), reverse, save_workspace),
        x.scalar_type());
  }
  const at::Tensor xc = rows.contiguous();
  const std::vector<at::Tensor> out =
      x.scalar_type() == at::kFloat
          ? forward_impl<float>(d, steps, xc, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, save_workspace)
          : forward_impl<double>(d, steps, xc, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, save_workspace);
  return {in_layout_of(out[0], x), out[1], out[2], out[3]};
}

RnnLayerGradients rnn_layer_backward_cpu(int64_t mode, const at::Tensor& x, const at::Tensor& batch_sizes,
                                         const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& w_hr,
                                         const at::Tensor& workspace, const at::Tensor& grad_y,
                                         const at::Tensor& grad_hn, const at::Tensor& grad_cn, bool reverse,
                                         bool has_bias, bool need_dx, bool need_dh0) {
  check_cpu(x);
  const at::Tensor rows = input_rows(x), gy = input_rows(grad_y);
  const Dims d = check_backward_args(mode, rows, w_ih, w_hh, w_hr, workspace, gy, grad_hn, grad_cn, has_bias,
                                     /*reduced_precision=*/true, /*float32_workspace=*/true);
  const Steps steps = read_steps(batch_sizes, d.N, d.B);
  if (use_packed_bf16(x, d, steps)) {
    return layer_gradients(
        backward_bf16(d, steps, rows, w_ih, w_hh, workspace, gy, grad_hn, grad_cn, reverse, need_dx, need_dh0), x);
  }
  if (is_16_bit_float(x)) {
    RnnLayerGradients g = rnn_layer_backward_cpu(
        mode, as_float(x), batch_sizes, as_float(w_ih), as_float(w_hh), as_float(w_hr), as_float(workspace),
        as_float(grad_y), as_float(grad_hn), as_float(grad_cn), reverse, has_bias, need_dx, need_dh0);
    std::apply([&](auto&... t) { ((t = t.to(x.scalar_type())), ...); }, g);
    return g;
  }
  const at::Tensor xc = rows.contiguous();
  return layer_gradients(x.scalar_type() == at::kFloat
                             ? backward_impl<float>(d, steps, xc, w_ih, w_hh, w_hr, workspace, gy, grad_hn, grad_cn,
                                                    reverse, need_dx, need_dh0)
                             : backward_impl<double>(d, steps, xc, w_ih, w_hh, w_hr, workspace, gy, grad_hn, grad_cn,
                                                     reverse, need_dx, need_dh0),
                         x);
}

}  // namespace
}  // namespace pyseq

TORCH_LIBRARY_IMPL(pyseq, CPU, m) {
  m.impl("rnn_layer", &pyseq::rnn_layer_cpu);
  m.impl("rnn_layer_backward", &pyseq::rnn_layer_backward_cpu);
}
