// The K x K products of the CRF recursions on the CPU, over rows padded to whole 64-byte vectors (see padded_tags).
//
// Each 64-byte block of the output is accumulated in registers over all K rows (GCC vector types: one zmm register
// in the AVX-512 clone, two ymm in the AVX2 one, four xmm in the baseline), with two or four independent
// accumulators. Written as `out[j] += p[i] * m[i][j]` over i, the output would go through memory at every i, and the
// store-to-load latency of that chain, not the arithmetic, would set the speed.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../common/cpu_dispatch.h"
#include "../common/parallel.h"
#include "../common/vec.h"
#include "crf_math.h"

namespace pyseq {

// out[j] = sum_i p[i] * m[i * Kp + j] for j in [0, Kp). Kp: a multiple of 64 / sizeof(T).
template <typename T>
PYSEQ_ALWAYS_INLINE void vector_matrix_product(const T* __restrict__ p, const T* __restrict__ m, int64_t K, int64_t Kp,
                                               T* __restrict__ out) {
  using B = Block<T>;
  for (int64_t jb = 0; jb < Kp; jb += B::lanes) {
    typename B::Vec a0{}, a1{}, a2{}, a3{};
    const T* __restrict__ col = m + jb;
    int64_t i = 0;
    for (; i + 4 <= K; i += 4) {
      a0 += p[i] * B::load(col + i * Kp);
      a1 += p[i + 1] * B::load(col + (i + 1) * Kp);
      a2 += p[i + 2] * B::load(col + (i + 2) * Kp);
      a3 += p[i + 3] * B::load(col + (i + 3) * Kp);
    }
    for (; i < K; ++i) a0 += p[i] * B::load(col + i * Kp);
    B::store(out + jb, (a0 + a1) + (a2 + a3));
  }
}

// Max-plus product with argmax: best[j] = max_i (d[i] + m[i * Kp + j]), arg[j] = the lowest i attaining it (0 when
// every term is -inf), for j in [0, Kp). The rows are split in two halves scanned side by side (two dependency
// chains), then merged so that ties still go to the lower i.
template <typename T>
PYSEQ_ALWAYS_INLINE void max_plus_product(const T* __restrict__ d, const T* __restrict__ m, int64_t K, int64_t Kp,
                                          T* __restrict__ best, int32_t* __restrict__ arg) {
  using B = Block<T>;
  const int64_t half = (K + 1) / 2;
  for (int64_t jb = 0; jb < Kp; jb += B::lanes) {
    typename B::Vec b0 = B::splat(neg_inf<T>()), b1 = b0;
    // The row indices as vectors, stepped by a vector add (building a splat from a scalar inside the loop compiles
    // to one insert per lane).
    const typename B::IndexVec one = B::splat_index(1);
    typename B::IndexVec row0 = B::splat_index(0), row1 = B::splat_index(half);
    typename B::IndexVec i0 = row0, i1 = row1;
    const T* __restrict__ col = m + jb;
    int64_t i = 0;
    for (; i + half < K; ++i) {
      const typename B::Vec v0 = d[i] + B::load(col + i * Kp);
      const typename B::Vec v1 = d[i + half] + B::load(col + (i + half) * Kp);
      const typename B::IndexVec up0 = v0 > b0, up1 = v1 > b1;  // strict: the lower row wins a tie
      b0 = up0 ? v0 : b0;
      i0 = up0 ? row0 : i0;
      b1 = up1 ? v1 : b1;
      i1 = up1 ? row1 : i1;
      row0 += one;
      row1 += one;
    }
    for (; i < half; ++i) {  // K odd: the first half has one row more
      const typename B::Vec v0 = d[i] + B::load(col + i * Kp);
      const typename B::IndexVec up0 = v0 > b0;
      b0 = up0 ? v0 : b0;
      i0 = up0 ? row0 : i0;
      row0 += one;
    }
    const typename B::IndexVec second = b1 > b0;
    B::store(best + jb, second ? b1 : b0);
    const typename B::IndexVec winner = second ? i1 : i0;
    for (int l = 0; l < B::lanes; ++l) arg[jb + l] = static_cast<int32_t>(winner[l]);
  }
}

// The emissions of the next step of each sequence of a chunk [b0, b0 + count), [count, Kp] with -inf padding. A
// row is staged right after a sequence's step, a whole round of the other sequences' steps before it is read: read
// right after the copy, the full-vector loads would wait on the copy's narrower stores (a store-forwarding stall
// per step). Emissions of step t of sequence b are at em + b * stride_b + t * stride_t.
template <typename T>
class StagedEmissions {
 public:
  StagedEmissions(const T* em, int64_t stride_b, int64_t stride_t, int64_t K, int64_t Kp, int64_t b0, int64_t count)
      : em_(em), stride_b_(stride_b), stride_t_(stride_t), K_(K), Kp_(Kp), b0_(b0), rows_(count * Kp, neg_inf<T>()) {}

  void stage(int64_t b, int64_t t) {
    const T* e = em_ + b * stride_b_ + t * stride_t_;
    T* row = rows_.data() + (b - b0_) * Kp_;
    for (int64_t j = 0; j < K_; ++j) row[j] = e[j];
  }
  const T* row(int64_t b) const { return rows_.data() + (b - b0_) * Kp_; }

 private:
  const T* em_;
  int64_t stride_b_, stride_t_, K_, Kp_, b0_;
  std::vector<T> rows_;
};

}  // namespace pyseq
