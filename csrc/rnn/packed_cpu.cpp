#include "packed_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "../common/cpu_dispatch.h"
#include "../common/parallel.h"
#include "../common/scratch.h"
#include "cell_rows.h"

namespace pyseq {
namespace {

std::atomic<int> g_kernel{static_cast<int>(RecurrentKernel::Auto)};

const char* const kKernelNames[] = {"auto", "aten", "portable", "avx2", "avx512"};

bool cpu_supports(RecurrentKernel kernel) {
  if (kernel == RecurrentKernel::Avx512) return cpu_supports(Isa::Avx512);
  if (kernel == RecurrentKernel::Avx2) return cpu_supports(Isa::Avx2);
  return true;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A step is shared between threads when each gets at least this many multiply-adds; below it the barrier between
// steps costs more than a second core saves. Even batch 1 at H=128 (65k) is worth sharing: such a step streams W_hh
// from L2, and two cores bring two L2s (measured: LSTM T=200, B=1, I=H=128 inference 0.67 -> 0.55 ms).
constexpr int64_t kMinStepFmaPerThread = 1 << 14;

template <int V>
struct VecT {
  typedef float type __attribute__((vector_size(V * sizeof(float))));
};

// dst[0:n] = src[0:n] for the short runs of the epilogues (a loop the compiler inlines, not a library call).
PYSEQ_ALWAYS_INLINE void copy_floats(float* __restrict__ dst, const float* __restrict__ src, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dst[j] = src[j];
}

// ---------------------------------------------------------------------------------------------------------------
// Panels. The micro-kernel computes out[r][s][:] = sum_k a[r][k] * panel[k][s][:] for S slots of V lanes. Slot s of
// group q holds gate s / per of the units (q * per + s % per) * V + lane, per = S / G unit panels per gate: the
// forward packs each gate of a unit panel side by side (LSTM: i, f, g, o of 16 units with AVX-512), the backward
// (G = 1) packs four unit panels of dh side by side.

struct Panels {
  int gates, slots;
  int64_t H, K, V;
  int64_t per() const { return slots / gates; }
  int64_t units_per_group() const { return V * per(); }
  int64_t groups() const { return ceil_div(H, units_per_group()); }
  int64_t group_floats() const { return K * slots * V; }
};

// Where the panels come from: the logical matrix element for column `col` (= gate * H + unit) and reduction index k
// is w[col * col_stride + k * k_stride].
struct PanelSource {
  const float* w;
  int64_t col_stride, k_stride;
};

// Packs groups [q0, q1). Each thread packs the groups it owns (and alone uses), inside the parallel region.
PYSEQ_ALWAYS_INLINE void pack(const Panels& p, const PanelSource& src, float* out, int64_t q0, int64_t q1) {
  const int64_t per = p.per();
  const float* w = src.w;
  const int64_t col_stride = src.col_stride, k_stride = src.k_stride;
  for (int64_t q = q0; q < q1; ++q) {
    for (int64_t k = 0; k < p.K; ++k) {
      float* dst = out + (q * p.K + k) * p.slots * p.V;
      for (int s = 0; s < p.slots; ++s) {
        const int64_t gate = s / per, unit0 = (q * per + s % per) * p.V;
        for (int64_t v = 0; v < p.V; ++v) {
          const int64_t unit = unit0 + v;
          dst[s * p.V + v] = unit < p.H ? w[(gate * p.H + unit) * col_stride + k * k_stride] : 0.0f;
        }
      }
    }
  }
}

// Register block: R rows x S slots accumulators of V lanes: 24 of the 32 vector registers with AVX-512, 12 of 16
// with AVX2 and SSE.
template <int S, int V>
constexpr int block_rows() {
  return (V == 16 ? 24 : 12) / S;
}

// out: [R][S][V] = a: R rows (stride lda) of length K @ panel: [K][S][V].
// With few rows (batch 1-2) the R*S accumulators are too few to cover the FMA latency (about 8 multiply-adds in
// flight on two FMA ports), so the reduction is split over P interleaved accumulator sets, summed at the end.
template <int S, int R, int V>
PYSEQ_ALWAYS_INLINE void tile_product(int64_t K, const float* __restrict__ a, int64_t lda,
                                      const float* __restrict__ panel, float* __restrict__ out) {
  typedef typename VecT<V>::type vf;
  constexpr int P = R * S >= 8 ? 1 : (8 + R * S - 1) / (R * S);
  vf acc[P][R][S];
#pragma GCC unroll 32
  for (int p = 0; p < P; ++p) {
#pragma GCC unroll 32
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
      for (int s = 0; s < S; ++s) acc[p][r][s] = vf{};
    }
  }
  const vf* w = reinterpret_cast<const vf*>(panel);
  int64_t k = 0;
  for (; k + P <= K; k += P, w += P * S) {
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) {
#pragma GCC unroll 32
      for (int r = 0; r < R; ++r) {
        // a[r][k] in every lane. Written as x - 0, which folds to one broadcast (x - (+0) is x for every x, -0
        // included); vf{} + x keeps an add. Kept inline: a helper returning a vector would be compiled for the
        // baseline ISA before it is inlined, and come out as one masked broadcast per lane.
        const vf ar = a[r * lda + k + p] - vf{};
#pragma GCC unroll 8
        for (int s = 0; s < S; ++s) acc[p][r][s] += ar * w[p * S + s];
      }
    }
  }
  for (; k < K; ++k, w += S) {
#pragma GCC unroll 32
    for (int r = 0; r < R; ++r) {
      const vf ar = a[r * lda + k] - vf{};
#pragma GCC unroll 8
      for (int s = 0; s < S; ++s) acc[0][r][s] += ar * w[s];
    }
  }
  vf* o = reinterpret_cast<vf*>(out);
#pragma GCC unroll 32
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int s = 0; s < S; ++s) {
      vf sum = acc[0][r][s];
#pragma GCC unroll 8
      for (int p = 1; p < P; ++p) sum += acc[p][r][s];
      o[r * S + s] = sum;
    }
  }
}

