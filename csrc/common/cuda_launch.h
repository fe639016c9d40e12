// Launch helpers of the CUDA kernel files (torch-free, for the .cu files only).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace pyseq {

constexpr int kMaxBlockThreads = 1024;

// Threads of a block over n items: a power of two (the tree of a block reduction), at least a warp, at most
// kMaxBlockThreads (threads then take several items each).
inline int pow2_block_threads(int64_t n) {
  int threads = 32;
  while (threads < n && threads < kMaxBlockThreads) threads *= 2;
  return threads;
}

inline cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

}  // namespace pyseq
