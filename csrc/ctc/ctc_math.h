// Per-cell math of the CTC dynamic programs in log space, shared by the CPU and CUDA kernels.
#pragma once

#include <cmath>
#include <limits>

#include "../common/math.h"

namespace pyseq {

template <typename T>
PYSEQ_HD T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

// log(exp(a) + exp(b)), exact at -inf (both -inf gives -inf, not NaN).
template <typename T>
PYSEQ_HD T log_add_exp(T a, T b) {
  const T hi = a > b ? a : b, lo = a > b ? b : a;
  if (hi == neg_inf<T>()) return hi;
  return hi + std::log1p(std::exp(lo - hi));
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