// tile_product for rows <= R, with the row count fixed at compile time for every remainder.
template <int S, int R, int V>
PYSEQ_ALWAYS_INLINE void tile_product_rows(int rows, int64_t K, const float* a, int64_t lda, const float* panel,
                                           float* out) {
  if constexpr (R > 0) {
    if (rows == R) {
      tile_product<S, R, V>(K, a, lda, panel, out);
    } else {
      tile_product_rows<S, R - 1, V>(rows, K, a, lda, panel, out);
    }
  }
}

constexpr int forward_slots(CellMode mode) { return mode == CellMode::Gru ? 3 : 4; }

// Each thread's share: groups [q0, q1) and the units they cover.
struct Share {
  int64_t q0, q1, u0, u1;
};

Share share_of(const Panels& p, int tid, int nt) {
  const int64_t groups = p.groups();
  Share s{groups * tid / nt, groups * (tid + 1) / nt, 0, 0};
  s.u0 = std::min(p.H, s.q0 * p.units_per_group());
  s.u1 = std::min(p.H, s.q1 * p.units_per_group());
  return s;
}

// Copies rows [from, to) of units [u0, u1) from src to dst ([B, H] both).
void retire_rows(const float* src, float* dst, int64_t from, int64_t to, int64_t H, int64_t u0, int64_t u1) {
  for (int64_t b = from; b < to; ++b) std::memcpy(dst + b * H + u0, src + b * H + u0, (u1 - u0) * sizeof(float));
}

// ---------------------------------------------------------------------------------------------------------------
// One thread's part of the forward over the whole sequence. h_cur/h_next: [B, H] state buffers (both hold h0 to
// begin with), swapped after each step; the barrier at the end of a step keeps a thread from overwriting state rows
// that another thread's product still reads.

