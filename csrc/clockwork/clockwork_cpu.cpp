// The Clockwork RNN on the CPU. Batch rows are independent for the whole sequence, so each thread takes blocks of
// up to kRows rows and runs the time loop on them alone, with no barrier per step. Per step it computes only the
// active modules: a register tile of kRows rows x one chunk of a module's units sums, over the columns the module
// reads, the state times the weights packed once per call in one contiguous panel per tile (W_hh's rows forward, its
// columns backward), so that each weight loaded feeds kRows multiply-adds. Every sum runs in a fixed order whatever
// the thread count: deterministic.
#include "clockwork_cpu.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../common/cpu_dispatch.h"
#include "../common/float32_compute.h"
#include "clockwork_schedule.h"

namespace pyseq {
namespace {

constexpr int kRows = 4;

// Units per register tile: 128 bytes, two AVX-512 registers a row.
template <typename T>
constexpr int64_t kChunk = 128 / sizeof(T);

// Asks for the H values at `row` to come into the cache: each step reads its rows of the sequence tensors B x H apart
// from the last step's, a stride the hardware prefetchers do not follow, so each step requests the next step's rows.
template <typename T>
PYSEQ_ALWAYS_INLINE void prefetch_row(const T* row, int64_t H) {
  for (int64_t c = 0; c < H; c += 64 / sizeof(T)) __builtin_prefetch(row + c);
}

// The packed weights: one panel per tile of units, a module's units split into tiles of kChunk (the last one running
// into the next module's units, or past H into zeros). Panel (i, m) holds, for each p in [0, H), the kChunk values
// the tile multiplies by x[p]: contiguous, so that the tile's sum streams through its panel.
template <typename T>
struct PackedWeights {
  std::vector<T> values;
  int64_t H, tiles_per_module;

