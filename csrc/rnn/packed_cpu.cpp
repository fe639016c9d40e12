#include "packed_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <type_traits>

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

//
// bfloat16 panels hold pairs: lane v of slot s at reduction step kk holds the elements k = 2 kk and 2 kk + 1 side by
// side, the operand of vdpbf16ps (a zero pads an odd K).

// A bfloat16 value as its 16 bits.
using bf16_bits = uint16_t;

// Elements of E per reduction step of a panel lane: 1 for float32, 2 for bfloat16 pairs.
template <typename E>
constexpr int64_t pair_size() {
  return static_cast<int64_t>(sizeof(float) / sizeof(E));
}

struct Panels {
  int gates, slots;
  int64_t H, K, V;
  int64_t pair = 1;  // pair_size<E>() of the element type
  int64_t per() const { return slots / gates; }
  int64_t units_per_group() const { return V * per(); }
  int64_t groups() const { return ceil_div(H, units_per_group()); }
  int64_t k_steps() const { return ceil_div(K, pair); }
  int64_t group_size() const { return k_steps() * slots * V * pair; }  // elements of one group
};

// Where the panels come from: the logical matrix element for column `col` (= gate * H + unit) and reduction index k
// is w[col * col_stride + k * k_stride].
template <typename E>
struct PanelSource {
  const E* w;
  int64_t col_stride, k_stride;
};

