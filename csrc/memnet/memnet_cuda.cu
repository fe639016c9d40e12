// CUDA kernels of the memory networks. The bags and their gradients: a thread per output element (grid-stride
// loops), each summing its terms in order. The hops: one block per batch entry, the sentences (and then the
// embedding's elements) across its threads, the hops in turn, the softmax's maximum and normalizer and the backward's
// inner product block reductions in a fixed tree: deterministic, no atomics. Each thread's work is a function of
// memnet_elements.h (the CPU kernels run the same functions in loops; make cuda-emulate runs these kernels on the
// CPU).
#include <cuda_runtime.h>

#include "../common/cuda_launch.h"
#include "../common/cuda_reduce.h"

#include "memnet_cuda.h"

namespace pyseq {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t threads) { return grid_stride_blocks(threads, kThreads); }

template <typename T>
__global__ void bag_kernel(const BagArgs<T> a) {
  PYSEQ_GRID_STRIDE(e, a.rows * a.D) { bag_columns(a, e / a.D, e % a.D, e % a.D + 1); }
}

template <typename T>
__global__ void bag_weight_gradient_kernel(const BagArgs<T> a) {
  PYSEQ_GRID_STRIDE(e, a.W * a.D) { bag_weight_gradient_columns(a, e / a.D, e % a.D, e % a.D + 1); }
}

template <typename T>
__global__ void bag_table_gradient_kernel(const BagTableGradientArgs<T> a) {
  PYSEQ_GRID_STRIDE(e, a.words * a.D) { bag_table_gradient_columns(a, e / a.D, e % a.D, e % a.D + 1); }
}

// Shared memory: the reductions' buffer [blockDim.x], then (backward) d loss / d score [S].
template <typename T>
__global__ void hops_kernel(const HopArgs<T> a) {
  PYSEQ_DYNAMIC_SHARED(shared);
  T* buffer = reinterpret_cast<T*>(shared);
  const int64_t b = blockIdx.x;
  for (int64_t k = 0; k < a.K; ++k) {
    T* p = a.weights + (k * a.B + b) * a.S;
    if (a.softmax) {
      T top = -std::numeric_limits<T>::infinity();
      for (int64_t i = threadIdx.x; i < a.S; i += blockDim.x) {
        p[i] = hop_score(a, k, b, i);
        top = Max<T>()(top, p[i]);
      }
      top = block_reduce(top, Max<T>(), buffer);
      T z = 0;
      for (int64_t i = threadIdx.x; i < a.S; i += blockDim.x) {
        p[i] = hop_unnormalized(p[i], top);
        z += p[i];
      }
      z = block_reduce(z, Sum<T>(), buffer);
      // z == 0: the mask dropped every sentence (a NaN z stays NaN)
      for (int64_t i = threadIdx.x; i < a.S; i += blockDim.x) p[i] = z == 0 ? T(0) : p[i] / z;
    } else {
      for (int64_t i = threadIdx.x; i < a.S; i += blockDim.x) p[i] = hop_linear(hop_score(a, k, b, i));
    }
    __syncthreads();  // every weight before the read
    for (int64_t c = threadIdx.x; c < a.D; c += blockDim.x) hop_update_columns(a, k, b, c, c + 1);
    __syncthreads();  // u_{k+1} whole before the next hop's scores
  }
}

template <typename T>
__global__ void hops_backward_kernel(const HopArgs<T> a) {
  PYSEQ_DYNAMIC_SHARED(shared);
  T* buffer = reinterpret_cast<T*>(shared);
  T* ds = buffer + blockDim.x;
  const int64_t b = blockIdx.x;
  for (int64_t c = threadIdx.x; c < a.D; c += blockDim.x) {
    a.d_states[((a.K - 1) * a.B + b) * a.D + c] = a.grad_states[(a.K * a.B + b) * a.D + c];
  }
  __syncthreads();  // the last hop's du whole
  for (int64_t k = a.K - 1; k >= 0; --k) {
    const T* p = a.weights + (k * a.B + b) * a.S;
    T inner = 0;
    for (int64_t i = threadIdx.x; i < a.S; i += blockDim.x) {
      ds[i] = hop_weight_gradient(a, k, b, i);
      inner += p[i] * ds[i];
    }
    inner = block_reduce(inner, Sum<T>(), buffer);
    for (int64_t i = threadIdx.x; i < a.S; i += blockDim.x) ds[i] = hop_score_gradient(a, b, i, p[i], ds[i], inner);
    __syncthreads();  // every ds before the memories' and the state's gradients read them
    for (int64_t e = threadIdx.x; e < a.S * a.D; e += blockDim.x) {
      hop_memory_gradients(a, k, b, e / a.D, e % a.D, ds[e / a.D]);
    }
    T* du = hop_state_gradient_out(a, k, b);
    for (int64_t c = threadIdx.x; c < a.D; c += blockDim.x) hop_state_gradient_columns(a, k, b, ds, du, c, c + 1);
    __syncthreads();  // the state's gradient whole before the hop before reads it, and ds free again
  }
}

template <typename T>
int hop_threads(const HopArgs<T>& a) {
  return pow2_block_threads(a.S > a.D ? a.S : a.D);
}

template <typename T>
void bag(const BagArgs<T>& a, void* stream) {
  if (a.rows * a.D == 0) return;
  launch_kernel<bag_kernel<T>>(blocks_for(a.rows * a.D), kThreads, 0, stream, a);
}

template <typename T>
void bag_weight_gradients(const BagArgs<T>& a, void* stream) {
  if (a.W * a.D == 0) return;
  launch_kernel<bag_weight_gradient_kernel<T>>(blocks_for(a.W * a.D), kThreads, 0, stream, a);
}

template <typename T>
void bag_table_gradient(const BagTableGradientArgs<T>& a, void* stream) {
  if (a.words * a.D == 0) return;
  launch_kernel<bag_table_gradient_kernel<T>>(blocks_for(a.words * a.D), kThreads, 0, stream, a);
}

template <typename T>
void hops(const HopArgs<T>& a, void* stream) {
  if (a.B == 0) return;
  const int threads = hop_threads(a);
  launch_kernel<hops_kernel<T>>(static_cast<unsigned>(a.B), threads, threads * sizeof(T), stream, a);
}

template <typename T>
void hops_backward(const HopArgs<T>& a, void* stream) {
  if (a.B == 0) return;
  const int threads = hop_threads(a);
  launch_kernel<hops_backward_kernel<T>>(static_cast<unsigned>(a.B), threads, (threads + a.S) * sizeof(T), stream,
                                         a);
}

}  // namespace

#define PYSEQ_DEFINE_MEMNET_LAUNCHERS(T)                                                                           \
  void launch_bag(const BagArgs<T>& a, void* stream) { bag(a, stream); }                                           \
  void launch_bag_weight_gradients(const BagArgs<T>& a, void* stream) { bag_weight_gradients(a, stream); }         \
  void launch_bag_table_gradient(const BagTableGradientArgs<T>& a, void* stream) { bag_table_gradient(a, stream); } \
  void launch_hops(const HopArgs<T>& a, void* stream) { hops(a, stream); }                                         \
  void launch_hops_backward(const HopArgs<T>& a, void* stream) { hops_backward(a, stream); }
PYSEQ_DEFINE_MEMNET_LAUNCHERS(float)
PYSEQ_DEFINE_MEMNET_LAUNCHERS(double)
#undef PYSEQ_DEFINE_MEMNET_LAUNCHERS

}  // namespace pyseq
