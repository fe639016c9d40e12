// Stand-in for cuda_bf16.h in the emulation build: bfloat16 storage and its conversions, rounding to nearest even as
// the device does.
#pragma once
#include <cstdint>
#include <cstring>

struct __nv_bfloat16_raw {
  unsigned short x;
};

struct __nv_bfloat16 {
  unsigned short __x;
  __nv_bfloat16() = default;
  __nv_bfloat16(const __nv_bfloat16_raw& raw) : __x(raw.x) {}
  operator __nv_bfloat16_raw() const { return {__x}; }
};

inline float __bfloat162float(__nv_bfloat16 v) {
  const uint32_t bits = static_cast<uint32_t>(v.__x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline __nv_bfloat16 __float2bfloat16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  __nv_bfloat16_raw raw;
  if (f != f) {
    raw.x = static_cast<unsigned short>((bits >> 16) | 0x0040u);  // a quiet NaN, sign kept
  } else {
    bits += 0x7fffu + ((bits >> 16) & 1u);
    raw.x = static_cast<unsigned short>(bits >> 16);
  }
  return __nv_bfloat16(raw);
}
