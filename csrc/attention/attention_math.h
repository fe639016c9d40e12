// Per-element math of the attention kernels, shared by the CPU and CUDA kernels.
#pragma once

#include "../common/math.h"

namespace pyseq {

// The additive score's tanh term and the derivative factor of the score with respect to its argument:
// d/dx [v tanh(x)] = v (1 - tanh(x)^2).
template <typename T>
PYSEQ_HD T additive_term(T query_proj, T key_proj) {
  return tanh(query_proj + key_proj);
}
template <typename T>
PYSEQ_HD T additive_slope(T v, T h) {
  return v * (T(1) - h * h);
}

}  // namespace pyseq
