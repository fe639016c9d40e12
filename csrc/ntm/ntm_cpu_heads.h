// The CPU kernels' addressing of one batch entry (every head; ntm_cpu.cpp), shared by the addressing ops and the
// fused step (ntm_step_cpu.cpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "ntm_rows.h"

namespace pyseq {

// A thread's scratch for a batch entry's addressing: one head's rows, and every head's dot products with the
// entry's memory rows ([H, N]) beside the rows' squared norms ([N]), computed in one pass over the memory.
template <typename T>
struct NtmEntryScratch {
  std::vector<T> buffer;
  NtmHeadRows<T> v;
  T *dots, *sq;
  NtmEntryScratch(int64_t N, int64_t H)
      : buffer((kNtmHeadVectors + H + 1) * N),
        v(buffer.data(), N),
        dots(buffer.data() + kNtmHeadVectors * N),
        sq(dots + H * N) {}
};

// The weights of every head of batch entry b into a.weights (when set).
void ntm_address_entry(const NtmAddressArgs<float>& a, const NtmEntryScratch<float>& s, int64_t b);
void ntm_address_entry(const NtmAddressArgs<double>& a, const NtmEntryScratch<double>& s, int64_t b);

// The write's backward for batch entry b, with ntm_write_backward_row's and ntm_write_backward_column's sums in
// their orders: a pass over the rows that vectorizes over the features (memory gradient, erase and add sums; local
// pointers that the compiler can see do not alias), and the weight gradients of eight rows interleaved.
template <typename T>
inline __attribute__((always_inline)) void ntm_write_backward_row_terms(int64_t M, T w, const T* __restrict g,
                                                                        const T* __restrict m, const T* __restrict e,
                                                                        const T* __restrict ad, T* __restrict dm,
                                                                        T* __restrict de, T* __restrict da) {
  for (int64_t c = 0; c < M; ++c) {
    const NtmWriteElementGrads<T> d = ntm_write_element_grads(g[c], w, e[c], ad[c], m[c]);
    dm[c] = d.memory;
    de[c] += d.erase;
    da[c] += d.add;
  }
}

template <typename T>
inline __attribute__((always_inline)) void ntm_write_backward_entry(const NtmWriteArgs<T>& a, int64_t b) {
  constexpr int64_t kRows = 8;
  const int64_t N = a.N, M = a.M;
  T *de = a.d_erase + b * M, *da = a.d_add + b * M;
  std::fill(de, de + M, T(0));
  std::fill(da, da + M, T(0));
  for (int64_t i = 0; i < N; ++i) {
    const int64_t x = (b * N + i) * M;
    ntm_write_backward_row_terms(M, a.weights[b * a.weights_stride + i], a.grad + x, a.memory + x, a.erase + b * M,
                                 a.add + b * M, a.d_memory + x, de, da);
  }
  int64_t i = 0;
  for (; i + kRows <= N; i += kRows) {
    T dw[kRows] = {};
    for (int64_t c = 0; c < M; ++c) {
      for (int64_t r = 0; r < kRows; ++r) dw[r] += ntm_write_element_grads(a, b, i + r, c).weight;
    }
    std::copy(dw, dw + kRows, a.d_weights + b * N + i);
  }
  for (; i < N; ++i) {
    T dw = 0;
    for (int64_t c = 0; c < M; ++c) dw += ntm_write_element_grads(a, b, i, c).weight;
    a.d_weights[b * N + i] = dw;
  }
}

// The gradients of every head of batch entry b (recomputing each head's forward first).
void ntm_address_entry_backward(const NtmAddressArgs<float>& a, const NtmEntryScratch<float>& s, int64_t b);
void ntm_address_entry_backward(const NtmAddressArgs<double>& a, const NtmEntryScratch<double>& s, int64_t b);

}  // namespace pyseq
