// Scalar math shared by the CPU and CUDA kernels.
//
// The float versions are branch-free (selects, not branches) so that a loop over hidden units that calls them
// vectorizes at whatever ISA the calling function is compiled for (see cpu_dispatch.h). They are accurate to a few
// float32 ulp over the whole range; the double versions defer to the C library so that float64 stays exact enough for
// gradcheck.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__CUDACC__)
#define PYSEQ_HD __host__ __device__ __forceinline__
#else
#define PYSEQ_HD inline __attribute__((always_inline))
#endif

namespace pyseq {

PYSEQ_HD float bits_to_float(int32_t bits) {
#if defined(__CUDA_ARCH__)
  return __int_as_float(bits);
#else
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
#endif
}

// exp(x) for float: x = n*ln2 + r with |r| <= ln2/2, exp(r) by a degree-6 minimax polynomial, 2^n built in the
// exponent bits. Inputs are clamped to [-87, 88] so that 2^n stays a normal number: below -87 the result is ~1.6e-38
// instead of a denormal, above 88 it saturates at ~1.65e38; both are far outside what a gate ever feeds back.
// NaN comes out as NaN; with kPropagateNaN = false it comes out as a finite number instead, one compare and one
// select fewer, for the hot loops that detect NaN in their input apart (the CTC recursions).
template <bool kPropagateNaN = true>
PYSEQ_HD float exp_f32(float x) {
  // Written so that NaN fails both comparisons and is clamped to 88: the integer conversion below only ever sees a
  // value in range.
  const float input = x;
  x = x < 88.0f ? x : 88.0f;
  x = x > -87.0f ? x : -87.0f;
  // Round x*log2(e) to the nearest integer by the 1.5*2^23 trick (vectorizes on plain SSE2, unlike rintf).
  const float shifter = 12582912.0f;
  float n = (x * 1.44269504088896341f + shifter) - shifter;
  // Cody-Waite split of ln2 so that r = x - n*ln2 is exact to float precision.
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float result = p * bits_to_float((static_cast<int32_t>(n) + 127) << 23);
  return kPropagateNaN && input != input ? input : result;
}

// log(x) for float x positive and normal (callers guarantee the range), +inf and NaN returned as they are (with
// kPropagateNaN = false, as finite numbers: see exp_f32). x = 2^e * m with m in [sqrt(1/2), sqrt(2)), log(m) by a
// degree-9 minimax polynomial in m - 1.
template <bool kPropagateNaN = true>
PYSEQ_HD float log_f32(float x) {
  int32_t bits;
#if defined(__CUDA_ARCH__)
  bits = __float_as_int(x);
#else
  std::memcpy(&bits, &x, sizeof bits);
#endif
  float e = static_cast<float>((bits >> 23) - 127);
  float m = bits_to_float((bits & 0x007fffff) | 0x3f800000);  // [1, 2)
  const bool high = m > 1.41421356f;
  m = high ? 0.5f * m : m;
  e = high ? e + 1.0f : e;
  const float y = m - 1.0f, z = y * y;
  float p = 7.0376836292e-2f;
  p = p * y - 1.1514610310e-1f;
  p = p * y + 1.1676998740e-1f;
  p = p * y - 1.2420140846e-1f;
  p = p * y + 1.4249322787e-1f;
  p = p * y - 1.6668057665e-1f;
  p = p * y + 2.0000714765e-1f;
  p = p * y - 2.4999993993e-1f;
  p = p * y + 3.3333331174e-1f;
  p = p * y * z;
  p = p + e * -2.12194440e-4f - 0.5f * z;
  const float result = y + p + e * 0.693359375f;
  // One comparison, true for +inf and NaN: a short-circuit `||` here would keep loops that call this from vectorizing.
  return !kPropagateNaN || x < std::numeric_limits<float>::infinity() ? result : x;
}

PYSEQ_HD float sigmoid(float x) { return 1.0f / (1.0f + exp_f32(-x)); }

// tanh(x) for float: an odd polynomial near zero (where 1 - 2/(e^2x + 1) would cancel), the exp form elsewhere.
PYSEQ_HD float tanh(float x) {
  float ax = x < 0.0f ? -x : x;
  float z = x * x;
  float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z + 1.33314422036e-1f) * z -
                 3.33332819422e-1f) *
                    z * x +
                x;
  float e = exp_f32(-2.0f * ax);
  float large = (1.0f - e) / (1.0f + e);
  large = x < 0.0f ? -large : large;
  return ax < 0.625f ? small : large;
}

// Whether any of x[0, n) is NaN: a branch-free reduction that vectorizes.
template <typename T>
PYSEQ_HD bool any_nan(const T* x, int64_t n) {
  int32_t found = 0;  // an int, not a bool: GCC vectorizes an OR-reduction of ints
  for (int64_t i = 0; i < n; ++i) found |= x[i] != x[i] ? 1 : 0;
  return found != 0;
}

PYSEQ_HD float relu(float x) { return x < 0.0f ? 0.0f : x; }  // NaN stays NaN, as torch.relu

PYSEQ_HD double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
PYSEQ_HD double tanh(double x) { return std::tanh(x); }
PYSEQ_HD double relu(double x) { return x < 0.0 ? 0.0 : x; }

template <typename T>
PYSEQ_HD T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

// log(exp(a) + exp(b)), exact at -inf (both -inf gives -inf, not NaN); NaN in, NaN out.
template <typename T>
PYSEQ_HD T log_add_exp(T a, T b) {
  const T hi = a > b ? a : b, lo = a > b ? b : a;
  if (hi == neg_inf<T>()) return lo;  // lo is -inf, or NaN
  return hi + std::log1p(std::exp(lo - hi));
}

// exp(x), and exactly 0 below the smallest normal float (exp_f32 clamps its input there and would return ~1e-38):
// values that small are below any gradient's resolution, and a denormal result would make every later
// multiply-add with it a slow microcode assist.
PYSEQ_HD float exp_or_zero(float x) { return x < -87.0f ? 0.0f : exp_f32(x); }
PYSEQ_HD double exp_or_zero(double x) { return std::exp(x); }

}  // namespace pyseq
