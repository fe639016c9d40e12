// Per-element math of the attention kernels, shared by the CPU and CUDA kernels.
#pragma once

#include "../common/math.h"

namespace pyseq {

// tanh(x) for float as a rational function x P(x^2) / Q(x^2) on [-7.9053, 7.9053] (beyond it tanh is 1 to float
// precision), minimax coefficients: no exponential, so about half the operations of pyseq::tanh (math.h). Absolute
// error below 4e-7 over the whole range (measured against float64; up to ~7 ulp near |x| = 5.8, where tanh is
// within 2e-5 of 1), enough for a score that sums A such terms; the recurrent cells keep the tighter pyseq::tanh.
// Written for float and for GCC vectors of float alike (only arithmetic and selects).
template <typename F>
PYSEQ_HD F tanh_rational_of(F x) {
  const float bound = 7.90531110763549805f;
  x = x > bound ? F{} + bound : x;
  x = x < -bound ? F{} - bound : x;
  const F z = x * x;
  F p = z * -2.76076847742355e-16f + 2.00018790482477e-13f;
  p = p * z - 8.60467152213735e-11f;
  p = p * z + 5.12229709037114e-08f;
  p = p * z + 1.48572235717979e-05f;
  p = p * z + 6.37261928875436e-04f;
  p = p * z + 4.89352455891786e-03f;
  F q = z * 1.19825839466702e-06f + 1.18534705686654e-04f;
  q = q * z + 2.26843463243900e-03f;
  q = q * z + 4.89352518554385e-03f;
  return x * p / q;
}
PYSEQ_HD float tanh_rational(float x) { return tanh_rational_of(x); }
PYSEQ_HD double tanh_rational(double x) { return std::tanh(x); }

// The additive score's tanh term and the derivative factor of the score with respect to its argument:
// d/dx [v tanh(x)] = v (1 - tanh(x)^2).
template <typename T>
PYSEQ_HD T additive_term(T query_proj, T key_proj) {
  return tanh_rational(query_proj + key_proj);
}
template <typename T>
PYSEQ_HD T additive_slope(T v, T h) {
  return v * (T(1) - h * h);
}

// The fast form of the additive terms: with E = exp(2 q) exp(2 k) (the two factors computed once per query row and
// per key row), tanh(q + k) = 1 - 2 r where r = 1 / (E + 1): a multiply, an add and a division per term instead of
// an exponential. Exact up to rounding (absolute error of a few ulp of 1) while E stays a normal float: used when
// max|q| + max|k| <= kFastTanhRange over the two rows, so that every factor and product lies within e^+-80.
constexpr double kFastTanhRange = 40.0;

template <typename T>
PYSEQ_HD T additive_reciprocal(T exp_q, T exp_k) {
  return T(1) / (exp_q * exp_k + T(1));
}

}  // namespace pyseq