  const T* panel(int64_t module, int64_t tile) const {
    return values.data() + (module * tiles_per_module + tile) * H * kChunk<T>;
  }
};

// transpose true (forward): the tile of units u0.. reads w_hh[u0 + u][p]; false (backward, the columns u0.. of the
// state's gradient): w_hh[p][u0 + u].
template <typename T>
PackedWeights<T> pack(const ClockworkArgs<T>& a, bool transpose) {
  const int64_t H = a.H, tiles = (a.width + kChunk<T> - 1) / kChunk<T>;
  PackedWeights<T> w{std::vector<T>(a.modules * tiles * H * kChunk<T>, T(0)), H, tiles};
  for (int64_t i = 0; i < a.modules; ++i) {
    for (int64_t m = 0; m < tiles; ++m) {
      T* panel = const_cast<T*>(w.panel(i, m));
      const int64_t u0 = i * a.width + m * kChunk<T>;
      for (int64_t p = 0; p < H; ++p) {
        for (int64_t u = 0; u < kChunk<T> && u0 + u < H; ++u) {
          panel[p * kChunk<T> + u] = transpose ? a.w_hh[(u0 + u) * H + p] : a.w_hh[p * H + u0 + u];
        }
      }
    }
  }
  return w;
}

// chunk = values[0, n), then zeros (n <= kChunk): a vector copy for a whole chunk.
template <typename T>
PYSEQ_ALWAYS_INLINE void load_chunk(T (&chunk)[kChunk<T>], const T* values, int64_t n) {
  if (n == kChunk<T>) {
    std::copy(values, values + kChunk<T>, chunk);
  } else {
    for (int64_t u = 0; u < kChunk<T>; ++u) chunk[u] = u < n ? values[u] : T(0);
  }
}

// out[0, n) = act(pre[0, n)), the activation chosen once for the loop, so that the loop vectorizes.
template <RecurrentActivation kActivation, typename T>
PYSEQ_ALWAYS_INLINE void activate_run(const T* pre, T* out, int64_t n) {
  for (int64_t u = 0; u < n; ++u) out[u] = activate<kActivation>(pre[u]);
}

template <typename T>
PYSEQ_ALWAYS_INLINE void activate(RecurrentActivation activation, const T* pre, T* out, int64_t n) {
  switch (activation) {
    case RecurrentActivation::Relu:
      return activate_run<RecurrentActivation::Relu>(pre, out, n);
    case RecurrentActivation::Sigmoid:
      return activate_run<RecurrentActivation::Sigmoid>(pre, out, n);
    default:
      return activate_run<RecurrentActivation::Tanh>(pre, out, n);
  }
}

// d_pre[u] = d loss / d pre-activation from the outputs h and d loss / d h, for u in [u0, u1), the same way.
template <RecurrentActivation kActivation, typename T>
PYSEQ_ALWAYS_INLINE void gradient_run(const T* h, const T* dh, T* d_pre, int64_t u0, int64_t u1) {
  for (int64_t u = u0; u < u1; ++u) d_pre[u] = activation_gradient<kActivation>(h[u], dh[u]);
}

template <typename T>
PYSEQ_ALWAYS_INLINE void activation_backward(RecurrentActivation activation, const T* h, const T* dh, T* d_pre,
                                             int64_t u0, int64_t u1) {
  switch (activation) {
    case RecurrentActivation::Relu:
      return gradient_run<RecurrentActivation::Relu>(h, dh, d_pre, u0, u1);
    case RecurrentActivation::Sigmoid:
      return gradient_run<RecurrentActivation::Sigmoid>(h, dh, d_pre, u0, u1);
    default:
      return gradient_run<RecurrentActivation::Tanh>(h, dh, d_pre, u0, u1);
  }
}

// acc[r][0, kChunk) += sum over p in [p0, p1) of x[r][p] * panel[p][0, kChunk).
template <int R, typename T>
PYSEQ_ALWAYS_INLINE void accumulate(T (&acc)[R][kChunk<T>], T* const (&x)[R], const T* panel, int64_t p0, int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    const T* mp = panel + p * kChunk<T>;
    for (int r = 0; r < R; ++r) {
      const T xr = x[r][p];
      for (int64_t u = 0; u < kChunk<T>; ++u) acc[r][u] += xr * mp[u];
    }
  }
}

// The forward of rows [b0, b0 + R); h [R][H]: scratch for their states.
template <int R, typename T>
PYSEQ_ALWAYS_INLINE void forward_rows(const ClockworkArgs<T>& a, const PackedWeights<T>& w, int64_t b0, T* h) {
  const int64_t H = a.H, B = a.B;
  T* rows[R];
  for (int r = 0; r < R; ++r) {
    rows[r] = h + r * H;
    std::copy(a.h0 + (b0 + r) * H, a.h0 + (b0 + r + 1) * H, rows[r]);
  }
  T acc[R][kChunk<T>];
  for (int64_t t = 0; t < a.steps; ++t) {
    const int64_t base = t * B * H;
    if (t + 1 < a.steps) {
      for (int r = 0; r < R; ++r) prefetch_row(a.input_proj + base + (B + b0 + r) * H, H);
    }
    for (int64_t i = 0; i < a.modules; ++i) {
      const int64_t u_end = (i + 1) * a.width;
      if (!module_active(a, i, t)) {
        for (int r = 0; r < R; ++r)
          std::copy(rows[r] + i * a.width, rows[r] + u_end, a.output + base + (b0 + r) * H + i * a.width);
        continue;
      }
      for (int64_t m = 0, u0 = i * a.width; u0 < u_end; ++m, u0 += kChunk<T>) {
        const int64_t n = std::min<int64_t>(kChunk<T>, u_end - u0);
        for (int r = 0; r < R; ++r) load_chunk(acc[r], a.input_proj + base + (b0 + r) * H + u0, n);
        accumulate<R, T>(acc, rows, w.panel(i, m), a.first[i] * a.width, H);
        for (int r = 0; r < R; ++r) activate(a.activation, acc[r], a.output + base + (b0 + r) * H + u0, n);
      }
    }
    for (int r = 0; r < R; ++r) {
      T* y = a.output + base + (b0 + r) * H;
      if (t < a.lengths[b0 + r]) {
        std::copy(y, y + H, rows[r]);
      } else {
        std::fill(y, y + H, T(0));
      }
    }
  }
  for (int r = 0; r < R; ++r) std::copy(rows[r], rows[r] + H, a.h_n + (b0 + r) * H);
}

// The modules active at step t as runs of consecutive modules [begin, end): usually one (a prefix, with exponential
// periods). Returns the number of runs.
template <typename T>
PYSEQ_ALWAYS_INLINE int64_t active_runs(const ClockworkArgs<T>& a, int64_t t,
                                        int64_t (&runs)[kClockworkMaxModules][2]) {
  int64_t n = 0;
  for (int64_t i = 0; i < a.modules; ++i) {
    if (!module_active(a, i, t)) continue;
    if (n > 0 && runs[n - 1][1] == i) {
      runs[n - 1][1] = i + 1;
    } else {
      runs[n][0] = i;
      runs[n][1] = i + 1;
      ++n;
    }
  }
  return n;
}

// The backward of rows [b0, b0 + R); scratch [2][R][H]: d loss / d state, d loss / d h_t. The pre-activation
// gradients go straight to grad_input_proj, which the step's state gradient then reads.
template <int R, typename T>
PYSEQ_ALWAYS_INLINE void backward_rows(const ClockworkArgs<T>& a, const PackedWeights<T>& w, int64_t b0, T* scratch) {
  const int64_t H = a.H, B = a.B, width = a.width;
  T* dh[R];
  T* g[R];
  T* d_pre[R];
  for (int r = 0; r < R; ++r) {
    dh[r] = scratch + r * H;
    g[r] = scratch + (R + r) * H;
    std::copy(a.grad_h_n + (b0 + r) * H, a.grad_h_n + (b0 + r + 1) * H, dh[r]);
  }
  // reads[j]: the units whose weights reach column module j (the modules i with first[i] <= j) end here.
  int64_t reads[kClockworkMaxModules];
  for (int64_t j = 0, i = 0; j < a.modules; ++j) {
    while (i < a.modules && a.first[i] <= j) ++i;
    reads[j] = i * width;
  }
  int64_t runs[kClockworkMaxModules][2];
  T acc[R][kChunk<T>];
  for (int64_t t = a.steps - 1; t >= 0; --t) {
    const int64_t base = t * B * H, n_runs = active_runs(a, t, runs);
    if (t > 0) {
      for (int r = 0; r < R; ++r) {
        prefetch_row(a.grad_output + base - (B - b0 - r) * H, H);
        prefetch_row(a.output + base - (B - b0 - r) * H, H);
      }
    }
    bool running[R];
    for (int r = 0; r < R; ++r) {
      running[r] = t < a.lengths[b0 + r];
      const T* gy = a.grad_output + base + (b0 + r) * H;
      const T* y = a.output + base + (b0 + r) * H;
      d_pre[r] = a.grad_input_proj + base + (b0 + r) * H;
      std::fill(d_pre[r], d_pre[r] + H, T(0));
      if (!running[r]) {
        std::copy(dh[r], dh[r] + H, g[r]);
        continue;
      }
      for (int64_t c = 0; c < H; ++c) g[r][c] = dh[r][c] + gy[c];
      for (int64_t k = 0; k < n_runs; ++k) {
        activation_backward(a.activation, y, g[r], d_pre[r], runs[k][0] * width, runs[k][1] * width);
      }
    }
    for (int64_t j = 0; j < a.modules; ++j) {
      const int64_t c_end = (j + 1) * width;
      const bool j_active = module_active(a, j, t);
      for (int64_t m = 0, c0 = j * width; c0 < c_end; ++m, c0 += kChunk<T>) {
        const int64_t n = std::min<int64_t>(kChunk<T>, c_end - c0);
        for (int r = 0; r < R; ++r) {
          if (running[r] && j_active) {
            std::fill(acc[r], acc[r] + kChunk<T>, T(0));
          } else {
            load_chunk(acc[r], g[r] + c0, n);
          }
        }
        for (int64_t k = 0; k < n_runs; ++k) {
          const int64_t p0 = runs[k][0] * width, p1 = std::min(runs[k][1] * width, reads[j]);
          if (p0 < p1) accumulate<R, T>(acc, d_pre, w.panel(j, m), p0, p1);
        }
        for (int r = 0; r < R; ++r) std::copy(acc[r], acc[r] + n, dh[r] + c0);
      }
    }
  }
  for (int r = 0; r < R; ++r) std::copy(dh[r], dh[r] + H, a.grad_h0 + (b0 + r) * H);
}

template <typename T>
PYSEQ_ALWAYS_INLINE void forward_block(const ClockworkArgs<T>& a, const PackedWeights<T>& w, int64_t b0, int64_t rows,
                                       T* scratch) {
  switch (rows) {
    case 4:
      return forward_rows<4, T>(a, w, b0, scratch);
    case 3:
      return forward_rows<3, T>(a, w, b0, scratch);
    case 2:
      return forward_rows<2, T>(a, w, b0, scratch);
    default:
      return forward_rows<1, T>(a, w, b0, scratch);
  }
}

template <typename T>
PYSEQ_ALWAYS_INLINE void backward_block(const ClockworkArgs<T>& a, const PackedWeights<T>& w, int64_t b0, int64_t rows,
                                        T* scratch) {
  switch (rows) {
    case 4:
      return backward_rows<4, T>(a, w, b0, scratch);
    case 3:
      return backward_rows<3, T>(a, w, b0, scratch);
    case 2:
      return backward_rows<2, T>(a, w, b0, scratch);
    default:
      return backward_rows<1, T>(a, w, b0, scratch);
  }
}

// float32 compiled once per ISA level (cpu_dispatch.h), float64 as compiled.
PYSEQ_CPU_CLONES void forward_block_f32(const ClockworkArgs<float>& a, const PackedWeights<float>& w, int64_t b0,
                                        int64_t rows, float* scratch) {
  forward_block(a, w, b0, rows, scratch);
}
PYSEQ_CPU_CLONES void backward_block_f32(const ClockworkArgs<float>& a, const PackedWeights<float>& w, int64_t b0,
                                         int64_t rows, float* scratch) {
  backward_block(a, w, b0, rows, scratch);
}

// block(b0, rows, scratch) for every block of kRows batch rows, in parallel, each thread with `scratch_rows` x H
// values of scratch per row of a block.
template <typename T, typename Block>
void for_row_blocks(const ClockworkArgs<T>& a, int64_t scratch_rows, const Block& block) {
  const int64_t blocks = (a.B + kRows - 1) / kRows;
  at::parallel_for(0, blocks, 1, [&](int64_t k0, int64_t k1) {
    std::vector<T> scratch(scratch_rows * kRows * a.H);
    for (int64_t k = k0; k < k1; ++k) {
      block(k * kRows, std::min<int64_t>(kRows, a.B - k * kRows), scratch.data());
    }
  });
}

template <typename T>
void forward_on_cpu(const ClockworkArgs<T>& a) {
  const PackedWeights<T> w = pack(a, /*transpose=*/true);
  for_row_blocks(a, 1, [&](int64_t b0, int64_t rows, T* scratch) {
    if constexpr (std::is_same_v<T, float>) {
      forward_block_f32(a, w, b0, rows, scratch);
    } else {
      forward_block(a, w, b0, rows, scratch);
    }
  });
}

template <typename T>
void backward_on_cpu(const ClockworkArgs<T>& a) {
  const PackedWeights<T> w = pack(a, /*transpose=*/false);
  for_row_blocks(a, 2, [&](int64_t b0, int64_t rows, T* scratch) {
    if constexpr (std::is_same_v<T, float>) {
      backward_block_f32(a, w, b0, rows, scratch);
    } else {
      backward_block(a, w, b0, rows, scratch);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> clockwork_rnn_cpu(const at::Tensor& input_proj, const at::Tensor& h0,
                                                     const at::Tensor& w_hh, at::IntArrayRef periods,
                                                     const at::Tensor& lengths, bool relu) {
  return clockwork_rnn_on(ClockworkCpuKernels{}, input_proj, h0, w_hh, periods, lengths, relu);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> clockwork_rnn_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& output, const at::Tensor& h0,
    const at::Tensor& w_hh, at::IntArrayRef periods, const at::Tensor& lengths, bool relu) {
  return clockwork_rnn_backward_on(ClockworkCpuKernels{}, grad_output, grad_h_n, output, h0, w_hh, periods, lengths,
                                   relu);
}

}  // namespace

void ClockworkCpuKernels::forward(const ClockworkArgs<float>& a) const { forward_on_cpu(a); }
void ClockworkCpuKernels::forward(const ClockworkArgs<double>& a) const { forward_on_cpu(a); }
void ClockworkCpuKernels::backward(const ClockworkArgs<float>& a) const { backward_on_cpu(a); }
void ClockworkCpuKernels::backward(const ClockworkArgs<double>& a) const { backward_on_cpu(a); }

}  // namespace pyseq

TORCH_LIBRARY_IMPL(pyseq, CPU, m) {
  m.impl("clockwork_rnn", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::clockwork_rnn_cpu));
  m.impl("clockwork_rnn_backward", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::clockwork_rnn_backward_cpu));
}
