// Stand-in for cuda_fp16.h in the emulation build: IEEE half storage and its conversions (the compiler's _Float16,
// rounding to nearest even as the device does).
#pragma once
#include <cstring>

struct __half_raw {
  unsigned short x;
};

struct __half {
  unsigned short __x;
  __half() = default;
  __half(const __half_raw& raw) : __x(raw.x) {}
  operator __half_raw() const { return {__x}; }
};

inline float __half2float(__half v) {
  _Float16 h;
  std::memcpy(&h, &v.__x, sizeof h);
  return static_cast<float>(h);
}

inline __half __float2half(float f) {
  const _Float16 h = static_cast<_Float16>(f);
  __half_raw raw;
  std::memcpy(&raw.x, &h, sizeof raw.x);
  return __half(raw);
}
