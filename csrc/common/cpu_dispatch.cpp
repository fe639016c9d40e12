#include "cpu_dispatch.h"

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

bool cpu_has_avx512f() {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  static const bool yes = __builtin_cpu_supports("avx512f");
  return yes;
#else
  return false;
#endif
}

}  // namespace pyseq
