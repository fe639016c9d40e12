// CPU recurrent layers: argument checks, then one GEMM for the input projection of the whole sequence, the time
// loop, and for backward whole-sequence GEMMs for the input and weight gradients. The time loop runs either in the
// packed-weight kernels (packed_cpu.cpp: float32 without a projection) or in the ATen-GEMM schedule below: per step
// the recurrent product through the GEMM library, then one fused pointwise pass over the active rows.
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../common/checks.h"
#include "../common/cpu_dispatch.h"
#include "../common/scratch.h"
#include "cell_rows.h"
#include "packed_cpu.h"
#include "rnn.h"

namespace pyseq {
namespace {

// Elements of pointwise work below which a step runs on one thread: a parallel region costs a few microseconds.
constexpr int64_t kPointwiseGrain = 8192;

int64_t h_prev_column(CellMode mode, int64_t H) {
  switch (mode) {
    case CellMode::Lstm: return 5 * H;
    case CellMode::Gru: return 4 * H;
    default: return H;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// This file is the ATen-GEMM schedule: the per-step recurrent product is a GEMM library call and the cell update a
// separate pass over the gates. It serves float64, the LSTM with a projection, and the `aten` kernel setting;
// float32 otherwise runs the packed-weight schedule of packed_cpu.cpp.

// out = a @ b for a: [n, K] (rows may be strided), b: [K, N] contiguous, out: [n, N].
void recurrent_product(at::Tensor out, const at::Tensor& a, const at::Tensor& b) { at::mm_out(out, a, b); }

// Pointwise step kernels: rows [r0, r1) of a step, compiled into the ISA clones of their float wrappers below.

template <typename T>
struct LstmForwardRows {
  int64_t H, Hr;
  const T* gi;  // [n, 4H] input projection rows, b_ih + b_hh folded in
  const T* gh;  // [n, 4H] h_prev @ W_hh^T
  T* c;         // [n, H] cell state, updated in place
  T* h;         // [n, Hr] hidden state; written here unless h_raw is set (then the projection writes it)
  T* y;         // [n, Hr] output rows; unused when h_raw is set
  T* h_raw;     // [n, H] o * tanh(c) before the projection, or nullptr
  T* saved;     // [n, saved_ld] workspace rows, or nullptr in inference
  int64_t saved_ld;
};

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
struct GruForwardRows {
  int64_t H;
  const T* gi;    // [n, 3H] input projection rows, b_ih folded in
  const T* gh;    // [n, 3H] h_prev @ W_hh^T
  const T* b_hh;  // [3H]
  T* h;           // [n, H] hidden state, updated from y
  T* y;           // [n, H] output rows
  T* saved;       // [n, saved_ld] or nullptr
  int64_t saved_ld;
};

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
struct RnnForwardRows {
  int64_t H;
  bool relu;
  const T* gi;  // [n, H] input projection rows, both biases folded in
  const T* gh;  // [n, H]
  T* h;         // [n, H] hidden state, updated from y
  T* y;         // [n, H]
  T* saved;     // [n, saved_ld] or nullptr
  int64_t saved_ld;
};

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
struct LstmBackwardRows {
  int64_t H;
  const T* saved;  // [n, saved_ld] workspace rows of this step
  int64_t saved_ld;
  const T* dh;     // [n, H] gradient w.r.t. h (the state's or, with a projection, already through W_hr)
  const T* dy;     // [n, H] output gradient rows to add to dh, or nullptr with a projection (then h_raw is set)
  T* dc;           // [n, H] gradient w.r.t. c, in: from step t+1, out: w.r.t. c_prev
  T* dgates;       // [n, 4H] pre-activation gradients
  T* h_raw;        // [n, H] recomputed o * tanh(c) for the projection's weight gradient, or nullptr
};

template <typename T>
PYSEQ_ALWAYS_INLINE void lstm_backward_rows_impl(const LstmBackwardRows<T>& a, int64_t r0, int64_t r1) {
  const int64_t H = a.H;
  for (int64_t b = r0; b < r1; ++b) {
    lstm_units_backward(H, H, a.saved + b * a.saved_ld, a.dh + b * H, a.dy ? a.dy + b * H : nullptr, a.dc + b * H,
                        a.dgates + b * 4 * H, a.h_raw ? a.h_raw + b * H : nullptr);
  }
}

template <typename T>
struct GruBackwardRows {
  int64_t H;
  const T* saved;  // [n, saved_ld]
  int64_t saved_ld;
  const T* dh;     // [n, H] gradient w.r.t. h
  const T* dy;     // [n, H]
  T* dgates;       // [n, 4H]: dar, daz, dhn (the hidden side, 3H contiguous) | dain
  T* dh_skip;      // [n, H] out: dh * z, the part of dh_prev that skips W_hh
};

template <typename T>
PYSEQ_ALWAYS_INLINE void gru_backward_rows_impl(const GruBackwardRows<T>& a, int64_t r0, int64_t r1) {
  const int64_t H = a.H;
  for (int64_t b = r0; b < r1; ++b) {
    gru_units_backward(H, H, a.saved + b * a.saved_ld, a.dh + b * H, a.dy + b * H, a.dgates + b * 4 * H,
                       a.dh_skip + b * H);
  }
}

template <typename T>
struct RnnBackwardRows {
  int64_t H;
  bool relu;
  const T* saved;  // [n, saved_ld]
  int64_t saved_ld;
  const T* dh;     // [n, H]
  const T* dy;     // [n, H]
  T* dgates;       // [n, H]
};

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

// dst: [n, cols] += src: [n, cols], both contiguous.
template <typename T>
void add_rows(T* dst, const T* src, int64_t n, int64_t cols) {
  for (int64_t i = 0; i < n * cols; ++i) dst[i] += src[i];
}

// ---------------------------------------------------------------------------------------------------------------

struct Steps {
  std::vector<int64_t> sizes;    // batch_sizes
  std::vector<int64_t> offsets;  // first packed row of each step
};

Steps read_steps(const at::Tensor& batch_sizes, int64_t rows, int64_t batch) {
  check_dim(batch_sizes, "batch_sizes", 1, "(T,)");
  TORCH_CHECK_TYPE(batch_sizes.scalar_type() == at::kLong, "batch_sizes must be int64, got ",
                   batch_sizes.scalar_type());
  TORCH_CHECK(batch_sizes.device().is_cpu(), "batch_sizes must be on the CPU, got ", batch_sizes.device());
  const int64_t T = batch_sizes.size(0);
  TORCH_CHECK_VALUE(T >= 1, "batch_sizes must have at least one time step");
  at::Tensor bs = batch_sizes.contiguous();
  const int64_t* p = bs.data_ptr<int64_t>();
  Steps steps{std::vector<int64_t>(p, p + T), std::vector<int64_t>(T)};
  TORCH_CHECK_VALUE(steps.sizes[0] == batch, "batch_sizes[0] must equal the batch size of the initial state (", batch,
                    "), got ", steps.sizes[0]);
  int64_t total = 0;
  for (int64_t t = 0; t < T; ++t) {
    // Zeros only occur with an empty batch (B = 0), which torch accepts and so do we: such steps do nothing.
    TORCH_CHECK_VALUE(steps.sizes[t] >= 0 && (t == 0 || steps.sizes[t] <= steps.sizes[t - 1]),
                      "batch_sizes must be non-negative and non-increasing, got ", steps.sizes[t], " at step ", t);
    steps.offsets[t] = total;
    total += steps.sizes[t];
  }
  TORCH_CHECK_VALUE(total == rows, "batch_sizes must sum to the number of rows of x (", rows, "), got ", total);
  return steps;
}

struct Dims {
  CellMode mode;
  int64_t G, H, Hr, I, B, N;
  bool proj, bias;
};

CellMode read_mode(int64_t mode) {
  TORCH_CHECK_VALUE(mode >= 0 && mode <= 3, "mode must be 0 (RNN_TANH), 1 (RNN_RELU), 2 (LSTM) or 3 (GRU), got ",
                    mode);
  return static_cast<CellMode>(mode);
}

Dims check_weights(CellMode mode, const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                   const at::Tensor& w_hr) {
  check_dim(x, "x", 2, "(N, input_size)");
  check_floating(x, "x");
  TORCH_CHECK(x.device().is_cpu(), "x must be on the CPU (this build of pyseq has CPU recurrent kernels only), got ",
              x.device());
  check_dim(w_hh, "w_hh", 2, "(gates * hidden_size, hidden_size or proj_size)");
  check_like(w_ih, "w_ih", x, "x");
  check_like(w_hh, "w_hh", x, "x");
  Dims d{};
  d.mode = mode;
  d.G = gate_count(mode);
  TORCH_CHECK(w_hh.size(0) % d.G == 0 && w_hh.size(0) > 0, "w_hh must have a positive multiple of ", d.G,
              " rows, got ", w_hh.size(0));
  d.H = w_hh.size(0) / d.G;
  d.Hr = w_hh.size(1);
  d.I = x.size(1);
  d.N = x.size(0);
  d.proj = w_hr.numel() > 0;
  check_shape(w_ih, "w_ih", {d.G * d.H, d.I});
  if (d.proj) {
    TORCH_CHECK(mode == CellMode::Lstm, "w_hr (a projection) is only supported for LSTM");
    check_like(w_hr, "w_hr", x, "x");
    check_shape(w_hr, "w_hr", {d.Hr, d.H});
  } else {
    TORCH_CHECK(d.Hr == d.H, "w_hh must have shape ", shape_str({d.G * d.H, d.H}), ", got ", shape_str(w_hh.sizes()));
  }
  return d;
}

// Sequences shorter than this skip the weight copies (the transposed W_hh of the GEMM-library schedule, the
// packed panels) that pay off over many steps: a decoder that feeds one step per call pays them every call.
constexpr int64_t kMinStepsToCopyWeights = 8;

// Tensors of one forward call: inputs as the kernels read them, outputs and the workspace.
template <typename T>
struct ForwardState {
  at::Tensor gi;        // [N, G*H] input projection
  at::Tensor gru_b_hh;  // [3H] (GRU)
  at::Tensor y, h, c;   // [N, Hr], [B, Hr] (h0 in, h_n out), [B, H] (c0 in, c_n out; LSTM)
  at::Tensor ws;        // [N, saved_ld] or [0, saved_ld]
  int64_t saved_ld;
};

// The ATen-GEMM schedule of the forward: per step, the recurrent product into a gates buffer, then the cell update.
template <typename T>
void aten_forward_steps(const Dims& d, const Steps& steps, ForwardState<T>& st, const at::Tensor& w_hh,
                        const at::Tensor& w_hr, bool reverse) {
  const int64_t H = d.H, Hr = d.Hr, GH = d.G * d.H;
  const auto opts = st.y.options();
  at::Tensor gh = at::empty({d.B, GH}, opts);
  at::Tensor h_raw = d.proj ? at::empty({d.B, H}, opts) : at::Tensor();
  // Transposed once per call when the sequence is long enough to repay the copy: the per-step product runs ~20%
  // faster on a row-major [Hr, G*H] operand than on a transposed view (measured with MKL at B=32, H=256).
  const bool copy = static_cast<int64_t>(steps.sizes.size()) >= kMinStepsToCopyWeights;
  const at::Tensor w_hh_t = copy ? w_hh.t().contiguous() : w_hh.t();
  const at::Tensor w_hr_t = d.proj ? (copy ? w_hr.t().contiguous() : w_hr.t()) : at::Tensor();
  const int64_t saved_ld = st.saved_ld;
  T* gi_p = st.gi.template data_ptr<T>();
  T* gh_p = gh.data_ptr<T>();
  T* h_p = st.h.template data_ptr<T>();
  T* y_p = st.y.template data_ptr<T>();
  T* ws_p = st.ws.numel() ? st.ws.template data_ptr<T>() : nullptr;
  const int64_t T_steps = static_cast<int64_t>(steps.sizes.size());
  int64_t active = -1;
  at::Tensor gh_active, h_active;
  for (int64_t s = 0; s < T_steps; ++s) {
    const int64_t t = reverse ? T_steps - 1 - s : s;
    const int64_t n = steps.sizes[t], row = steps.offsets[t];
    if (n != active) {  // views change only when sequences end (packed input), not every step
      active = n;
      gh_active = gh.narrow(0, 0, n);
      h_active = st.h.narrow(0, 0, n);
    }
    recurrent_product(gh_active, h_active, w_hh_t);
    T* saved = ws_p ? ws_p + row * saved_ld : nullptr;
    switch (d.mode) {
      case CellMode::Lstm: {
        LstmForwardRows<T> a{H,  Hr, gi_p + row * GH, gh_p, st.c.template data_ptr<T>(), h_p, y_p + row * Hr,
                             d.proj ? h_raw.data_ptr<T>() : nullptr, saved, saved_ld};
        for_rows(n, 5 * H, a, &lstm_forward_rows);
        break;
      }
      case CellMode::Gru: {
        GruForwardRows<T> a{H, gi_p + row * GH, gh_p, st.gru_b_hh.template data_ptr<T>(), h_p, y_p + row * H, saved,
                            saved_ld};
        for_rows(n, 4 * H, a, &gru_forward_rows);
        break;
      }
      default: {
        RnnForwardRows<T> a{H, d.mode == CellMode::RnnRelu, gi_p + row * GH, gh_p, h_p, y_p + row * H, saved, saved_ld};
        for_rows(n, H, a, &rnn_forward_rows);
      }
    }
    if (d.proj) {
      at::mm_out(h_active, h_raw.narrow(0, 0, n), w_hr_t);
      st.y.narrow(0, row, n).copy_(h_active);
    }
  }
}

StepLayout layout_of(const Steps& steps, bool reverse) {
  return {steps.sizes.data(), steps.offsets.data(), static_cast<int64_t>(steps.sizes.size()), reverse};
}

// Above this many multiply-adds per step the backward's per-step product (dgates @ W_hh, reduction length G*H) runs
// faster through the GEMM library than through the packed kernel, unless a kernel is forced: measured GRU training
// at (T=100, B=64, I=H=512) 261 ms packed vs 232 ms ATen, equal at (B=32, H=256), packed ahead at batch 1.
constexpr int64_t kMaxPackedBackwardStepFma = int64_t(1) << 22;

// float32 without a projection runs the packed-weight kernels unless the `aten` kernel is forced, or, under `auto`,
// the sequence is too short to repay packing W_hh (measured at batch 1 and 32, H=256 and 512: under 8 steps the
// GEMM library on the untransposed weights is faster, from 8 steps on the packed kernels are).
template <typename T>
bool use_packed(const Dims& d, const Steps& steps) {
  const RecurrentKernel setting = recurrent_kernel_setting();
  return std::is_same_v<T, float> && !d.proj && setting != RecurrentKernel::Aten &&
         (setting != RecurrentKernel::Auto || static_cast<int64_t>(steps.sizes.size()) >= kMinStepsToCopyWeights);
}

template <typename T>
std::vector<at::Tensor> forward_impl(const Dims& d, const Steps& steps, const at::Tensor& x, const at::Tensor& h0,
                                     const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                                     const at::Tensor& b_ih, const at::Tensor& b_hh, const at::Tensor& w_hr,
                                     bool reverse, bool save) {
  const int64_t H = d.H, Hr = d.Hr, GH = d.G * d.H;
  const bool lstm = d.mode == CellMode::Lstm, gru = d.mode == CellMode::Gru;
  const auto opts = x.options();

  ForwardState<T> st;
  st.gi = scratch(Scratch::InputProjection, {d.N, GH}, opts);
  if (d.bias) {
    at::addmm_out(st.gi, gru ? b_ih : b_ih + b_hh, x, w_ih.t());
  } else {
    at::mm_out(st.gi, x, w_ih.t());
  }
  st.gru_b_hh = gru ? (d.bias ? b_hh.contiguous() : at::zeros({GH}, opts)) : at::Tensor();
  st.y = at::empty({d.N, Hr}, opts);
  st.h = h0.clone(at::MemoryFormat::Contiguous);
  st.c = lstm ? c0.clone(at::MemoryFormat::Contiguous) : at::empty({0}, opts);
  st.saved_ld = rnn_workspace_columns(d.mode, H, Hr);
  st.ws = at::empty({save ? d.N : 0, st.saved_ld}, opts);

  if constexpr (std::is_same_v<T, float>) {
    if (use_packed<T>(d, steps)) {
      const at::Tensor w = w_hh.contiguous();
      PackedForwardArgs args{d.mode,
                             H,
                             d.B,
                             layout_of(steps, reverse),
                             st.gi.template data_ptr<float>(),
                             w.data_ptr<float>(),
                             gru ? st.gru_b_hh.template data_ptr<float>() : nullptr,
                             st.h.template data_ptr<float>(),
                             st.y.template data_ptr<float>(),
                             st.h.template data_ptr<float>(),
                             lstm ? st.c.template data_ptr<float>() : nullptr,
                             save ? st.ws.template data_ptr<float>() : nullptr,
                             st.saved_ld};
      packed_forward(args);
      return {st.y, st.h, st.c, st.ws};
    }
  }
  aten_forward_steps<T>(d, steps, st, w_hh, w_hr, reverse);
  return {st.y, st.h, st.c, st.ws};
}

// The ATen-GEMM schedule of the backward's time loop: fills dgates and leaves dh, dc at the initial states'
// gradients. With a projection it also returns dh_all (dL/dh per step) and h_raw_all for dW_hr.
template <typename T>
void aten_backward_steps(const Dims& d, const Steps& steps, const at::Tensor& w_hh, const at::Tensor& w_hr,
                         const at::Tensor& ws, const at::Tensor& gy, at::Tensor& dh, at::Tensor& dc,
                         at::Tensor& dgates, at::Tensor& dh_all, at::Tensor& h_raw_all, bool reverse) {
  const int64_t H = d.H, Hr = d.Hr, GH = d.G * d.H;
  const bool gru = d.mode == CellMode::Gru;
  const auto opts = gy.options();
  const int64_t saved_ld = ws.size(1), dg_cols = dgates.size(1);
  const at::Tensor w_hh_c = w_hh.contiguous();
  at::Tensor dh_raw = d.proj ? at::empty({d.B, H}, opts) : at::Tensor();
  at::Tensor dh_skip = gru ? at::empty({d.B, H}, opts) : at::Tensor();  // dh * z
  const T* ws_p = ws.data_ptr<T>();
  const T* gy_p = gy.data_ptr<T>();
  T* dh_p = dh.data_ptr<T>();
  T* dg_p = dgates.data_ptr<T>();
  const int64_t T_steps = static_cast<int64_t>(steps.sizes.size());
  int64_t active = -1;
  at::Tensor dh_active, dh_skip_active;
  for (int64_t s = T_steps - 1; s >= 0; --s) {
    const int64_t t = reverse ? T_steps - 1 - s : s;
    const int64_t n = steps.sizes[t], row = steps.offsets[t];
    const T* saved = ws_p + row * saved_ld;
    if (n != active) {
      active = n;
      dh_active = dh.narrow(0, 0, n);
      if (gru) dh_skip_active = dh_skip.narrow(0, 0, n);
    }
    switch (d.mode) {
      case CellMode::Lstm: {
        const T* dh_in = dh_p;
        const T* dy = gy_p + row * Hr;
        T* h_raw = nullptr;
        if (d.proj) {
          add_rows(dh_p, dy, n, Hr);
          dh_all.narrow(0, row, n).copy_(dh_active);
          at::Tensor dh_raw_n = dh_raw.narrow(0, 0, n);
          at::mm_out(dh_raw_n, dh_active, w_hr);
          dh_in = dh_raw.data_ptr<T>();
          dy = nullptr;
          h_raw = h_raw_all.data_ptr<T>() + row * H;
        }
        LstmBackwardRows<T> a{H, saved, saved_ld, dh_in, dy, dc.data_ptr<T>(), dg_p + row * dg_cols, h_raw};
        for_rows(n, 5 * H, a, &lstm_backward_rows);
        break;
      }
      case CellMode::Gru: {
        GruBackwardRows<T> a{H, saved, saved_ld, dh_p, gy_p + row * H, dg_p + row * dg_cols, dh_skip.data_ptr<T>()};
        for_rows(n, 4 * H, a, &gru_backward_rows);
        break;
      }
      default: {
        RnnBackwardRows<T> a{H, d.mode == CellMode::RnnRelu, saved, saved_ld, dh_p, gy_p + row * H, dg_p + row * H};
        for_rows(n, H, a, &rnn_backward_rows);
      }
    }
    const at::Tensor dg_rows = dgates.as_strided({n, GH}, {dg_cols, 1}, row * dg_cols);
    if (gru) {
      at::addmm_out(dh_active, dh_skip_active, dg_rows, w_hh_c);
    } else {
      recurrent_product(dh_active, dg_rows, w_hh_c);
    }
  }
}

template <typename T>
std::vector<at::Tensor> backward_impl(const Dims& d, const Steps& steps, const at::Tensor& x, const at::Tensor& w_ih,
                                      const at::Tensor& w_hh, const at::Tensor& w_hr, const at::Tensor& ws,
                                      const at::Tensor& grad_y, const at::Tensor& grad_hn, const at::Tensor& grad_cn,
                                      bool reverse, bool need_dx) {
  const int64_t H = d.H, Hr = d.Hr, GH = d.G * d.H;
  const bool lstm = d.mode == CellMode::Lstm, gru = d.mode == CellMode::Gru;
  const auto opts = x.options();

  const at::Tensor gy = grad_y.contiguous();
  at::Tensor dh = grad_hn.clone(at::MemoryFormat::Contiguous);
  at::Tensor dc = lstm ? grad_cn.clone(at::MemoryFormat::Contiguous) : at::empty({0}, opts);
  const int64_t dg_cols = gru ? 4 * H : GH;
  at::Tensor dgates = scratch(Scratch::GateGradients, {d.N, dg_cols}, opts);
  at::Tensor dh_all = d.proj ? at::empty({d.N, Hr}, opts) : at::Tensor();  // total dL/dh per step, for dW_hr
  at::Tensor h_raw_all = d.proj ? at::empty({d.N, H}, opts) : at::Tensor();

  bool done = false;
  if constexpr (std::is_same_v<T, float>) {
    if (use_packed<T>(d, steps) && (recurrent_kernel_setting() != RecurrentKernel::Auto ||
                             d.B * GH * H <= kMaxPackedBackwardStepFma)) {
      const at::Tensor w = w_hh.contiguous();
      PackedBackwardArgs args{d.mode,
                              H,
                              d.B,
                              layout_of(steps, reverse),
                              w.data_ptr<float>(),
                              ws.data_ptr<float>(),
                              ws.size(1),
                              gy.data_ptr<float>(),
                              dh.data_ptr<float>(),
                              lstm ? dc.data_ptr<float>() : nullptr,
                              dgates.data_ptr<float>(),
                              dg_cols};
      packed_backward(args);
      done = true;
    }
  }
  if (!done) aten_backward_steps<T>(d, steps, w_hh, w_hr, ws, gy, dh, dc, dgates, dh_all, h_raw_all, reverse);

  // GRU keeps the hidden-side gradients (dar, daz, dhn) in the first 3H columns and dain last, so the input side
  // (dar, daz, dain) is two column blocks; the products run on the blocks rather than on a gathered copy.
  const at::Tensor dg_hidden = dgates.narrow(1, 0, GH);
  const at::Tensor h_prev = ws.narrow(1, h_prev_column(d.mode, H), Hr);
  at::Tensor dw_hh = at::mm(dg_hidden.t(), h_prev);
  at::Tensor dx = at::empty({need_dx ? d.N : 0, d.I}, opts);
  at::Tensor dw_ih = at::empty_like(w_ih, at::MemoryFormat::Contiguous);
  at::Tensor db_ih = d.bias ? at::empty({GH}, opts) : at::empty({0}, opts);
  // (first gate row, gate rows, dgates column) of each block of the input side
  const std::vector<std::array<int64_t, 3>> blocks =
      gru ? std::vector<std::array<int64_t, 3>>{{0, 2 * H, 0}, {2 * H, H, 3 * H}}
          : std::vector<std::array<int64_t, 3>>{{0, GH, 0}};
  for (size_t k = 0; k < blocks.size(); ++k) {
    const auto [first, rows, col] = blocks[k];
    const at::Tensor dg = dgates.narrow(1, col, rows);
    if (need_dx) {
      if (k == 0) {
        at::mm_out(dx, dg, w_ih.narrow(0, first, rows));
      } else {
        dx.addmm_(dg, w_ih.narrow(0, first, rows));
      }
    }
    at::Tensor dw_block = dw_ih.narrow(0, first, rows);
    at::mm_out(dw_block, dg.t(), x);
    if (d.bias) {
      at::Tensor db_block = db_ih.narrow(0, first, rows);
      at::sum_out(db_block, dg, {0});
    }
  }
  at::Tensor db_hh = d.bias ? (gru ? dg_hidden.sum(0) : db_ih.clone()) : at::empty({0}, opts);
  at::Tensor dw_hr = d.proj ? at::mm(dh_all.t(), h_raw_all) : at::empty({0}, opts);
  return {dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh, dw_hr};
}

}  // namespace

int64_t rnn_workspace_columns(CellMode mode, int64_t H, int64_t Hr) {
  switch (mode) {
    case CellMode::Lstm: return 5 * H + Hr;
    case CellMode::Gru: return 5 * H;
    default: return 2 * H;
  }
}

std::vector<at::Tensor> rnn_forward_cpu(int64_t mode_id, const at::Tensor& x, const at::Tensor& batch_sizes,
                                        const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
                                        const at::Tensor& w_hh, const at::Tensor& b_ih, const at::Tensor& b_hh,
                                        const at::Tensor& w_hr, bool reverse, bool save_workspace) {
  const CellMode mode = read_mode(mode_id);
  Dims d = check_weights(mode, x, w_ih, w_hh, w_hr);
  check_dim(h0, "h0", 2, "(batch, hidden_size or proj_size)");
  check_like(h0, "h0", x, "x");
  d.B = h0.size(0);
  check_shape(h0, "h0", {d.B, d.Hr});
  if (mode == CellMode::Lstm) {
    check_like(c0, "c0", x, "x");
    check_shape(c0, "c0", {d.B, d.H});
  }
  d.bias = b_ih.numel() > 0 || b_hh.numel() > 0;
  if (d.bias) {
    check_like(b_ih, "b_ih", x, "x");
    check_like(b_hh, "b_hh", x, "x");
    check_shape(b_ih, "b_ih", {d.G * d.H});
    check_shape(b_hh, "b_hh", {d.G * d.H});
  }
  const Steps steps = read_steps(batch_sizes, d.N, d.B);
  const at::Tensor xc = x.contiguous();
  if (x.scalar_type() == at::kFloat) {
    return forward_impl<float>(d, steps, xc, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, save_workspace);
  }
  return forward_impl<double>(d, steps, xc, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, save_workspace);
}

std::vector<at::Tensor> rnn_backward_cpu(int64_t mode_id, const at::Tensor& x, const at::Tensor& batch_sizes,
                                         const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& w_hr,
                                         const at::Tensor& workspace, const at::Tensor& grad_y,
                                         const at::Tensor& grad_hn, const at::Tensor& grad_cn, bool reverse,
                                         bool has_bias, bool need_dx) {
  const CellMode mode = read_mode(mode_id);
  Dims d = check_weights(mode, x, w_ih, w_hh, w_hr);
  check_dim(grad_hn, "grad_hn", 2, "(batch, hidden_size or proj_size)");
  d.B = grad_hn.size(0);
  d.bias = has_bias;
  check_like(grad_hn, "grad_hn", x, "x");
  check_like(grad_y, "grad_y", x, "x");
  check_like(workspace, "workspace", x, "x");
  check_shape(grad_hn, "grad_hn", {d.B, d.Hr});
  check_shape(grad_y, "grad_y", {d.N, d.Hr});
  check_shape(workspace, "workspace", {d.N, rnn_workspace_columns(mode, d.H, d.Hr)});
  TORCH_CHECK(workspace.is_contiguous(), "workspace must be contiguous");
  if (mode == CellMode::Lstm) {
    check_like(grad_cn, "grad_cn", x, "x");
    check_shape(grad_cn, "grad_cn", {d.B, d.H});
  }
  const Steps steps = read_steps(batch_sizes, d.N, d.B);
  const at::Tensor xc = x.contiguous();
  if (x.scalar_type() == at::kFloat) {
    return backward_impl<float>(d, steps, xc, w_ih, w_hh, w_hr, workspace, grad_y, grad_hn, grad_cn, reverse, need_dx);
  }
  return backward_impl<double>(d, steps, xc, w_ih, w_hh, w_hr, workspace, grad_y, grad_hn, grad_cn, reverse, need_dx);
}

}  // namespace pyseq
