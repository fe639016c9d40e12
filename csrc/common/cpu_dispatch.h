// Runtime ISA dispatch for hot CPU loops.
//
// A function marked PYSEQ_CPU_CLONES is compiled three times (AVX-512, AVX2+FMA, baseline x86-64) and the loader
// picks the best one the CPU supports, so the default build runs on any x86-64 CPU without -march=native. Inline
// helpers it calls (math.h, cells.h) are compiled into each clone at that clone's ISA.
#pragma once

#include <string>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define PYSEQ_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PYSEQ_CPU_CLONES
#endif

// For the helpers of a PYSEQ_CPU_CLONES function: inlined into each clone, so they are compiled at its ISA.
#define PYSEQ_ALWAYS_INLINE inline __attribute__((always_inline))

namespace pyseq {

// The clone PYSEQ_CPU_CLONES functions run on this CPU: "avx512", "avx2" or "baseline".
std::string cpu_isa();

// Whether the few helpers written with AVX-512 intrinsics (functions with __attribute__((target("avx512f"))),
// called only when this says so) may run: the CPU has AVX-512F and they are not switched off.
bool cpu_has_avx512f();

// Switches those helpers off (or back on), so that tests on an AVX-512 machine also cover the portable paths.
void set_avx512_helpers(bool enabled);

}  // namespace pyseq
