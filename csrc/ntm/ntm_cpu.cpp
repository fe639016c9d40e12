// NTM memory on the CPU: the row functions of ntm_rows.h in loops, one batch entry per thread (the heads of a batch
// entry share, and add into, its memory gradient), the elementwise phases in loops of their own so that they
// vectorize, the reductions between them in eight lanes. The addressing makes one pass over an entry's memory for
// every head's dot products; the rest runs on N-long rows in cache. The backward recomputes the forward's phases.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../common/cpu_dispatch.h"
#include "../common/float32_compute.h"
#include "ntm.h"
#include "ntm_cpu_heads.h"
#include "ntm_schedule.h"

namespace pyseq {
namespace {

// Rows whose dot products (ntm_row_dots) run interleaved: each row's sums keep their order, so the results are the
// row function's, but the rows' dependency chains overlap instead of running one after the other.
constexpr int64_t kRowBlock = 8;
// Heads whose dots share one pass over a block of rows (each row element loaded once for all of them).
constexpr int64_t kPassHeads = 4;

// The dots of heads [h0, h0 + G) with the kRowBlock rows from row i of batch entry b, and with first_pass the rows'
// squared norms too, into s.dots and s.sq.
template <int64_t G, typename T>
PYSEQ_ALWAYS_INLINE void block_dots(const NtmAddressArgs<T>& a, const NtmEntryScratch<T>& s, int64_t b, int64_t h0,
                                    int64_t i, bool first_pass) {
  const T* block = a.memory + (b * a.N + i) * a.M;
  const T* keys = a.key + (b * a.H + h0) * a.M;
  T dot[G][kRowBlock] = {}, sq[kRowBlock] = {};
  for (int64_t c = 0; c < a.M; ++c) {
    for (int64_t r = 0; r < kRowBlock; ++r) {
      const T x = block[r * a.M + c];
      sq[r] += x * x;
      for (int64_t g = 0; g < G; ++g) dot[g][r] += keys[g * a.M + c] * x;
    }
  }
  if (first_pass) std::copy(sq, sq + kRowBlock, s.sq + i);
  for (int64_t g = 0; g < G; ++g) std::copy(dot[g], dot[g] + kRowBlock, s.dots + (h0 + g) * a.N + i);
}

// Every head's dots with the rows of batch entry b, and the rows' squared norms (ntm_row_dots of each).
template <typename T>
PYSEQ_ALWAYS_INLINE void entry_dots(const NtmAddressArgs<T>& a, const NtmEntryScratch<T>& s, int64_t b) {
  int64_t i = 0;
  for (; i + kRowBlock <= a.N; i += kRowBlock) {
    for (int64_t h0 = 0; h0 < a.H; h0 += kPassHeads) {
      const bool first = h0 == 0;
      switch (std::min(kPassHeads, a.H - h0)) {
        case 1: block_dots<1>(a, s, b, h0, i, first); break;
        case 2: block_dots<2>(a, s, b, h0, i, first); break;
        case 3: block_dots<3>(a, s, b, h0, i, first); break;
        default: block_dots<4>(a, s, b, h0, i, first); break;
      }
    }
  }
  for (; i < a.N; ++i) {
    for (int64_t h = 0; h < a.H; ++h) {
      const NtmRowDots<T> d = ntm_row_dots(a, b, h, i);
      s.dots[h * a.N + i] = d.dot, s.sq[i] = d.sq;
    }
  }
}

// The sum and the maximum of x[0, N): eight interleaved partial results (combined in a fixed order, so the result is
// deterministic) instead of one dependency chain through all N rows.
constexpr int64_t kLanes = 8;

template <typename T>
PYSEQ_ALWAYS_INLINE T sum_rows(const T* x, int64_t N) {
  T part[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= N; i += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) part[l] += x[i + l];
  }
  for (; i < N; ++i) part[0] += x[i];
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

// std::max's semantics per element (a NaN x[i] is skipped), so any grouping gives the same result.
template <typename T>
PYSEQ_ALWAYS_INLINE T max_rows(const T* x, int64_t N, T init) {
  T part[kLanes];
  std::fill(part, part + kLanes, init);
  int64_t i = 0;
  for (; i + kLanes <= N; i += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) part[l] = std::max(part[l], x[i + l]);
  }
  for (; i < N; ++i) part[0] = std::max(part[0], x[i]);
  for (int64_t l = 1; l < kLanes; ++l) part[0] = std::max(part[0], part[l]);
  return part[0];
}

// out[i] = sum_s taps[s] in[(i + direction (r - s)) mod N], one tap at a time over the two contiguous runs of rows
// that the circular index splits into (vectorized; no index wrap per row), so each row's sum has the row functions'
// order. direction +1: ntm_shift of every row (ws from wg); -1: ntm_unshift of every row (dz from dws).
template <typename T>
PYSEQ_ALWAYS_INLINE void circular_mix(const T* taps, int64_t S, int64_t direction, const T* in, T* out, int64_t N) {
  const int64_t r = (S - 1) / 2;
  std::fill(out, out + N, T(0));
  for (int64_t s = 0; s < S; ++s) {
    const int64_t from = ntm_row(direction * (r - s), N);  // row i reads in[(i + from) mod N]
    const T weight = taps[s];
    for (int64_t i = 0; i < N - from; ++i) out[i] += weight * in[i + from];
    for (int64_t i = N - from; i < N; ++i) out[i] += weight * in[i + from - N];
  }
}

// sum_i x[i] y[i] over [0, N), in eight lanes as sum_rows.
template <typename T>
PYSEQ_ALWAYS_INLINE T dot_rows(const T* x, const T* y, int64_t N) {
  T part[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= N; i += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) part[l] += x[i + l] * y[i + l];
  }
  for (; i < N; ++i) part[0] += x[i] * y[i];
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

// ntm_shift_backward by the two contiguous runs of rows, each in eight lanes.
template <typename T>
PYSEQ_ALWAYS_INLINE void shift_backward(const NtmAddressArgs<T>& a, const NtmHeadRows<T>& v, int64_t bh, int64_t t) {
  const int64_t N = a.N, r = (a.S - 1) / 2, from = ntm_row(t - r, N);
  a.d_shift[bh * a.S + t] = dot_rows(v.wg, v.dws + from, N - from) + dot_rows(v.wg + N - from, v.dws, from);
}

// d loss / d key of head h of batch entry b (every row's coefficients complete): the rows' terms summed in row order
// per feature, kKeyChunk features at a time in a local array (which the compiler knows aliases nothing, so the loop
// over the features vectorizes).
constexpr int64_t kKeyChunk = 64;

template <typename T>
PYSEQ_ALWAYS_INLINE void key_gradient(const NtmAddressArgs<T>& a, const NtmHeadRows<T>& v, int64_t b, int64_t bh) {
  for (int64_t c0 = 0; c0 < a.M; c0 += kKeyChunk) {
    const int64_t width = std::min(kKeyChunk, a.M - c0);
    T acc[kKeyChunk] = {};
    for (int64_t i = 0; i < a.N; ++i) {
      for (int64_t c = 0; c < width; ++c) acc[c] += ntm_key_gradient_term(a, v, b, bh, i, c0 + c);
    }
    std::copy(acc, acc + width, a.d_key + bh * a.M + c0);
  }
}

// The forward phases of head h of batch entry b into s.v (the entry's dots in s already); returns (max ws, the sum
// of the sharpened weights).
template <typename T>
PYSEQ_ALWAYS_INLINE std::pair<T, T> address_head(const NtmAddressArgs<T>& a, const NtmEntryScratch<T>& s,
                                                 int64_t b, int64_t h, T key_norm) {
  const int64_t bh = b * a.H + h, N = a.N;
  const NtmHeadRows<T>& v = s.v;
  const T* dots = s.dots + h * N;
  for (int64_t i = 0; i < N; ++i) ntm_similarity(a, v, bh, i, NtmRowDots<T>{dots[i], s.sq[i]}, key_norm);
  for (int64_t i = 0; i < N; ++i) v.wc[i] = ntm_signed_similarity(a, v, bh, i);
  const T top = max_rows(v.wc, N, -std::numeric_limits<T>::infinity());
  for (int64_t i = 0; i < N; ++i) ntm_content(a, v, bh, i, top);
  const T total = sum_rows(v.wc, N);
  for (int64_t i = 0; i < N; ++i) ntm_interpolate(a, v, bh, i, total);
  circular_mix(a.shift + bh * a.S, a.S, 1, v.wg, v.ws, N);
  const T ws_max = max_rows(v.ws, N, T(0));
  for (int64_t i = 0; i < N; ++i) ntm_sharpen_normal(a, v, bh, i, ws_max);
  for (int64_t i = 0; i < N; ++i) ntm_sharpen_rest(a, v, bh, i, ws_max);
  const T z = sum_rows(v.w, N);
  for (int64_t i = 0; i < N; ++i) ntm_normalize(a, v, bh, i, z);
  return {ws_max, z};
}

template <typename T>
PYSEQ_ALWAYS_INLINE void address_entry(const NtmAddressArgs<T>& a, const NtmEntryScratch<T>& s, int64_t b) {
  entry_dots(a, s, b);
  for (int64_t h = 0; h < a.H; ++h) address_head(a, s, b, h, ntm_key_norm(a, b * a.H + h));
}

// The backward of every head of batch entry b (each recomputing its forward phases first).
template <typename T>
PYSEQ_ALWAYS_INLINE void address_entry_backward(const NtmAddressArgs<T>& a, const NtmEntryScratch<T>& s,
                                                int64_t b) {
  const int64_t N = a.N;
  const NtmHeadRows<T>& v = s.v;
  entry_dots(a, s, b);
  for (int64_t h = 0; h < a.H; ++h) {
    const int64_t bh = b * a.H + h;
    const T key_norm = ntm_key_norm(a, bh);
    const auto [ws_max, z] = address_head(a, s, b, h, key_norm);
    // Each phase's per-row terms go to a row of the scratch that is free at that point (dz until the shift's
    // backward writes it, scale and key_coef until the content's backward does, then ws), and are summed in eight
    // lanes: the elementwise loops vectorize, and no sum is one dependency chain through all N rows. (ivdep: the
    // scratch rows, the inputs and the gradients are distinct arrays, which the compiler cannot see through the
    // structs' pointers.)
    T* terms = v.dz;
#pragma GCC ivdep
    for (int64_t i = 0; i < N; ++i) terms[i] = ntm_weight_inner(a, v, bh, i);
    const T inner = sum_rows(terms, N);
#pragma GCC ivdep
    for (int64_t i = 0; i < N; ++i) terms[i] = ntm_sharpen_backward_normal(a, v, bh, i, inner);
    for (int64_t i = 0; i < N; ++i) {
      if (!ntm_is_positive_normal(v.ws[i])) terms[i] = ntm_sharpen_backward(a, v, bh, i, inner, ws_max, z);
    }
    a.d_gamma[bh] = sum_rows(terms, N);
    for (int64_t t = 0; t < a.S; ++t) shift_backward(a, v, bh, t);
    circular_mix(a.shift + bh * a.S, a.S, -1, v.dws, v.dz, N);
    T *gate_terms = v.scale, *wc_terms = v.key_coef;
#pragma GCC ivdep
    for (int64_t j = 0; j < N; ++j) {
      const NtmGateTerms<T> t = ntm_interpolate_backward(a, v, bh, j);
      gate_terms[j] = t.gate, wc_terms[j] = t.wc;
    }
    a.d_gate[bh] = sum_rows(gate_terms, N);
    const T wc_dot = sum_rows(wc_terms, N);
    terms = v.ws;
#pragma GCC ivdep
    for (int64_t i = 0; i < N; ++i) terms[i] = ntm_content_backward(a, v, bh, i, wc_dot, key_norm);
    a.d_beta[bh] = sum_rows(terms, N);
    key_gradient(a, v, b, bh);
    for (int64_t i = 0; i < N; ++i) ntm_memory_gradient(a, v, b, h, i);
  }
}

// float32 compiled once per ISA level (cpu_dispatch.h): the exp and log polynomials vectorize at its width.
PYSEQ_CPU_CLONES void address_entry_f32(const NtmAddressArgs<float>& a, const NtmEntryScratch<float>& s, int64_t b) {
  address_entry(a, s, b);
}
PYSEQ_CPU_CLONES void address_entry_backward_f32(const NtmAddressArgs<float>& a, const NtmEntryScratch<float>& s,
                                                 int64_t b) {
  address_entry_backward(a, s, b);
}

// Rows [r0, r1) of the write (r = b N + i).
template <typename T>
PYSEQ_ALWAYS_INLINE void write_rows(const NtmWriteArgs<T>& a, int64_t r0, int64_t r1) {
  for (int64_t b = r0 / a.N, i = r0 % a.N, r = r0; r < r1; ++r) {
    ntm_write_row(a, b, i);
    if (++i == a.N) i = 0, ++b;
  }
}

// The write's backward of batch entries [b0, b1).
template <typename T>
PYSEQ_ALWAYS_INLINE void write_backward_entries(const NtmWriteArgs<T>& a, int64_t b0, int64_t b1) {
  for (int64_t b = b0; b < b1; ++b) ntm_write_backward_entry(a, b);
}

PYSEQ_CPU_CLONES void write_rows_f32(const NtmWriteArgs<float>& a, int64_t r0, int64_t r1) { write_rows(a, r0, r1); }
PYSEQ_CPU_CLONES void write_backward_entries_f32(const NtmWriteArgs<float>& a, int64_t b0, int64_t b1) {
  write_backward_entries(a, b0, b1);
}

// float32 through its clones, float64 as compiled.
void run_write_rows(const NtmWriteArgs<float>& a, int64_t r0, int64_t r1) { write_rows_f32(a, r0, r1); }
void run_write_rows(const NtmWriteArgs<double>& a, int64_t r0, int64_t r1) { write_rows(a, r0, r1); }
void run_write_backward(const NtmWriteArgs<float>& a, int64_t b0, int64_t b1) {
  write_backward_entries_f32(a, b0, b1);
}
void run_write_backward(const NtmWriteArgs<double>& a, int64_t b0, int64_t b1) { write_backward_entries(a, b0, b1); }

// entry(a, scratch, b) for every batch entry b, in parallel, each thread with its own scratch.
template <typename T, typename Entry>
void for_each_entry(const NtmAddressArgs<T>& a, const Entry& entry) {
  at::parallel_for(0, a.B, 1, [&](int64_t b0, int64_t b1) {
    NtmEntryScratch<T> scratch(a.N, a.H);  // written through its pointers
    for (int64_t b = b0; b < b1; ++b) entry(a, scratch, b);
  });
}

// The per-row work of each phase on the CPU (ntm_schedule.h): loops over batch entries or memory rows, in parallel.
struct CpuKernels {
  c10::DeviceType device() const { return c10::DeviceType::CPU; }

