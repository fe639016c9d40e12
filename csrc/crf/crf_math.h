// Per-element math of the CRF dynamic programs, shared by the CPU and CUDA kernels.
//
// The forward and backward recursions run in a mixed space: the K-vector of the previous step is kept in log space,
// shifted by its maximum and exponentiated (K exponentials), multiplied by the exponentiated transition matrix (K*K
// multiply-adds instead of K*K exponentials and logs), and brought back to log space (K logarithms). The transition
// matrix is shifted per column (forward) or per row (backward) by its maximum so that every column/row holds a 1.
// Where the product underflows (a column reached only through tiny terms, or not at all under constraints), that one
// entry is recomputed exactly in log space, so the result matches the log-space recursion to working precision over
// the whole range, -inf included.
#pragma once

#include <cmath>

#include "../common/math.h"

namespace pyseq {

template <typename T>
struct CrfLimits;
template <>
struct CrfLimits<float> {
  // A product below `tiny` may have lost terms to underflow (each lost term < ~1e-38, so the relative error of a kept
  // product stays below K * 1e-13); such an entry is recomputed exactly.
  static constexpr float tiny = 1e-25f;
  // The pairwise-marginal scale exp(shift) must stay far from overflow: beyond this shift the step is done exactly.
  static constexpr float big_shift = 60.0f;
};
template <>
struct CrfLimits<double> {
  static constexpr double tiny = 1e-280;
  static constexpr double big_shift = 600.0;
};

PYSEQ_HD float log_positive(float x) { return log_f32(x); }
PYSEQ_HD double log_positive(double x) { return std::log(x); }

// log sum_i exp(a[i] + w[i * stride]) exactly, -inf when every term is -inf.
template <typename T>
PYSEQ_HD T log_sum_exp_plus(const T* a, const T* w, int64_t stride, int64_t n) {
  T m = neg_inf<T>();
  for (int64_t i = 0; i < n; ++i) {
    const T v = a[i] + w[i * stride];
    m = v > m ? v : m;
  }
  if (m == neg_inf<T>()) return m;
  T s = 0;
  for (int64_t i = 0; i < n; ++i) s += std::exp(a[i] + w[i * stride] - m);
  return m + std::log(s);
}

// Maximum of n values (-inf for none; NaN values are skipped), over 8 independent lanes so that it vectorizes
// instead of running one dependent compare per value.
template <typename T>
PYSEQ_HD T max_of(const T* a, int64_t n) {
  T lane[8];
  for (int l = 0; l < 8; ++l) lane[l] = neg_inf<T>();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) lane[l] = a[i + l] > lane[l] ? a[i + l] : lane[l];
  }
  for (; i < n; ++i) lane[0] = a[i] > lane[0] ? a[i] : lane[0];
  T m = lane[0];
  for (int l = 1; l < 8; ++l) m = lane[l] > m ? lane[l] : m;
  return m;
}

// The tag count rounded up to whole 64-byte vectors: the K x K loops run over padded rows (zero or -inf padding) so
// that every iteration is a full vector, with no scalar remainder per row.
template <typename T>
PYSEQ_HD int64_t padded_tags(int64_t K) {
  constexpr int64_t lanes = 64 / sizeof(T);
  return (K + lanes - 1) / lanes * lanes;
}

// A shift that is safe to subtract: -inf (an all-forbidden row or column) becomes 0, so that exp(x - shift) gives 0
// for the forbidden entries instead of NaN.
template <typename T>
PYSEQ_HD T finite_shift(T m) {
  return m == neg_inf<T>() ? T(0) : m;
}

}  // namespace pyseq