template <CellMode M, int V>
PYSEQ_ALWAYS_INLINE void forward_thread(const PackedForwardArgs& a, const PanelSource& src, float* panels,
                                        float* h_cur, float* h_next, int tid, int nt) {
  constexpr int S = forward_slots(M), G = gate_count(M), R = block_rows<S, V>();
  const int64_t H = a.H, GH = G * H;
  const Panels p{G, S, H, H, V};
  const Share share = share_of(p, tid, nt);
  pack(p, src, panels, share.q0, share.q1);
  const bool relu = a.mode == CellMode::RnnRelu;
  alignas(64) float tile[R * S * V];
  alignas(64) float gates[4 * V];  // in inference, the activated gates go here (see cell_rows.h)
  const StepLayout& L = a.layout;
  for (int64_t s = 0; s < L.steps; ++s) {
    const int64_t t = L.reverse ? L.steps - 1 - s : s;
    const int64_t n = L.sizes[t], row = L.offsets[t];
    for (int64_t q = share.q0; q < share.q1; ++q) {
      const float* panel = panels + q * p.group_floats();
      for (int64_t r0 = 0; r0 < n; r0 += R) {
        const int rows = static_cast<int>(std::min<int64_t>(R, n - r0));
        tile_product_rows<S, R, V>(rows, H, h_cur + r0 * H, H, panel, tile);
        for (int r = 0; r < rows; ++r) {
          const int64_t b = r0 + r, prow = row + b;
          const float* gh = tile + r * S * V;
          const float* gi = a.gi + prow * GH;
          float* saved = a.saved ? a.saved + prow * a.saved_ld : nullptr;
          const float* hp = h_cur + b * H;
          float* hn = h_next + b * H;
          float* y = a.y + prow * H;
          if constexpr (M == CellMode::Lstm || M == CellMode::Gru) {
            const int64_t u = q * V, nv = std::min<int64_t>(V, H - u);
            float* s_gates = saved ? saved + u : gates;
            const int64_t ss = saved ? H : V;
            if (M == CellMode::Lstm) {
              float* c = a.c + b * H + u;
              if (saved) {
                copy_floats(saved + 4 * H + u, c, nv);
                copy_floats(saved + 5 * H + u, hp + u, nv);
              }
              lstm_units_forward(nv, H, gi + u, gh, V, c, hn + u, s_gates, ss);
            } else {
              if (saved) copy_floats(saved + 4 * H + u, hp + u, nv);
              gru_units_forward(nv, H, gi + u, gh, V, a.b_hh + u, hp + u, hn + u, s_gates, ss);
            }
            copy_floats(y + u, hn + u, nv);
          } else {
            for (int sl = 0; sl < S; ++sl) {
              const int64_t u = (q * S + sl) * V;
              if (u >= H) break;
              const int64_t nv = std::min<int64_t>(V, H - u);
              if (saved) copy_floats(saved + H + u, hp + u, nv);
              rnn_units_forward(nv, relu, gi + u, gh + sl * V, hn + u);
              copy_floats(y + u, hn + u, nv);
              if (saved) copy_floats(saved + u, hn + u, nv);
            }
          }
        }
      }
    }
    // Rows whose sequence ends here keep this step's state as their final one.
    const int64_t n_next = s + 1 < L.steps ? L.sizes[L.reverse ? t - 1 : t + 1] : 0;
    if (n_next < n) retire_rows(h_next, a.h_n, n_next, n, H, share.u0, share.u1);
    team_barrier();
    std::swap(h_cur, h_next);
  }
}

// One thread's part of the backward. Phase 1 (this thread's units, all active rows): the cell backward, writing the
// step's gate gradients. A barrier, since the product needs every gate column. Phase 2 (this thread's dh columns,
// the same units): dh_prev = dgates @ W_hh into the other buffer. Each thread reads and writes only its own units of
// the dh buffers, so one barrier per step suffices.

template <CellMode M, int V>
PYSEQ_ALWAYS_INLINE void backward_thread(const PackedBackwardArgs& a, const PanelSource& src, float* panels,
                                         float* d_cur, float* d_next, int tid, int nt) {
  constexpr int S = 4, G = gate_count(M), R = block_rows<S, V>();
  const int64_t H = a.H, GH = G * H;
  const Panels p{1, S, H, GH, V};
  const Share share = share_of(p, tid, nt);
  pack(p, src, panels, share.q0, share.q1);
  const int64_t units = share.u1 - share.u0, u0 = share.u0;
  const bool relu = a.mode == CellMode::RnnRelu;
  alignas(64) float tile[R * S * V];
  const StepLayout& L = a.layout;
  for (int64_t s = L.steps - 1; s >= 0; --s) {
    const int64_t t = L.reverse ? L.steps - 1 - s : s;
    const int64_t n = L.sizes[t], row = L.offsets[t];
    if (units > 0) {
      for (int64_t b = 0; b < n; ++b) {
        const int64_t prow = row + b;
        const float* saved = a.saved + prow * a.saved_ld + u0;
        const float* dh = d_cur + b * H + u0;
        const float* dy = a.grad_y + prow * H + u0;
        float* dg = a.dgates + prow * a.dg_ld + u0;
        if constexpr (M == CellMode::Lstm) {
          lstm_units_backward(units, H, saved, dh, dy, a.dc + b * H + u0, dg, static_cast<float*>(nullptr));
        } else if constexpr (M == CellMode::Gru) {
          gru_units_backward(units, H, saved, dh, dy, dg, d_next + b * H + u0);
        } else {
          rnn_units_backward(units, relu, saved, dh, dy, dg);
        }
      }
    }
    team_barrier();
    for (int64_t q = share.q0; q < share.q1; ++q) {
      const float* panel = panels + q * p.group_floats();
      for (int64_t r0 = 0; r0 < n; r0 += R) {
        const int rows = static_cast<int>(std::min<int64_t>(R, n - r0));
        tile_product_rows<S, R, V>(rows, GH, a.dgates + (row + r0) * a.dg_ld, a.dg_ld, panel, tile);
        for (int r = 0; r < rows; ++r) {
          for (int sl = 0; sl < S; ++sl) {
            const int64_t u = (q * S + sl) * V;
            if (u >= H) break;
            const int64_t nv = std::min<int64_t>(V, H - u);
            const float* src = tile + (r * S + sl) * V;
            float* dst = d_next + (r0 + r) * H + u;
            if constexpr (M == CellMode::Gru) {
              for (int64_t j = 0; j < nv; ++j) dst[j] += src[j];  // onto dh * z from phase 1
            } else {
              copy_floats(dst, src, nv);
            }
          }
        }
      }
    }
    const int64_t n_next = s > 0 ? L.sizes[L.reverse ? t + 1 : t - 1] : 0;
    if (n_next < n) retire_rows(d_next, a.dh, n_next, n, H, u0, share.u1);
    std::swap(d_cur, d_next);
  }
}