// Packs groups [q0, q1). Each thread packs the groups it owns (and alone uses), inside the parallel region.
template <typename E>
PYSEQ_ALWAYS_INLINE void pack(const Panels& p, const PanelSource<E>& src, E* out, int64_t q0, int64_t q1) {
  constexpr int64_t P = pair_size<E>();
  const int64_t per = p.per(), steps = p.k_steps();
  const E* w = src.w;
  const int64_t col_stride = src.col_stride, k_stride = src.k_stride;
  for (int64_t q = q0; q < q1; ++q) {
    for (int64_t kk = 0; kk < steps; ++kk) {
      E* dst = out + (q * steps + kk) * p.slots * p.V * P;
      for (int s = 0; s < p.slots; ++s) {
        const int64_t gate = s / per, unit0 = (q * per + s % per) * p.V;
        for (int64_t v = 0; v < p.V; ++v) {
          const int64_t unit = unit0 + v;
          for (int64_t j = 0; j < P; ++j) {
            const int64_t k = kk * P + j;
            const bool inside = unit < p.H && k < p.K;
            dst[(s * p.V + v) * P + j] = inside ? w[(gate * p.H + unit) * col_stride + k * k_stride] : E(0);
          }
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

// Accumulator sets of a tile: P interleaved sets of R rows x S slots. With few rows (batch 1-2) the R*S
// accumulators are too few to cover the multiply-add latency (about 8 in flight on two FMA ports), so the
// reduction is split over P sets, summed at the end.
template <int S, int R>
constexpr int accumulator_sets() {
  return R * S >= 8 ? 1 : (8 + R * S - 1) / (R * S);
}

template <typename Vec, int P, int R, int S>
PYSEQ_ALWAYS_INLINE void zero_accumulators(Vec (&acc)[P][R][S]) {
#pragma GCC unroll 32
  for (int p = 0; p < P; ++p) {
#pragma GCC unroll 32
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
      for (int s = 0; s < S; ++s) acc[p][r][s] = Vec{};
    }
  }
}

// out[r][s] = the sum of the P sets' acc[.][r][s].
template <typename Vec, int P, int R, int S>
PYSEQ_ALWAYS_INLINE void store_accumulators(const Vec (&acc)[P][R][S], float* __restrict__ out) {
  Vec* o = reinterpret_cast<Vec*>(out);
#pragma GCC unroll 32
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int s = 0; s < S; ++s) {
      Vec sum = acc[0][r][s];
#pragma GCC unroll 8
      for (int p = 1; p < P; ++p) sum += acc[p][r][s];
      o[r * S + s] = sum;
    }
  }
}

// out: [R][S][V] = a: R rows (stride lda) of length K @ panel: [K][S][V].
template <int S, int R, int V>
PYSEQ_ALWAYS_INLINE void tile_product(int64_t K, const float* __restrict__ a, int64_t lda,
                                      const float* __restrict__ panel, float* __restrict__ out) {
  typedef typename VecT<V>::type vf;
  constexpr int P = accumulator_sets<S, R>();
  vf acc[P][R][S];
  zero_accumulators(acc);
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
  store_accumulators(acc, out);
}

// The bfloat16 tile: out: [R][S][16] float32 = a: R rows (stride lda) of K2 bfloat16 pairs @ panel: [K2][S][16][2],
// one vdpbf16ps per (row, slot, pair) with the row's pair broadcast from memory. Inline assembly rather than the
// intrinsic: the intrinsic needs the avx512bf16 target on every function it is inlined through, and these templates
// are compiled into the PYSEQ_TARGET_AVX512 thread bodies; the instruction runs only where cpu_supports(Avx512Bf16).
typedef VecT<16>::type vf16;

// acc[r][s] += the products of pair k of row r with the panel's pairs wk[s].
template <int S, int R>
PYSEQ_ALWAYS_INLINE void dot_pairs(vf16 (&acc)[R][S], const bf16_bits* __restrict__ a, int64_t lda, int64_t k,
                                   const vf16* wk) {
  typedef int32_t pair_t __attribute__((may_alias));
  vf16 wv[S];
#pragma GCC unroll 8
  for (int s = 0; s < S; ++s) wv[s] = wk[s];
#pragma GCC unroll 32
  for (int r = 0; r < R; ++r) {
    const pair_t* ar = reinterpret_cast<const pair_t*>(a + r * lda + 2 * k);
#pragma GCC unroll 8
    for (int s = 0; s < S; ++s) asm("vdpbf16ps %1%{1to16%}, %2, %0" : "+v"(acc[r][s]) : "m"(*ar), "v"(wv[s]));
  }
}

template <int S, int R, int V>
PYSEQ_ALWAYS_INLINE void tile_product(int64_t K2, const bf16_bits* __restrict__ a, int64_t lda,
                                      const bf16_bits* __restrict__ panel, float* __restrict__ out) {
  static_assert(V == 16, "bfloat16 tiles are 16 lanes wide");
  constexpr int P = accumulator_sets<S, R>();
  vf16 acc[P][R][S];
  zero_accumulators(acc);
  const vf16* w = reinterpret_cast<const vf16*>(panel);
  int64_t k = 0;
  for (; k + P <= K2; k += P, w += P * S) {
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) dot_pairs<S, R>(acc[p], a, lda, k + p, w + p * S);
  }
  for (; k < K2; ++k, w += S) dot_pairs<S, R>(acc[0], a, lda, k, w);
  store_accumulators(acc, out);
}

// tile_product for rows <= R (E: float, or bfloat16 pairs), with the row count fixed at compile time for every
// remainder.
template <int S, int R, int V, typename E>
PYSEQ_ALWAYS_INLINE void tile_product_rows(int rows, int64_t K, const E* a, int64_t lda, const E* panel, float* out) {
  if constexpr (R > 0) {
    if (rows == R) {
      tile_product<S, R, V>(K, a, lda, panel, out);
    } else {
      tile_product_rows<S, R - 1, V>(rows, K, a, lda, panel, out);
    }
  }
}

// dst[0:n] = a[0:n] + b[0:n].
PYSEQ_ALWAYS_INLINE void add_floats(float* __restrict__ dst, const float* __restrict__ a, const float* __restrict__ b,
                                    int64_t n) {
  for (int64_t j = 0; j < n; ++j) dst[j] = a[j] + b[j];
}

// dst[0:n] = src[0:n] rounded to bfloat16 (to nearest even).
PYSEQ_ALWAYS_INLINE void round_to_bf16(bf16_bits* __restrict__ dst, const float* __restrict__ src, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dst[j] = c10::BFloat16(src[j]).x;
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

// What the threads of one call share: where W_hh comes from, the panel buffer (each thread packs its own groups),
// and the two [B, H] state buffers (swapped after each step). With bfloat16 operands (E = bf16_bits) also the
// products' bfloat16 operand, rows of operand_ld: in the forward the state rounded to bfloat16 (two [B, .] buffers,
// swapped with the state), in the backward the gate gradients rounded to bfloat16 ([N, .]); and for the forward the
// bfloat16 input projection's sources with their panel buffer.
template <typename E>
struct SharedBuffers {
  PanelSource<E> source;
  E* panels;
  float* cur;
  float* next;
  E* operand = nullptr;
  E* operand_next = nullptr;
  int64_t operand_ld = 0;
  const Bf16Inputs* inputs = nullptr;
  E* input_panels = nullptr;
};

// gi = x @ W_ih^T + bias (float32) for every row and this thread's units, from bfloat16 panels of W_ih that the
// thread packs itself. The thread later reads only its own units of gi, so the time loop needs no barrier first.
template <CellMode M>
PYSEQ_ALWAYS_INLINE void project_inputs(const PackedForwardArgs& a, const SharedBuffers<bf16_bits>& sb,
                                        const Share& share) {
  constexpr int S = forward_slots(M), G = gate_count(M), V = 16, R = block_rows<S, V>();
  const Bf16Inputs& in = *sb.inputs;
  const int64_t H = a.H, GH = G * H;
  const Panels p{G, S, H, in.I, V, 2};
  const int64_t per = p.per();
  pack(p, PanelSource<bf16_bits>{in.w_ih, in.I, 1}, sb.input_panels, share.q0, share.q1);
  alignas(64) float tile[R * S * V];
  for (int64_t q = share.q0; q < share.q1; ++q) {
    const bf16_bits* panel = sb.input_panels + q * p.group_size();
    for (int64_t r0 = 0; r0 < in.rows; r0 += R) {
      const int rows = static_cast<int>(std::min<int64_t>(R, in.rows - r0));
      tile_product_rows<S, R, V>(rows, p.k_steps(), in.x + r0 * in.x_ld, in.x_ld, panel, tile);
      for (int r = 0; r < rows; ++r) {
        for (int sl = 0; sl < S; ++sl) {
          const int64_t gate = sl / per, u = (q * per + sl % per) * V;
          if (u >= H) continue;
          const int64_t nv = std::min<int64_t>(V, H - u);
          add_floats(in.gi + (r0 + r) * GH + gate * H + u, tile + (r * S + sl) * V, in.bias + gate * H + u, nv);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// One thread's part of the forward over the whole sequence. h_cur/h_next: [B, H] state buffers (both hold h0 to
// begin with), swapped after each step; the barrier at the end of a step keeps a thread from overwriting state rows
// that another thread's product still reads. E: the element type of the products' operands, float32 (the state
// itself) or bfloat16 (the state rounded after each step; then the thread also computes its part of gi first).

template <CellMode M, int V, typename E>
PYSEQ_ALWAYS_INLINE void forward_thread(const PackedForwardArgs& a, const SharedBuffers<E>& sb, int tid, int nt) {
  constexpr bool bf16 = std::is_same_v<E, bf16_bits>;
  constexpr int S = forward_slots(M), G = gate_count(M), R = block_rows<S, V>();
  const int64_t H = a.H, GH = G * H;
  const Panels p{G, S, H, H, V, pair_size<E>()};
  const Share share = share_of(p, tid, nt);
  pack(p, sb.source, sb.panels, share.q0, share.q1);
  float* h_cur = sb.cur;
  float* h_next = sb.next;
  E* op_cur;
  E* op_next = nullptr;
  int64_t ld = H;
  if constexpr (bf16) {
    project_inputs<M>(a, sb, share);
    op_cur = sb.operand;
    op_next = sb.operand_next;
    ld = sb.operand_ld;
  } else {
    op_cur = h_cur;
  }
  const bool relu = a.mode == CellMode::RnnRelu;
  alignas(64) float tile[R * S * V];
  alignas(64) float gates[4 * V];  // in inference, the activated gates go here (see cell_rows.h)
  const StepLayout& L = a.layout;
  for (int64_t s = 0; s < L.steps; ++s) {
    const int64_t t = L.reverse ? L.steps - 1 - s : s;
    const int64_t n = L.sizes[t], row = L.offsets[t];
    for (int64_t q = share.q0; q < share.q1; ++q) {
      const E* panel = sb.panels + q * p.group_size();
      for (int64_t r0 = 0; r0 < n; r0 += R) {
        const int rows = static_cast<int>(std::min<int64_t>(R, n - r0));
        tile_product_rows<S, R, V>(rows, p.k_steps(), op_cur + r0 * ld, ld, panel, tile);
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
            if constexpr (bf16) round_to_bf16(op_next + b * ld + u, hn + u, nv);
          } else {
            for (int sl = 0; sl < S; ++sl) {
              const int64_t u = (q * S + sl) * V;
              if (u >= H) break;
              const int64_t nv = std::min<int64_t>(V, H - u);
              if (saved) copy_floats(saved + H + u, hp + u, nv);
              rnn_units_forward(nv, relu, gi + u, gh + sl * V, hn + u);
              copy_floats(y + u, hn + u, nv);
              if constexpr (bf16) round_to_bf16(op_next + b * ld + u, hn + u, nv);
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
    if constexpr (bf16) {
      std::swap(op_cur, op_next);
    } else {
      op_cur = h_cur;
    }
  }
}

// One thread's part of the backward. Phase 1 (this thread's units, all active rows): the cell backward, writing the
// step's gate gradients. A barrier, since the product needs every gate column. Phase 2 (this thread's dh columns,
// the same units): dh_prev = dgates @ W_hh into the other buffer. Each thread reads and writes only its own units of
// the dh buffers, so one barrier per step suffices.

// With bfloat16 operands (E = bf16_bits), phase 1 also rounds the thread's columns of the gate gradients into the
// bfloat16 copy that phase 2 multiplies.
template <CellMode M, int V, typename E>
PYSEQ_ALWAYS_INLINE void backward_thread(const PackedBackwardArgs& a, const SharedBuffers<E>& sb, int tid, int nt) {
  constexpr bool bf16 = std::is_same_v<E, bf16_bits>;
  constexpr int S = 4, G = gate_count(M), R = block_rows<S, V>();
  const int64_t H = a.H, GH = G * H;
  const Panels p{1, S, H, GH, V, pair_size<E>()};
  const Share share = share_of(p, tid, nt);
  pack(p, sb.source, sb.panels, share.q0, share.q1);
  float* d_cur = sb.cur;
  float* d_next = sb.next;
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
        if constexpr (bf16) {
          // Every block of H columns: the gates, and the GRU's input-side dain after its hidden side. (With an odd
          // H, the GRU's last hidden-side pair takes dain's first column as its second element, against a zero
          // of the panel's padding: it adds nothing unless that gradient is not finite, and then the layer's
          // gradients are not anyway.)
          bf16_bits* copy = sb.operand + prow * sb.operand_ld + u0;
          for (int64_t c = 0; c < a.dg_ld; c += H) round_to_bf16(copy + c, dg + c, units);
        }
      }
    }
    team_barrier();
    const E* operand;
    int64_t ld;
    if constexpr (bf16) {
      operand = sb.operand;
      ld = sb.operand_ld;
    } else {
      operand = a.dgates;
      ld = a.dg_ld;
    }
    for (int64_t q = share.q0; q < share.q1; ++q) {
      const E* panel = sb.panels + q * p.group_size();
      for (int64_t r0 = 0; r0 < n; r0 += R) {
        const int rows = static_cast<int>(std::min<int64_t>(R, n - r0));
        tile_product_rows<S, R, V>(rows, p.k_steps(), operand + (row + r0) * ld, ld, panel, tile);
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

template <int V, typename E>
PYSEQ_ALWAYS_INLINE void forward_thread_any(const PackedForwardArgs& a, const SharedBuffers<E>& b, int tid, int nt) {
  switch (a.mode) {
    case CellMode::Lstm: return forward_thread<CellMode::Lstm, V>(a, b, tid, nt);
    case CellMode::Gru: return forward_thread<CellMode::Gru, V>(a, b, tid, nt);
    default: return forward_thread<CellMode::RnnTanh, V>(a, b, tid, nt);
  }
}

template <int V, typename E>
PYSEQ_ALWAYS_INLINE void backward_thread_any(const PackedBackwardArgs& a, const SharedBuffers<E>& b, int tid, int nt) {
  switch (a.mode) {
    case CellMode::Lstm: return backward_thread<CellMode::Lstm, V>(a, b, tid, nt);
    case CellMode::Gru: return backward_thread<CellMode::Gru, V>(a, b, tid, nt);
    default: return backward_thread<CellMode::RnnTanh, V>(a, b, tid, nt);
  }
}

// The per-thread bodies, compiled once per ISA. They are called from inside the parallel region (an outlined
// OpenMP body does not inherit a target attribute, so the ISA-specific code must be a function of its own).
using Float32Buffers = SharedBuffers<float>;
PYSEQ_TARGET_AVX512 void forward_thread_avx512(const PackedForwardArgs& a, const Float32Buffers& b, int tid, int nt) {
  forward_thread_any<16>(a, b, tid, nt);
}
PYSEQ_TARGET_AVX2 void forward_thread_avx2(const PackedForwardArgs& a, const Float32Buffers& b, int tid, int nt) {
  forward_thread_any<8>(a, b, tid, nt);
}
__attribute__((noinline)) void forward_thread_portable(const PackedForwardArgs& a, const Float32Buffers& b, int tid,
                                                       int nt) {
  forward_thread_any<4>(a, b, tid, nt);
}
// bfloat16 operands: AVX-512 with vdpbf16ps (the caller checks cpu_supports(Isa::Avx512Bf16)).
PYSEQ_TARGET_AVX512 void forward_thread_avx512_bf16(const PackedForwardArgs& a, const SharedBuffers<bf16_bits>& b,
                                                    int tid, int nt) {
  forward_thread_any<16>(a, b, tid, nt);
}
PYSEQ_TARGET_AVX512 void backward_thread_avx512_bf16(const PackedBackwardArgs& a, const SharedBuffers<bf16_bits>& b,
                                                     int tid, int nt) {
  backward_thread_any<16>(a, b, tid, nt);
}
PYSEQ_TARGET_AVX512 void backward_thread_avx512(const PackedBackwardArgs& a, const Float32Buffers& b, int tid,
                                                int nt) {
  backward_thread_any<16>(a, b, tid, nt);
}
PYSEQ_TARGET_AVX2 void backward_thread_avx2(const PackedBackwardArgs& a, const Float32Buffers& b, int tid, int nt) {
  backward_thread_any<8>(a, b, tid, nt);
}
__attribute__((noinline)) void backward_thread_portable(const PackedBackwardArgs& a, const Float32Buffers& b, int tid,
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

const char* name_of(RecurrentKernel kernel) { return kKernelNames[static_cast<int>(kernel)]; }

std::string recurrent_kernel_name() { return name_of(recurrent_kernel_setting()); }

RecurrentKernel recurrent_kernel_setting() { return static_cast<RecurrentKernel>(g_kernel.load()); }

RecurrentKernel resolved_recurrent_kernel() {
  const auto kernel = static_cast<RecurrentKernel>(g_kernel.load());
  if (kernel != RecurrentKernel::Auto) return kernel;
  if (cpu_supports(RecurrentKernel::Avx512)) return RecurrentKernel::Avx512;
  if (cpu_supports(RecurrentKernel::Avx2)) return RecurrentKernel::Avx2;
  return RecurrentKernel::Portable;
}

namespace {
std::atomic<bool> g_bf16_products{true};
}

void set_bf16_recurrent_kernel(const std::string& name) {
  TORCH_CHECK_VALUE(name == "auto" || name == "avx512_bf16" || name == "float32",
                    "bfloat16 recurrent kernel must be one of auto, avx512_bf16, float32; got '", name, "'");
  TORCH_CHECK_VALUE(name != "avx512_bf16" || cpu_supports(Isa::Avx512Bf16),
                    "this CPU cannot run the 'avx512_bf16' recurrent kernel (no AVX512-BF16)");
  g_bf16_products = name != "float32";
}

std::string bf16_recurrent_kernel() {
  return g_bf16_products.load() && cpu_supports(Isa::Avx512Bf16) ? "avx512_bf16" : "float32";
}

namespace {

template <typename Args>
using ThreadBody = void (*)(const Args&, const Float32Buffers&, int, int);

// One thread for a small step: starting a team costs more than it saves.
template <typename Args, typename Body>
void run_on_team(const Args& a, int64_t groups, const Body& body) {
  on_thread_team(thread_count(a.B * gate_count(a.mode) * a.H * a.H, groups), body);
}

// Starts both state buffers from `init` ([B, H]) and runs the sequence on as many threads as a step is worth; the
// threads pack W_hh from `source` into the panels `p` describes, each its own groups.
template <typename Args>
void run_packed(const Args& a, RecurrentKernel kernel, const Panels& p, const PanelSource<float>& source,
                const float* init, ThreadBody<Args> avx512, ThreadBody<Args> avx2, ThreadBody<Args> portable) {
  at::Tensor panels = scratch(Scratch::PackedWeights, {p.groups() * p.group_size()}, at::kFloat);
  at::Tensor state = state_buffers(init, a.B, a.H);
  const Float32Buffers shared{source, panels.data_ptr<float>(), state.data_ptr<float>(),
                              state.data_ptr<float>() + a.B * a.H};
  const ThreadBody<Args> body =
      kernel == RecurrentKernel::Avx512 ? avx512 : kernel == RecurrentKernel::Avx2 ? avx2 : portable;
  run_on_team(a, p.groups(), [&](int tid, int nt) { body(a, shared, tid, nt); });
}

}  // namespace

void packed_forward(const PackedForwardArgs& a) {
  const RecurrentKernel kernel = resolved_recurrent_kernel();
  const Panels p{gate_count(a.mode), forward_slots(a.mode), a.H, a.H, lanes(kernel)};
  // Row gate * H + unit of W_hh, reduction index k: w_hh[(gate * H + unit) * H + k].
  run_packed(a, kernel, p, PanelSource<float>{a.w_hh, a.H, 1}, a.h0, &forward_thread_avx512, &forward_thread_avx2,
             &forward_thread_portable);
}

void packed_forward_bf16(const PackedForwardArgs& a, const Bf16Inputs& in) {
  TORCH_CHECK(cpu_supports(Isa::Avx512Bf16), "the bfloat16 recurrent kernel needs AVX512-BF16");
  const int G = gate_count(a.mode), S = forward_slots(a.mode);
  const Panels p{G, S, a.H, a.H, 16, 2}, p_in{G, S, a.H, in.I, 16, 2};
  // W_hh's panels, then W_ih's: both whole 64-byte lines per group.
  at::Tensor panels =
      scratch(Scratch::PackedWeights, {p.groups() * (p.group_size() + p_in.group_size())}, at::kBFloat16);
  bf16_bits* hh_panels = reinterpret_cast<bf16_bits*>(panels.data_ptr<at::BFloat16>());
  at::Tensor state = state_buffers(a.h0, a.B, a.H);
  // The state as the product's operand: rows padded to whole pairs with a zero.
  const int64_t ld = a.H + a.H % 2;
  at::Tensor operand = at::zeros({2, a.B, ld}, at::kBFloat16);
  bf16_bits* op = reinterpret_cast<bf16_bits*>(operand.data_ptr<at::BFloat16>());
  for (int64_t b = 0; b < a.B; ++b) {
    round_to_bf16(op + b * ld, a.h0 + b * a.H, a.H);
    round_to_bf16(op + (a.B + b) * ld, a.h0 + b * a.H, a.H);
  }
  const SharedBuffers<bf16_bits> shared{PanelSource<bf16_bits>{in.w_hh, a.H, 1},
                                        hh_panels,
                                        state.data_ptr<float>(),
                                        state.data_ptr<float>() + a.B * a.H,
                                        op,
                                        op + a.B * ld,
                                        ld,
                                        &in,
                                        hh_panels + p.groups() * p.group_size()};
  run_on_team(a, p.groups(), [&](int tid, int nt) { forward_thread_avx512_bf16(a, shared, tid, nt); });
}

void packed_backward_bf16(const PackedBackwardArgs& a, const uint16_t* w_hh, uint16_t* dgates, int64_t dgates_ld) {
  TORCH_CHECK(cpu_supports(Isa::Avx512Bf16), "the bfloat16 recurrent kernel needs AVX512-BF16");
  const Panels p{1, 4, a.H, gate_count(a.mode) * a.H, 16, 2};
  at::Tensor panels = scratch(Scratch::PackedWeights, {p.groups() * p.group_size()}, at::kBFloat16);
  at::Tensor state = state_buffers(a.dh, a.B, a.H);
  SharedBuffers<bf16_bits> shared{PanelSource<bf16_bits>{w_hh, 1, a.H},
                                  reinterpret_cast<bf16_bits*>(panels.data_ptr<at::BFloat16>()),
                                  state.data_ptr<float>(),
                                  state.data_ptr<float>() + a.B * a.H};
  shared.operand = dgates;
  shared.operand_ld = dgates_ld;
  run_on_team(a, p.groups(), [&](int tid, int nt) { backward_thread_avx512_bf16(a, shared, tid, nt); });
}

void packed_backward(const PackedBackwardArgs& a) {
  const RecurrentKernel kernel = resolved_recurrent_kernel();
  const Panels p{1, 4, a.H, gate_count(a.mode) * a.H, lanes(kernel)};
  // Column `unit` of W_hh, reduction index k (a gate row): w_hh[k * H + unit].
  run_packed(a, kernel, p, PanelSource<float>{a.w_hh, 1, a.H}, a.dh, &backward_thread_avx512, &backward_thread_avx2,
             &backward_thread_portable);
}

}  // namespace pyseq
