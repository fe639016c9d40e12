// Per-cell math of the CTC dynamic programs in log space, shared by the CPU and CUDA kernels.
#pragma once

#include <cmath>
#include <limits>

#include "../common/math.h"

namespace pyseq {

// log(exp(a) + exp(b) + exp(c)) for the CTC recursions, where every argument is finite or -inf. The float version is
// branch-free (vectorizes): the sum of the three exponentials relative to the largest lies in [1, 3], the range
// log_f32 is accurate on, and an all -inf input comes out as -inf. NaN is not carried through (the maxima skip it):
// the CTC kernels flag the sequences whose log-probs hold NaN as they read them.
PYSEQ_HD float log_sum_exp3(float a, float b, float c) {
  const float m = a > b ? (a > c ? a : c) : (b > c ? b : c);
  // The two arguments other than the maximum (whose own term is exp(0) = 1): two exponentials, not three.
  const float o1 = m == a ? b : a;
  const float o2 = (m == a || m == b) ? c : b;
  const float r = m + log_f32<false>(1.0f + exp_f32<false>(o1 - m) + exp_f32<false>(o2 - m));
  return m == neg_inf<float>() ? m : r;
}
PYSEQ_HD double log_sum_exp3(double a, double b, double c) {
  const double m = a > b ? (a > c ? a : c) : (b > c ? b : c);
  if (m == neg_inf<double>()) return m;
  return m + std::log(std::exp(a - m) + std::exp(b - m) + std::exp(c - m));
}

// Extended label s of a target of length S (2S + 1 labels): blank at even s, target[(s - 1) / 2] at odd s.
template <typename Index>
PYSEQ_HD Index extended_label(const Index* target, int64_t s, Index blank) {
  return (s & 1) ? target[s >> 1] : blank;
}

// Whether the transition s - 2 -> s is allowed: s is a label (odd) that differs from the label two back.
template <typename Index>
PYSEQ_HD bool can_skip(const Index* target, int64_t s) {
  return (s & 1) && s >= 3 && target[s >> 1] != target[(s >> 1) - 1];
}

}  // namespace pyseq