  template <typename T>
  void address(const NtmAddressArgs<T>& a) const {
    for_each_entry(a, [](const auto& a, const auto& s, int64_t b) { ntm_address_entry(a, s, b); });
  }

  template <typename T>
  void address_backward(const NtmAddressArgs<T>& a) const {
    for_each_entry(a, [](const auto& a, const auto& s, int64_t b) { ntm_address_entry_backward(a, s, b); });
  }

  template <typename T>
  void write(const NtmWriteArgs<T>& a) const {
    const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, a.M));  // rows per task
    at::parallel_for(0, a.B * a.N, grain, [&](int64_t r0, int64_t r1) { run_write_rows(a, r0, r1); });
  }

  template <typename T>
  void write_backward(const NtmWriteArgs<T>& a) const {
    at::parallel_for(0, a.B, 1, [&](int64_t b0, int64_t b1) { run_write_backward(a, b0, b1); });
  }
};

}  // namespace

void ntm_address_entry(const NtmAddressArgs<float>& a, const NtmEntryScratch<float>& s, int64_t b) {
  address_entry_f32(a, s, b);
}
void ntm_address_entry(const NtmAddressArgs<double>& a, const NtmEntryScratch<double>& s, int64_t b) {
  address_entry(a, s, b);
}
void ntm_address_entry_backward(const NtmAddressArgs<float>& a, const NtmEntryScratch<float>& s, int64_t b) {
  address_entry_backward_f32(a, s, b);
}
void ntm_address_entry_backward(const NtmAddressArgs<double>& a, const NtmEntryScratch<double>& s, int64_t b) {
  address_entry_backward(a, s, b);
}

