// Runtime ISA dispatch for hot CPU loops: one set of instruction-set levels, one query of what this CPU runs.
//
// The levels are x86-64-v4 (AVX-512), x86-64-v3 (AVX2+FMA) and baseline x86-64, so the default build runs on any
// x86-64 CPU without -march=native. Code reaches them two ways, both on these levels:
// - a function marked PYSEQ_CPU_CLONES is compiled once per level and the loader picks the best one the CPU runs;
//   inline helpers it calls (math.h, cells.h) are compiled into each clone at that clone's ISA;
// - hand-vectorized code (intrinsics, or kernels templated on the vector width) is a function marked
//   PYSEQ_TARGET_AVX512 / PYSEQ_TARGET_AVX2, called only where cpu_supports() says the CPU runs that level.
#pragma once

#include <string>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define PYSEQ_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define PYSEQ_TARGET_AVX512 __attribute__((target("arch=x86-64-v4"), noinline))
#define PYSEQ_TARGET_AVX2 __attribute__((target("arch=x86-64-v3"), noinline))
#define PYSEQ_HAVE_TARGETS 1
#else
#define PYSEQ_CPU_CLONES
#define PYSEQ_TARGET_AVX512 __attribute__((noinline))
#define PYSEQ_TARGET_AVX2 __attribute__((noinline))
#endif

// For the helpers of a PYSEQ_CPU_CLONES function: inlined into each clone, so they are compiled at its ISA.
#define PYSEQ_ALWAYS_INLINE inline __attribute__((always_inline))

namespace pyseq {

// Avx512Bf16: AVX-512 with the bfloat16 dot product (vdpbf16ps), used by the bfloat16 recurrent kernel through
// inline assembly inside PYSEQ_TARGET_AVX512 functions.
enum class Isa { Baseline = 0, Avx2 = 1, Avx512 = 2, Avx512Bf16 = 3 };

// Whether this CPU runs code compiled for `isa` (the feature sets of the levels above).
bool cpu_supports(Isa isa);

// The level PYSEQ_CPU_CLONES functions run at on this CPU: "avx512", "avx2" or "baseline".
std::string cpu_isa();

// Whether the AVX-512 intrinsic helpers (PYSEQ_TARGET_AVX512 functions beside a portable path) run: the CPU runs
// AVX-512 and they are not switched off.
bool use_avx512_helpers();

// Switches those helpers off (or back on), so that tests on an AVX-512 machine also cover the portable paths.
void set_avx512_helpers(bool enabled);

}  // namespace pyseq