// What the threads of one call share: where W_hh comes from, the panel buffer (each thread packs its own groups),
// and the two [B, H] state buffers (swapped after each step).
struct SharedBuffers {
  PanelSource source;
  float* panels;
  float* cur;
  float* next;
};

template <int V>
PYSEQ_ALWAYS_INLINE void forward_thread_any(const PackedForwardArgs& a, const SharedBuffers& b, int tid, int nt) {
  switch (a.mode) {
    case CellMode::Lstm: return forward_thread<CellMode::Lstm, V>(a, b.source, b.panels, b.cur, b.next, tid, nt);
    case CellMode::Gru: return forward_thread<CellMode::Gru, V>(a, b.source, b.panels, b.cur, b.next, tid, nt);
    default: return forward_thread<CellMode::RnnTanh, V>(a, b.source, b.panels, b.cur, b.next, tid, nt);
  }
}

template <int V>
PYSEQ_ALWAYS_INLINE void backward_thread_any(const PackedBackwardArgs& a, const SharedBuffers& b, int tid, int nt) {
  switch (a.mode) {
    case CellMode::Lstm: return backward_thread<CellMode::Lstm, V>(a, b.source, b.panels, b.cur, b.next, tid, nt);
    case CellMode::Gru: return backward_thread<CellMode::Gru, V>(a, b.source, b.panels, b.cur, b.next, tid, nt);
    default: return backward_thread<CellMode::RnnTanh, V>(a, b.source, b.panels, b.cur, b.next, tid, nt);
  }
}

// The per-thread bodies, compiled once per ISA. They are called from inside the parallel region (an outlined
// OpenMP body does not inherit a target attribute, so the ISA-specific code must be a function of its own).
PYSEQ_TARGET_AVX512 void forward_thread_avx512(const PackedForwardArgs& a, const SharedBuffers& b, int tid, int nt) {
  forward_thread_any<16>(a, b, tid, nt);
}
PYSEQ_TARGET_AVX2 void forward_thread_avx2(const PackedForwardArgs& a, const SharedBuffers& b, int tid, int nt) {
  forward_thread_any<8>(a, b, tid, nt);
}
__attribute__((noinline)) void forward_thread_portable(const PackedForwardArgs& a, const SharedBuffers& b, int tid,
                                                       int nt) {
  forward_thread_any<4>(a, b, tid, nt);
}
PYSEQ_TARGET_AVX512 void backward_thread_avx512(const PackedBackwardArgs& a, const SharedBuffers& b, int tid, int nt) {
  backward_thread_any<16>(a, b, tid, nt);
}
PYSEQ_TARGET_AVX2 void backward_thread_avx2(const PackedBackwardArgs& a, const SharedBuffers& b, int tid, int nt) {
  backward_thread_any<8>(a, b, tid, nt);
}
__attribute__((noinline)) void backward_thread_portable(const PackedBackwardArgs& a, const SharedBuffers& b, int tid,
                                                        int nt) {
  backward_thread_any<4>(a, b, tid, nt);
}

