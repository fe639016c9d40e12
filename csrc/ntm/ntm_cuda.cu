// CUDA kernels of the NTM memory ops. The addressing: one block per batch entry, the memory rows across its threads,
// the heads in turn (they add into the entry's memory gradient, so no two threads write one element); each phase is
// a row function of ntm_rows.h (the CPU kernels run the same functions in loops), the maxima and sums between the
// phases block reductions in a fixed tree: deterministic, no atomics. The write: a thread per memory row (and per
// column for the erase and add gradients).
#include <cuda_runtime.h>

#include "../common/cuda_launch.h"
#include "../common/cuda_reduce.h"

#include "ntm_cuda.h"

namespace pyseq {
namespace {

constexpr int kMaxThreads = kMaxBlockThreads;

// Threads of a block over N rows: a power of two (the reductions' tree), at least a warp.
int block_threads(int64_t N) { return pow2_block_threads(N); }

// The forward phases of head h of batch entry b into v (as ntm_cpu.cpp's address_head).
template <typename T>
__device__ void address_head(const NtmAddressArgs<T>& a, const NtmHeadRows<T>& v, int64_t b, int64_t h, T key_norm,
                             T* buffer, T& ws_max, T& z) {
  const int64_t bh = b * a.H + h;
  T top = -std::numeric_limits<T>::infinity();
  for (int64_t i = threadIdx.x; i < a.N; i += blockDim.x) {
    top = Max<T>()(top, ntm_similarity(a, v, bh, i, ntm_row_dots(a, b, h, i), key_norm));
  }
  top = block_reduce(top, Max<T>(), buffer);
  T total = 0;
  for (int64_t i = threadIdx.x; i < a.N; i += blockDim.x) total += ntm_content(a, v, bh, i, top);
  total = block_reduce(total, Sum<T>(), buffer);
  for (int64_t i = threadIdx.x; i < a.N; i += blockDim.x) ntm_interpolate(a, v, bh, i, total);
  __syncthreads();  // every wg before the shift reads its neighbours
  ws_max = 0;
  for (int64_t i = threadIdx.x; i < a.N; i += blockDim.x) ws_max = Max<T>()(ws_max, ntm_shift(a, v, bh, i));
  ws_max = block_reduce(ws_max, Max<T>(), buffer);
  z = 0;
  for (int64_t i = threadIdx.x; i < a.N; i += blockDim.x) z += ntm_sharpen(a, v, bh, i, ws_max);
  z = block_reduce(z, Sum<T>(), buffer);
  for (int64_t i = threadIdx.x; i < a.N; i += blockDim.x) ntm_normalize(a, v, bh, i, z);
}

template <typename T>
__global__ void __launch_bounds__(kMaxThreads) ntm_address_kernel(const NtmAddressArgs<T> a, T* scratch) {
  PYSEQ_DYNAMIC_SHARED(shared);
  T* buffer = reinterpret_cast<T*>(shared);
  const int64_t b = blockIdx.x;
  const NtmHeadRows<T> v(scratch + b * kNtmHeadVectors * a.N, a.N);
  // No barrier between heads: a head's first phase writes only its thread's rows, which its last phase read, and its
  // first reduction synchronises before any row is read by another thread.
  for (int64_t h = 0; h < a.H; ++h) {
    T ws_max, z;
    address_head(a, v, b, h, ntm_key_norm(a, b * a.H + h), buffer, ws_max, z);
  }
}

template <typename T>
__global__ void __launch_bounds__(kMaxThreads) ntm_address_backward_kernel(const NtmAddressArgs<T> a, T* scratch) {
  PYSEQ_DYNAMIC_SHARED(shared);
  T* buffer = reinterpret_cast<T*>(shared);
  const int64_t b = blockIdx.x;
  const NtmHeadRows<T> v(scratch + b * kNtmHeadVectors * a.N, a.N);
  for (int64_t h = 0; h < a.H; ++h) {
    const int64_t bh = b * a.H + h;
    const T key_norm = ntm_key_norm(a, bh);
    T ws_max, z;
    address_head(a, v, b, h, key_norm, buffer, ws_max, z);
    T inner = 0;
    for (int64_t i = threadIdx.x; i < a.N; i += blockDim.x) inner += ntm_weight_inner(a, v, bh, i);
    inner = block_reduce(inner, Sum<T>(), buffer);
    T d_gamma = 0;
    for (int64_t i = threadIdx.x; i < a.N; i += blockDim.x) {
      d_gamma += ntm_sharpen_backward(a, v, bh, i, inner, ws_max, z);
    }
    d_gamma = block_reduce(d_gamma, Sum<T>(), buffer);  // also the barrier after every dws
    if (threadIdx.x == 0) a.d_gamma[bh] = d_gamma;
    for (int64_t t = threadIdx.x; t < a.S; t += blockDim.x) ntm_shift_backward(a, v, bh, t);
    T d_gate = 0, wc_dot = 0;
    for (int64_t j = threadIdx.x; j < a.N; j += blockDim.x) {
      ntm_unshift(a, v, bh, j);
      const NtmGateTerms<T> terms = ntm_interpolate_backward(a, v, bh, j);
      d_gate += terms.gate;
      wc_dot += terms.wc;
    }
    wc_dot = block_reduce(wc_dot, Sum<T>(), buffer);
    d_gate = block_reduce(d_gate, Sum<T>(), buffer);
    if (threadIdx.x == 0) a.d_gate[bh] = d_gate;
    T d_beta = 0;
    for (int64_t i = threadIdx.x; i < a.N; i += blockDim.x) {
      d_beta += ntm_content_backward(a, v, bh, i, wc_dot, key_norm);
    }
    d_beta = block_reduce(d_beta, Sum<T>(), buffer);  // also the barrier after every row's coefficients
    if (threadIdx.x == 0) a.d_beta[bh] = d_beta;
    for (int64_t c = threadIdx.x; c < a.M; c += blockDim.x) ntm_key_gradient(a, v, b, h, c);
    for (int64_t i = threadIdx.x; i < a.N; i += blockDim.x) ntm_memory_gradient(a, v, b, h, i);
    // No barrier before the next head: the key gradient reads every row's scale and key_coef, which the next head
    // writes only after several reductions (each a barrier); its first phase writes norm and sim of its own rows.
  }
}

constexpr int kRowThreads = 128;

unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kRowThreads - 1) / kRowThreads); }