namespace {

at::Tensor ntm_address_cpu(const at::Tensor& memory, const at::Tensor& key, const at::Tensor& beta,
                           const at::Tensor& gate, const at::Tensor& shift, const at::Tensor& gamma,
                           const at::Tensor& prev_weights) {
  return ntm_address_on(CpuKernels{}, memory, key, beta, gate, shift, gamma, prev_weights);
}

NtmAddressGradients ntm_address_backward_cpu(const at::Tensor& grad_weights, const at::Tensor& memory,
                                             const at::Tensor& key, const at::Tensor& beta, const at::Tensor& gate,
                                             const at::Tensor& shift, const at::Tensor& gamma,
                                             const at::Tensor& prev_weights) {
  return ntm_address_backward_on(CpuKernels{}, grad_weights, memory, key, beta, gate, shift, gamma, prev_weights);
}

at::Tensor ntm_write_cpu(const at::Tensor& memory, const at::Tensor& weights, const at::Tensor& erase,
                         const at::Tensor& add) {
  return ntm_write_on(CpuKernels{}, memory, weights, erase, add);
}

NtmWriteGradients ntm_write_backward_cpu(const at::Tensor& grad_memory, const at::Tensor& memory,
                                         const at::Tensor& weights, const at::Tensor& erase, const at::Tensor& add) {
  return ntm_write_backward_on(CpuKernels{}, grad_memory, memory, weights, erase, add);
}

}  // namespace
}  // namespace pyseq

TORCH_LIBRARY_IMPL(pyseq, CPU, m) {
  m.impl("ntm_address", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::ntm_address_cpu));
  m.impl("ntm_address_backward", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::ntm_address_backward_cpu));
  m.impl("ntm_write", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::ntm_write_cpu));
  m.impl("ntm_write_backward", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::ntm_write_backward_cpu));
}