int64_t lanes(RecurrentKernel kernel) {
  return kernel == RecurrentKernel::Avx512 ? 16 : kernel == RecurrentKernel::Avx2 ? 8 : 4;
}

// Threads for a step of `fma` multiply-adds split into `groups` panels.
int thread_count(int64_t fma, int64_t groups) {
  const int64_t by_work = std::max<int64_t>(1, fma / kMinStepFmaPerThread);
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({at::get_num_threads(), groups, by_work})));
}

// Two [B, H] state buffers, both starting from `init`.
at::Tensor state_buffers(const float* init, int64_t B, int64_t H) {
  at::Tensor buffers = at::empty({2, B, H}, at::kFloat);
  float* p = buffers.data_ptr<float>();
  std::memcpy(p, init, B * H * sizeof(float));
  std::memcpy(p + B * H, init, B * H * sizeof(float));
  return buffers;
}

}  // namespace

void set_recurrent_kernel(const std::string& name) {
  for (int i = 0; i < 5; ++i) {
    if (name == kKernelNames[i]) {
      const auto kernel = static_cast<RecurrentKernel>(i);
      TORCH_CHECK_VALUE(cpu_supports(kernel), "this CPU cannot run the '", name, "' recurrent kernel");
      g_kernel = i;
      return;
    }
  }
  TORCH_CHECK_VALUE(false, "recurrent kernel must be one of auto, aten, portable, avx2, avx512; got '", name, "'");
}

std::string recurrent_kernel_name() { return kKernelNames[g_kernel.load()]; }

RecurrentKernel recurrent_kernel_setting() { return static_cast<RecurrentKernel>(g_kernel.load()); }

RecurrentKernel resolved_recurrent_kernel() {
  const auto kernel = static_cast<RecurrentKernel>(g_kernel.load());
  if (kernel != RecurrentKernel::Auto) return kernel;
  if (cpu_supports(RecurrentKernel::Avx512)) return RecurrentKernel::Avx512;
  if (cpu_supports(RecurrentKernel::Avx2)) return RecurrentKernel::Avx2;
  return RecurrentKernel::Portable;
}

namespace {

template <typename Args>
using ThreadBody = void (*)(const Args&, const SharedBuffers&, int, int);

// Starts both state buffers from `init` ([B, H]) and runs the sequence on as many threads as a step is worth; the
// threads pack W_hh from `source` into the panels `p` describes, each its own groups.
template <typename Args>
void run_packed(const Args& a, RecurrentKernel kernel, const Panels& p, const PanelSource& source, const float* init,
                ThreadBody<Args> avx512, ThreadBody<Args> avx2, ThreadBody<Args> portable) {
  at::Tensor panels = scratch(Scratch::PackedWeights, {p.groups() * p.group_floats()}, at::kFloat);
  at::Tensor state = state_buffers(init, a.B, a.H);
  const SharedBuffers shared{source, panels.data_ptr<float>(), state.data_ptr<float>(),
                             state.data_ptr<float>() + a.B * a.H};
  const ThreadBody<Args> body =
      kernel == RecurrentKernel::Avx512 ? avx512 : kernel == RecurrentKernel::Avx2 ? avx2 : portable;
  // One thread for a small step: starting a team costs more than it saves.
  on_thread_team(thread_count(a.B * gate_count(a.mode) * a.H * a.H, p.groups()),
                 [&](int tid, int nt) { body(a, shared, tid, nt); });
}

}  // namespace

void packed_forward(const PackedForwardArgs& a) {
  const RecurrentKernel kernel = resolved_recurrent_kernel();
  const Panels p{gate_count(a.mode), forward_slots(a.mode), a.H, a.H, lanes(kernel)};
  // Row gate * H + unit of W_hh, reduction index k: w_hh[(gate * H + unit) * H + k].
  run_packed(a, kernel, p, PanelSource{a.w_hh, a.H, 1}, a.h0, &forward_thread_avx512, &forward_thread_avx2,
             &forward_thread_portable);
}

void packed_backward(const PackedBackwardArgs& a) {
  const RecurrentKernel kernel = resolved_recurrent_kernel();
  const Panels p{1, 4, a.H, gate_count(a.mode) * a.H, lanes(kernel)};
  // Column `unit` of W_hh, reduction index k (a gate row): w_hh[k * H + unit].
  run_packed(a, kernel, p, PanelSource{a.w_hh, 1, a.H}, a.dh, &backward_thread_avx512, &backward_thread_avx2,
             &backward_thread_portable);
}

}  // namespace pyseq