template <typename T>
__global__ void ntm_write_kernel(const NtmWriteArgs<T> a) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (r < a.B * a.N) ntm_write_row(a, r / a.N, r % a.N);
}

template <typename T>
__global__ void ntm_write_backward_rows_kernel(const NtmWriteArgs<T> a) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (r < a.B * a.N) ntm_write_backward_row(a, r / a.N, r % a.N);
}

template <typename T>
__global__ void ntm_write_backward_columns_kernel(const NtmWriteArgs<T> a) {
  const int64_t x = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (x < a.B * a.M) ntm_write_backward_column(a, x / a.M, x % a.M);
}

template <typename T>
void address(const NtmAddressArgs<T>& a, T* scratch, void* stream) {
  if (a.B == 0 || a.H == 0) return;
  const int threads = block_threads(a.N);
  launch_kernel<ntm_address_kernel<T>>(static_cast<unsigned>(a.B), threads, threads * sizeof(T), stream, a, scratch);
}

template <typename T>
void address_backward(const NtmAddressArgs<T>& a, T* scratch, void* stream) {
  if (a.B == 0 || a.H == 0) return;
  const int threads = block_threads(a.N);
  launch_kernel<ntm_address_backward_kernel<T>>(static_cast<unsigned>(a.B), threads, threads * sizeof(T), stream, a,
                                                scratch);
}

template <typename T>
void write(const NtmWriteArgs<T>& a, void* stream) {
  if (a.B * a.N * a.M == 0) return;
  launch_kernel<ntm_write_kernel<T>>(blocks_for(a.B * a.N), kRowThreads, 0, stream, a);
}

template <typename T>
void write_backward(const NtmWriteArgs<T>& a, void* stream) {
  if (a.B * a.N * a.M == 0) return;
  launch_kernel<ntm_write_backward_rows_kernel<T>>(blocks_for(a.B * a.N), kRowThreads, 0, stream, a);
  launch_kernel<ntm_write_backward_columns_kernel<T>>(blocks_for(a.B * a.M), kRowThreads, 0, stream, a);
}

}  // namespace

#define PYSEQ_DEFINE_NTM_LAUNCHERS(T)                                                                          \
  void launch_ntm_address(const NtmAddressArgs<T>& a, T* scratch, void* stream) { address(a, scratch, stream); } \
  void launch_ntm_address_backward(const NtmAddressArgs<T>& a, T* scratch, void* stream) {                     \
    address_backward(a, scratch, stream);                                                                      \
  }                                                                                                            \
  void launch_ntm_write(const NtmWriteArgs<T>& a, void* stream) { write(a, stream); }                          \
  void launch_ntm_write_backward(const NtmWriteArgs<T>& a, void* stream) { write_backward(a, stream); }
PYSEQ_DEFINE_NTM_LAUNCHERS(float)
PYSEQ_DEFINE_NTM_LAUNCHERS(double)
#undef PYSEQ_DEFINE_NTM_LAUNCHERS

}  // namespace pyseq
