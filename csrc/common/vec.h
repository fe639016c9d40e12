// 64-byte blocks as GCC vector types, for CPU loops that keep accumulators in registers: one zmm register in an
// AVX-512 clone (cpu_dispatch.h), two ymm in an AVX2 one, four xmm in the baseline. Use inside PYSEQ_ALWAYS_INLINE
// helpers of PYSEQ_CPU_CLONES functions, so that the vector code is compiled at the clone's ISA.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cpu_dispatch.h"

namespace pyseq {

template <typename T>
struct Block {
  static constexpr int lanes = 64 / sizeof(T);
  using Index = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;  // lane-compatible with T
  typedef T Vec __attribute__((vector_size(64)));
  typedef Index IndexVec __attribute__((vector_size(64)));

  static PYSEQ_ALWAYS_INLINE Vec load(const T* p) {
    Vec v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static PYSEQ_ALWAYS_INLINE void store(T* p, Vec v) { std::memcpy(p, &v, sizeof v); }
  static PYSEQ_ALWAYS_INLINE Vec splat(T x) { return Vec{} + x; }
  static PYSEQ_ALWAYS_INLINE IndexVec splat_index(int64_t x) { return IndexVec{} + static_cast<Index>(x); }
  static PYSEQ_ALWAYS_INLINE T sum(Vec v) {
    T s = 0;
    for (int l = 0; l < lanes; ++l) s += v[l];
    return s;
  }
};

// sum_i a[i] * b[i], with four independent vector accumulators (a plain loop would be one serial chain of adds:
// without reassociation the compiler may not vectorize a floating-point sum).
template <typename T>
PYSEQ_ALWAYS_INLINE T dot(const T* __restrict__ a, const T* __restrict__ b, int64_t n) {
  using V = Block<T>;
  typename V::Vec s0{}, s1{}, s2{}, s3{};
  int64_t i = 0;
  for (; i + 4 * V::lanes <= n; i += 4 * V::lanes) {
    s0 += V::load(a + i) * V::load(b + i);
    s1 += V::load(a + i + V::lanes) * V::load(b + i + V::lanes);
    s2 += V::load(a + i + 2 * V::lanes) * V::load(b + i + 2 * V::lanes);
    s3 += V::load(a + i + 3 * V::lanes) * V::load(b + i + 3 * V::lanes);
  }
  for (; i + V::lanes <= n; i += V::lanes) s0 += V::load(a + i) * V::load(b + i);
  T total = V::sum((s0 + s1) + (s2 + s3));
  for (; i < n; ++i) total += a[i] * b[i];
  return total;
}

}  // namespace pyseq
