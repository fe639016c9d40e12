#include "cpu_dispatch.h"

#include <atomic>

namespace pyseq {

bool cpu_supports(Isa isa) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  __builtin_cpu_init();
  if (isa == Isa::Avx512Bf16) return __builtin_cpu_supports("x86-64-v4") && __builtin_cpu_supports("avx512bf16");
  if (isa == Isa::Avx512) return __builtin_cpu_supports("x86-64-v4");
  if (isa == Isa::Avx2) return __builtin_cpu_supports("x86-64-v3");
  return true;
#else
  return isa == Isa::Baseline;
#endif
}

std::string cpu_isa() {
  if (cpu_supports(Isa::Avx512)) return "avx512";
  if (cpu_supports(Isa::Avx2)) return "avx2";
  return "baseline";
}

namespace {
std::atomic<bool> avx512_helpers_enabled{true};
}

bool use_avx512_helpers() {
  static const bool supported = cpu_supports(Isa::Avx512);
  return supported && avx512_helpers_enabled.load(std::memory_order_relaxed);
}

void set_avx512_helpers(bool enabled) { avx512_helpers_enabled.store(enabled); }

}  // namespace pyseq
