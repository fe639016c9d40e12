// The recurrent layers' schedule through ATen GEMMs, for every device: argument checks, one GEMM for the input
// projection of the whole sequence, the time loop (per step the recurrent product through the GEMM library — MKL on
// the CPU, cuBLAS on CUDA — into a preallocated buffer, then the fused cell update of the active rows), and for the
// backward whole-sequence GEMMs for the input and weight gradients.
//
// The cell update is the backend's: a `Kernels` object (CpuKernels, CudaKernels) with run(rows, n) for each *Rows
// struct of rnn_steps.h (the CPU runs row kernels on its threads, CUDA launches one kernel per step). Nothing here
// reads device memory from the host, so a CUDA time loop only queues work on the stream.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <vector>

#include "../common/checks.h"
#include "../common/float32_compute.h"
#include "rnn.h"
#include "rnn_ops.h"
#include "rnn_steps.h"

namespace pyseq {

struct Steps {
  std::vector<int64_t> sizes;    // batch_sizes
  std::vector<int64_t> offsets;  // first packed row of each step
};

// batch_sizes: [T] int64 on the CPU, non-increasing, summing to `rows`, batch_sizes[0] == batch.
inline Steps read_steps(const at::Tensor& batch_sizes, int64_t rows, int64_t batch) {
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

inline int64_t h_prev_column(CellMode mode, int64_t H) {
  switch (mode) {
    case CellMode::Lstm: return 5 * H;
    case CellMode::Gru: return 4 * H;
    default: return H;
  }
}

// The dtypes a backend's recurrent kernels take: float32 and float64, and with `reduced_precision` also bfloat16
// and float16 (computed in float32).
inline void check_recurrent_dtype(const at::Tensor& x, bool reduced_precision) {
  const at::ScalarType t = x.scalar_type();
  const bool ok = t == at::kFloat || t == at::kDouble || (reduced_precision && (t == at::kBFloat16 || t == at::kHalf));
  TORCH_CHECK_TYPE(ok, "x must be float32 or float64", reduced_precision ? " (or bfloat16, float16)" : "",
                   " on the ", x.device().type(), ", got ", t);
}

// The ops take x as [N, I] rows, or as [T, B, I] (padded input: its T*B rows, so that a layer needs no view of its
// input and output around it); y and dx then come back [T, B, *] too.
inline at::Tensor input_rows(const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.dim() == 2 || x.dim() == 3, "x must be 2-D (N, input_size) or 3-D (T, B, input_size), got ",
                    x.dim(), "-D");
  return x.dim() == 3 ? x.reshape({x.size(0) * x.size(1), x.size(2)}) : x;
}

// rows: [N, C] in the layout of x: [T, B, C] for a 3-D x (an absent output, 1-D and empty, stays as it is).
inline at::Tensor in_layout_of(const at::Tensor& rows, const at::Tensor& x) {
  return x.dim() == 3 && rows.dim() == 2 ? rows.view({x.size(0), x.size(1), rows.size(1)}) : rows;
}

// The backward's gradients (parameter_gradients' list) as rnn_layer_backward returns them: dx in the layout of x.
inline RnnLayerGradients layer_gradients(const std::vector<at::Tensor>& g, const at::Tensor& x) {
  return {in_layout_of(g[0], x), g[1], g[2], g[3], g[4], g[5], g[6], g[7]};
}

inline Dims check_weights(int64_t mode_id, const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                          const at::Tensor& w_hr, bool reduced_precision) {
  TORCH_CHECK_VALUE(mode_id >= 0 && mode_id <= 3, "mode must be 0 (RNN_TANH), 1 (RNN_RELU), 2 (LSTM) or 3 (GRU), got ",
                    mode_id);
  const CellMode mode = static_cast<CellMode>(mode_id);
  check_dim(x, "x", 2, "(N, input_size)");
  check_recurrent_dtype(x, reduced_precision);
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

// The checks of pyseq::rnn_layer's arguments.
inline Dims check_forward_args(int64_t mode, const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                               const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& b_ih,
                               const at::Tensor& b_hh, const at::Tensor& w_hr, bool reduced_precision) {
  Dims d = check_weights(mode, x, w_ih, w_hh, w_hr, reduced_precision);
  check_dim(h0, "h0", 2, "(batch, hidden_size or proj_size)");
  check_like(h0, "h0", x, "x");
  d.B = h0.size(0);
  check_shape(h0, "h0", {d.B, d.Hr});
  if (d.mode == CellMode::Lstm) {
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
  return d;
}

// The checks of pyseq::rnn_layer_backward's arguments. float32_workspace: a 16-bit layer's workspace is float32
// (the CPU's), else the workspace has x's dtype.
inline Dims check_backward_args(int64_t mode, const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                                const at::Tensor& w_hr, const at::Tensor& workspace, const at::Tensor& grad_y,
                                const at::Tensor& grad_hn, const at::Tensor& grad_cn, bool has_bias,
                                bool reduced_precision, bool float32_workspace) {
  Dims d = check_weights(mode, x, w_ih, w_hh, w_hr, reduced_precision);
  check_dim(grad_hn, "grad_hn", 2, "(batch, hidden_size or proj_size)");
  d.B = grad_hn.size(0);
  d.bias = has_bias;
  check_like(grad_hn, "grad_hn", x, "x");
  check_like(grad_y, "grad_y", x, "x");
  if (float32_workspace && is_16_bit_float(x)) {
    TORCH_CHECK_TYPE(workspace.scalar_type() == at::kFloat, "workspace must be float32 for ", x.scalar_type(),
                     " x, got ", workspace.scalar_type());
    TORCH_CHECK(workspace.device() == x.device(), "workspace must be on the device of x (", x.device(), "), got ",
                workspace.device());
  } else {
    check_like(workspace, "workspace", x, "x");
  }
  check_shape(grad_hn, "grad_hn", {d.B, d.Hr});
  check_shape(grad_y, "grad_y", {d.N, d.Hr});
  check_shape(workspace, "workspace", {d.N, rnn_workspace_columns(d.mode, d.H, d.Hr)});
  TORCH_CHECK(workspace.is_contiguous(), "workspace must be contiguous");
  if (d.mode == CellMode::Lstm) {
    check_like(grad_cn, "grad_cn", x, "x");
    check_shape(grad_cn, "grad_cn", {d.B, d.H});
  }
  return d;
}

// The kernels' view of a tensor's elements: T itself, or the 16-bit storage types of rnn_steps.h.
template <typename T>
struct StorageOf {
  using type = T;
};
template <>
struct StorageOf<at::BFloat16> {
  using type = bfloat16_t;
};
template <>
struct StorageOf<at::Half> {
  using type = float16_t;
};
template <typename T>
using storage_t = typename StorageOf<T>::type;

template <typename T>
storage_t<T>* data_of(const at::Tensor& t) {
  return reinterpret_cast<storage_t<T>*>(t.data_ptr<T>());
}

// t.narrow(dim, start, length), or t itself when that is all of it: a one-step call pays for every view it makes.
inline at::Tensor part(const at::Tensor& t, int64_t dim, int64_t start, int64_t length) {
  return start == 0 && length == t.size(dim) ? t : t.narrow(dim, start, length);
}

// ---- forward ----------------------------------------------------------------------------------------------------

// Tensors of one forward call: inputs as the kernels read them, outputs and the workspace.
struct ForwardState {
  at::Tensor gi;        // [N, G*H] input projection
  at::Tensor gru_b_hh;  // [3H] (GRU)
  at::Tensor y, h, c;   // [N, Hr], [B, Hr] (h0 in, h_n out), [B, H] (c0 in, c_n out; LSTM)
  at::Tensor ws;        // [N, saved_ld] or [0, saved_ld]
  int64_t saved_ld;
};

// gi: a [N, G*H] buffer for the input projection (the CPU reuses one per thread).
inline ForwardState forward_setup(const Dims& d, const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                                  const at::Tensor& w_ih, const at::Tensor& b_ih, const at::Tensor& b_hh, bool save,
                                  at::Tensor gi) {
  const int64_t GH = d.G * d.H;
  const bool lstm = d.mode == CellMode::Lstm, gru = d.mode == CellMode::Gru;
  const auto opts = x.options();
  ForwardState st;
  st.gi = std::move(gi);
  if (d.bias) {
    at::addmm_out(st.gi, gru ? b_ih : b_ih + b_hh, x, w_ih.t());
  } else {
    at::mm_out(st.gi, x, w_ih.t());
  }
  st.gru_b_hh = gru ? (d.bias ? b_hh.contiguous() : at::zeros({GH}, opts)) : at::Tensor();
  st.y = at::empty({d.N, d.Hr}, opts);
  st.h = h0.clone(at::MemoryFormat::Contiguous);
  st.c = lstm ? c0.clone(at::MemoryFormat::Contiguous) : at::empty({0}, opts);
  st.saved_ld = rnn_workspace_columns(d.mode, d.H, d.Hr);
  st.ws = at::empty({save ? d.N : 0, st.saved_ld}, opts);
  return st;
}

// The time loop of the forward. copy_weights: transpose W_hh (and W_hr) into row-major copies first, which the CPU's
// GEMM library multiplies faster over many steps; cuBLAS takes the transposed operand as it is.
template <typename T, typename Kernels>
void forward_steps(const Dims& d, const Steps& steps, ForwardState& st, const at::Tensor& w_hh, const at::Tensor& w_hr,
                   bool reverse, bool copy_weights, const Kernels& kernels) {
  using S = storage_t<T>;
  const int64_t H = d.H, Hr = d.Hr, GH = d.G * d.H;
  const auto opts = st.y.options();
  at::Tensor gh = at::empty({d.B, GH}, opts);
  at::Tensor h_raw = d.proj ? at::empty({d.B, H}, opts) : at::Tensor();
  const at::Tensor w_hh_t = copy_weights ? w_hh.t().contiguous() : w_hh.t();
  const at::Tensor w_hr_t = d.proj ? (copy_weights ? w_hr.t().contiguous() : w_hr.t()) : at::Tensor();
  const int64_t saved_ld = st.saved_ld;
  const S* gi_p = data_of<T>(st.gi);
  const S* gh_p = data_of<T>(gh);
  S* h_p = data_of<T>(st.h);
  S* y_p = data_of<T>(st.y);
  S* ws_p = st.ws.numel() ? data_of<T>(st.ws) : nullptr;
  const int64_t T_steps = static_cast<int64_t>(steps.sizes.size());
  int64_t active = -1;
  at::Tensor gh_active, h_active;
  for (int64_t s = 0; s < T_steps; ++s) {
    const int64_t t = reverse ? T_steps - 1 - s : s;
    const int64_t n = steps.sizes[t], row = steps.offsets[t];
    if (n == 0) continue;
    if (n != active) {  // views change only when sequences end (packed input), not every step
      active = n;
      gh_active = part(gh, 0, 0, n);
      h_active = part(st.h, 0, 0, n);
    }
    at::mm_out(gh_active, h_active, w_hh_t);
    S* saved = ws_p ? ws_p + row * saved_ld : nullptr;
    switch (d.mode) {
      case CellMode::Lstm:
        kernels.run(LstmForwardRows<S>{H, Hr, gi_p + row * GH, gh_p, data_of<T>(st.c), h_p, y_p + row * Hr,
                                       d.proj ? data_of<T>(h_raw) : nullptr, saved, saved_ld},
                    n);
        break;
      case CellMode::Gru:
        kernels.run(
            GruForwardRows<S>{H, gi_p + row * GH, gh_p, data_of<T>(st.gru_b_hh), h_p, y_p + row * H, saved, saved_ld},
            n);
        break;
      default:
        kernels.run(RnnForwardRows<S>{H, d.mode == CellMode::RnnRelu, gi_p + row * GH, gh_p, h_p, y_p + row * H, saved,
                                      saved_ld},
                    n);
    }
    if (d.proj) {
      at::mm_out(h_active, h_raw.narrow(0, 0, n), w_hr_t);
      st.y.narrow(0, row, n).copy_(h_active);
    }
  }
}

// ---- backward ---------------------------------------------------------------------------------------------------

struct BackwardState {
  at::Tensor gy;         // [N, Hr] grad_y, contiguous
  at::Tensor dh, dc;     // [B, Hr], [B, H]: in the gradients of h_n, c_n; out those of h0, c0
  at::Tensor dgates;     // [N, G*H] (GRU: [N, 4H], see GruBackwardRows)
  at::Tensor dh_all;     // [N, Hr] total dL/dh per step (projection), for dW_hr
  at::Tensor h_raw_all;  // [N, H] o * tanh(c) per step (projection), for dW_hr
};

// dgates: a [N, G*H] buffer ([N, 4H] for the GRU).
inline BackwardState backward_setup(const Dims& d, const at::Tensor& grad_y, const at::Tensor& grad_hn,
                                    const at::Tensor& grad_cn, at::Tensor dgates) {
  const auto opts = grad_y.options();
  BackwardState b;
  b.gy = grad_y.contiguous();
  b.dh = grad_hn.clone(at::MemoryFormat::Contiguous);
  b.dc = d.mode == CellMode::Lstm ? grad_cn.clone(at::MemoryFormat::Contiguous) : at::empty({0}, opts);
  b.dgates = std::move(dgates);
  b.dh_all = d.proj ? at::empty({d.N, d.Hr}, opts) : at::Tensor();
  b.h_raw_all = d.proj ? at::empty({d.N, d.H}, opts) : at::Tensor();
  return b;
}

inline int64_t dgates_columns(const Dims& d) { return d.mode == CellMode::Gru ? 4 * d.H : d.G * d.H; }

// The time loop of the backward: fills dgates (and, with a projection, dh_all and h_raw_all) and leaves dc, and dh
// when need_dh0, at the initial states' gradients (without need_dh0 the last step's product with W_hh is skipped).
template <typename T, typename Kernels>
void backward_steps(const Dims& d, const Steps& steps, const at::Tensor& w_hh, const at::Tensor& w_hr,
                    const at::Tensor& ws, BackwardState& b, bool reverse, bool need_dh0, const Kernels& kernels) {
  using S = storage_t<T>;
  const int64_t H = d.H, Hr = d.Hr, GH = d.G * d.H;
  const bool gru = d.mode == CellMode::Gru;
  const auto opts = b.gy.options();
  const int64_t saved_ld = ws.size(1), dg_cols = b.dgates.size(1);
  const at::Tensor w_hh_c = w_hh.contiguous();
  at::Tensor dh_raw = d.proj ? at::empty({d.B, H}, opts) : at::Tensor();
  at::Tensor dh_skip = gru ? at::empty({d.B, H}, opts) : at::Tensor();  // dh * z
  const S* ws_p = data_of<T>(ws);
  const S* gy_p = data_of<T>(b.gy);
  S* dh_p = data_of<T>(b.dh);
  S* dg_p = data_of<T>(b.dgates);
  const int64_t T_steps = static_cast<int64_t>(steps.sizes.size());
  int64_t active = -1;
  at::Tensor dh_active, dh_skip_active;
  for (int64_t s = T_steps - 1; s >= 0; --s) {
    const int64_t t = reverse ? T_steps - 1 - s : s;
    const int64_t n = steps.sizes[t], row = steps.offsets[t];
    if (n == 0) continue;
    const S* saved = ws_p + row * saved_ld;
    if (n != active) {
      active = n;
      dh_active = part(b.dh, 0, 0, n);
      if (gru) dh_skip_active = part(dh_skip, 0, 0, n);
    }
    switch (d.mode) {
      case CellMode::Lstm: {
        const S* dh_in = dh_p;
        const S* dy = gy_p + row * Hr;
        S* h_raw = nullptr;
        if (d.proj) {
          dh_active.add_(b.gy.narrow(0, row, n));
          b.dh_all.narrow(0, row, n).copy_(dh_active);
          at::Tensor dh_raw_n = part(dh_raw, 0, 0, n);
          at::mm_out(dh_raw_n, dh_active, w_hr);
          dh_in = data_of<T>(dh_raw);
          dy = nullptr;
          h_raw = data_of<T>(b.h_raw_all) + row * H;
        }
        kernels.run(LstmBackwardRows<S>{H, saved, saved_ld, dh_in, dy, data_of<T>(b.dc), dg_p + row * dg_cols, h_raw},
                    n);
        break;
      }
      case CellMode::Gru:
        kernels.run(
            GruBackwardRows<S>{H, saved, saved_ld, dh_p, gy_p + row * H, dg_p + row * dg_cols, data_of<T>(dh_skip)}, n);
        break;
      default:
        kernels.run(
            RnnBackwardRows<S>{H, d.mode == CellMode::RnnRelu, saved, saved_ld, dh_p, gy_p + row * H, dg_p + row * H},
            n);
    }
    if (s == 0 && !need_dh0) break;
    const at::Tensor dg_rows = b.dgates.as_strided({n, GH}, {dg_cols, 1}, row * dg_cols);
    if (gru) {
      at::addmm_out(dh_active, dh_skip_active, dg_rows, w_hh_c);
    } else {
      at::mm_out(dh_active, dg_rows, w_hh_c);
    }
  }
}

// The states h_prev of every row, [N, Hr], as columns of the workspace.
inline at::Tensor previous_states(const Dims& d, const at::Tensor& ws) {
  return ws.narrow(1, h_prev_column(d.mode, d.H), d.Hr);
}

// The whole-sequence GEMMs after the time loop. Returns dx (empty unless need_dx), dh0 (empty unless need_dh0),
// dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr as pyseq::rnn_layer_backward does.
// h_prev: [N, Hr] the state before each row's step (the workspace's columns from h_prev_column).
inline std::vector<at::Tensor> parameter_gradients(const Dims& d, const at::Tensor& x, const at::Tensor& w_ih,
                                                   const at::Tensor& h_prev, const BackwardState& b, bool need_dx,
                                                   bool need_dh0) {
  const int64_t H = d.H, GH = d.G * d.H;
  const bool gru = d.mode == CellMode::Gru;
  const auto opts = x.options();
  // GRU keeps the hidden-side gradients (dar, daz, dhn) in the first 3H columns and dain last, so the input side
  // (dar, daz, dain) is two column blocks; the products run on the blocks rather than on a gathered copy.
  const at::Tensor dg_hidden = part(b.dgates, 1, 0, GH);
  at::Tensor dw_hh = at::mm(dg_hidden.t(), h_prev);
  at::Tensor dx = need_dx ? at::empty({d.N, d.I}, opts) : at::empty({0}, opts);
  at::Tensor dw_ih = at::empty_like(w_ih, at::MemoryFormat::Contiguous);
  at::Tensor db_ih = d.bias ? at::empty({GH}, opts) : at::empty({0}, opts);
  // (first gate row, gate rows, dgates column) of each block of the input side
  const std::vector<std::array<int64_t, 3>> blocks =
      gru ? std::vector<std::array<int64_t, 3>>{{0, 2 * H, 0}, {2 * H, H, 3 * H}}
          : std::vector<std::array<int64_t, 3>>{{0, GH, 0}};
  for (size_t k = 0; k < blocks.size(); ++k) {
    const auto [first, rows, col] = blocks[k];
    const at::Tensor dg = part(b.dgates, 1, col, rows);
    if (need_dx) {
      if (k == 0) {
        at::mm_out(dx, dg, part(w_ih, 0, first, rows));
      } else {
        dx.addmm_(dg, part(w_ih, 0, first, rows));
      }
    }
    at::Tensor dw_block = part(dw_ih, 0, first, rows);
    at::mm_out(dw_block, dg.t(), x);
    if (d.bias) {
      at::Tensor db_block = part(db_ih, 0, first, rows);
      at::sum_out(db_block, dg, {0});
    }
  }
  at::Tensor db_hh = d.bias ? (gru ? dg_hidden.sum(0) : db_ih.clone()) : at::empty({0}, opts);
  at::Tensor dw_hr = d.proj ? at::mm(b.dh_all.t(), b.h_raw_all) : at::empty({0}, opts);
  return {dx, need_dh0 ? b.dh : at::empty({0}, opts), b.dc, dw_ih, dw_hh, db_ih, db_hh, dw_hr};
}

// ---- a whole op on a backend that runs the cell updates through `kernels` (no packed path) -------------------------

template <typename T, typename Kernels>
RnnLayerResults forward_with(const Kernels& kernels, const Dims& d, const Steps& steps, const at::Tensor& x,
                             const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                             const at::Tensor& b_ih, const at::Tensor& b_hh, const at::Tensor& w_hr, bool reverse,
                             bool save) {
  ForwardState st =
      forward_setup(d, x, h0, c0, w_ih, b_ih, b_hh, save, at::empty({d.N, d.G * d.H}, x.options()));
  forward_steps<T>(d, steps, st, w_hh, w_hr, reverse, /*copy_weights=*/false, kernels);
  return {st.y, st.h, st.c, st.ws};
}

template <typename T, typename Kernels>
std::vector<at::Tensor> backward_with(const Kernels& kernels, const Dims& d, const Steps& steps, const at::Tensor& x,
                                      const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& w_hr,
                                      const at::Tensor& ws, const at::Tensor& grad_y, const at::Tensor& grad_hn,
                                      const at::Tensor& grad_cn, bool reverse, bool need_dx, bool need_dh0) {
  BackwardState b = backward_setup(d, grad_y, grad_hn, grad_cn, at::empty({d.N, dgates_columns(d)}, x.options()));
  backward_steps<T>(d, steps, w_hh, w_hr, ws, b, reverse, need_dh0, kernels);
  return parameter_gradients(d, x, w_ih, previous_states(d, ws), b, need_dx, need_dh0);
}

}  // namespace pyseq
