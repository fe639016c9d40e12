// Block reductions of the CUDA kernels (device code: for the .cu files only). Each combines every thread's value in
// a fixed tree, so that the result does not depend on the order in which the threads run: deterministic.
#pragma once

#include <cuda_runtime.h>

namespace pyseq {

template <typename T>
struct Max {
  __device__ T operator()(T a, T b) const { return a < b ? b : a; }  // as std::max: a NaN b is skipped
};
template <typename T>
struct Sum {
  __device__ T operator()(T a, T b) const { return a + b; }
};

// Every thread's x combined over the block (blockDim.x a power of two) in a fixed tree; every thread gets the
// result. buffer: [blockDim.x] in shared memory.
template <typename T, typename Op>
__device__ T block_reduce(T x, Op op, T* buffer) {
  buffer[threadIdx.x] = x;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) buffer[threadIdx.x] = op(buffer[threadIdx.x], buffer[threadIdx.x + half]);
    __syncthreads();
  }
  const T result = buffer[0];
  __syncthreads();
  return result;
}

}  // namespace pyseq
