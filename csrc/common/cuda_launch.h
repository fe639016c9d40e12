// Launch helpers of the CUDA kernel files (torch-free, for the .cu files only). Every launch goes through
// launch_kernel / launch_cooperative_kernel and every kernel's dynamic shared memory is PYSEQ_DYNAMIC_SHARED: under
// nvcc they are <<<...>>>, cudaLaunchCooperativeKernel and extern __shared__; in the emulation build
// (PYSEQ_CUDA_EMULATION, cuda_emulation/emulation.h) they run the kernel on the CPU, thread by thread.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <tuple>
#include <type_traits>
#include <utility>

namespace pyseq {

constexpr int kMaxBlockThreads = 1024;

// Threads of a block over n items: a power of two (the tree of a block reduction), at least a warp, at most
// kMaxBlockThreads (threads then take several items each).
inline int pow2_block_threads(int64_t n) {
  int threads = 32;
  while (threads < n && threads < kMaxBlockThreads) threads *= 2;
  return threads;
}

// Blocks of `block` threads for a grid-stride loop over n items: enough for one item a thread, at most 65535 (the
// loop covers the rest).
inline unsigned grid_stride_blocks(int64_t n, int block) {
  const int64_t blocks = (n + block - 1) / block;
  return static_cast<unsigned>(blocks < 65535 ? blocks : 65535);
}

// for (i over [0, n)) across every thread of the grid, as many rounds as it takes.
#define PYSEQ_GRID_STRIDE(i, n)                                                          \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

inline cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

// The dynamic shared memory of a kernel: `unsigned char name[]`, 16-byte aligned.
#if defined(PYSEQ_CUDA_EMULATION)
#define PYSEQ_DYNAMIC_SHARED(name) unsigned char* const name = ::pyseq_emulation::dynamic_shared()
#else
#define PYSEQ_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#endif

// Launches Kernel on `stream` with args (converted to its parameter types); a launch error shows in
// cudaGetLastError, as after <<<...>>>.
template <auto Kernel, typename... Args>
void launch_kernel(dim3 grid, dim3 block, size_t shared_bytes, void* stream, Args&&... args) {
#if defined(PYSEQ_CUDA_EMULATION)
  ::pyseq_emulation::launch<Kernel>(grid, block, shared_bytes, false, std::forward<Args>(args)...);
#else
  Kernel<<<grid, block, shared_bytes, as_stream(stream)>>>(std::forward<Args>(args)...);
#endif
}

#if !defined(PYSEQ_CUDA_EMULATION)
template <typename F>
struct KernelParameters;
template <typename... P>
struct KernelParameters<void (*)(P...)> {
  using tuple = std::tuple<std::decay_t<P>...>;
};
#endif

// A cooperative launch (grid synchronisation: every block co-resident), its error returned.
template <auto Kernel, typename... Args>
cudaError_t launch_cooperative_kernel(dim3 grid, dim3 block, size_t shared_bytes, void* stream, Args&&... args) {
#if defined(PYSEQ_CUDA_EMULATION)
  return ::pyseq_emulation::launch<Kernel>(grid, block, shared_bytes, true, std::forward<Args>(args)...);
#else
  typename KernelParameters<decltype(Kernel)>::tuple params(std::forward<Args>(args)...);
  return std::apply(
      [&](auto&... p) {
        void* pointers[] = {static_cast<void*>(&p)...};
        return cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(Kernel), grid, block, pointers, shared_bytes,
                                           as_stream(stream));
      },
      params);
#endif
}

}  // namespace pyseq
