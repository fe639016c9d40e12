#include "cpu_dispatch.h"

#include <atomic>

namespace pyseq {

std::string cpu_isa() {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  __builtin_cpu_init();
  // The same feature sets that the clones' arch=x86-64-v4 / x86-64-v3 require.
  if (__builtin_cpu_supports("x86-64-v4")) return "avx512";
  if (__builtin_cpu_supports("x86-64-v3")) return "avx2";
#endif
  return "baseline";
}

namespace {
std::atomic<bool> avx512_helpers_enabled{true};
}

bool cpu_has_avx512f() {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  static const bool supported = __builtin_cpu_supports("avx512f");
  return supported && avx512_helpers_enabled.load(std::memory_order_relaxed);
#else
  return false;
#endif
}

void set_avx512_helpers(bool enabled) { avx512_helpers_enabled.store(enabled); }

}  // namespace pyseq
