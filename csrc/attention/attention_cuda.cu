// CUDA kernels of attention: the additive scores (a thread per (query, key) pair, the A-long tanh reduction in
// registers), the masked softmax and its backward (a warp per row), and the additive gradients (a thread per gradient
// element, summing over the keys or the queries). Each thread's work is a function of attention_elements.h (make
// cuda-emulate runs these kernels on the CPU). The warp reductions add in a fixed butterfly order: deterministic.
#include <cuda_runtime.h>

#include "../common/cuda_launch.h"

#include "attention_cuda.h"

namespace pyseq {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;


unsigned blocks_for(int64_t threads) { return grid_stride_blocks(threads, kThreads); }

template <typename T>
__global__ void additive_scores_kernel(const AdditiveArgs<T> a) {
  PYSEQ_GRID_STRIDE(e, a.B * a.Tq * a.Tk) {
    const int64_t j = e % a.Tk, row = e / a.Tk;
    additive_score(a, row / a.Tq, row % a.Tq, j);
  }
}

template <typename T>
__global__ void additive_gradients_kernel(const AdditiveArgs<T> a) {
  const int64_t query_elements = a.B * a.Tq * a.A;
  PYSEQ_GRID_STRIDE(e, query_elements + a.B * a.Tk * a.A) {
    if (e < query_elements) {
      const int64_t c = e % a.A, row = e / a.A;
      additive_query_gradient(a, row / a.Tq, row % a.Tq, c);
    } else {
      const int64_t f = e - query_elements, c = f % a.A, row = f / a.A;
      additive_key_gradient(a, row / a.Tk, row % a.Tk, c);
    }
  }
}

template <typename T>
__device__ T warp_sum(T x) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// One warp per row (whole warps: the row index is uniform across a warp).
template <typename T>
__global__ void masked_softmax_kernel(T* scores, int64_t rows, int64_t Tq, int64_t Tk, MaskView mask, T scale) {
  const int64_t r = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (r >= rows) return;
  const int64_t b = r / Tq, i = r % Tq;
  T* row = scores + r * Tk;
  T top = neg_inf<T>();
  bool nan = false;
  for (int64_t j = lane; j < Tk; j += kWarp) {
    const T x = softmax_input(row, j, mask.attends(b, i, j), scale);
    top = x > top ? x : top;  // NaN skipped here, flagged below
    nan |= x != x;
  }
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const T other = __shfl_xor_sync(0xffffffffu, top, offset);
    top = other > top ? other : top;
  }
  nan = __any_sync(0xffffffffu, nan);
  if (nan || top == neg_inf<T>()) {
    for (int64_t j = lane; j < Tk; j += kWarp) row[j] = softmax_degenerate<T>(nan);
    return;
  }
  T total = T(0);
  for (int64_t j = lane; j < Tk; j += kWarp) total += softmax_exp(row, j, top);
  const T inv = T(1) / warp_sum(total);
  for (int64_t j = lane; j < Tk; j += kWarp) row[j] *= inv;
}

template <typename T>
__global__ void softmax_backward_kernel(const T* weights, T* grad, int64_t rows, int64_t Tk, T scale) {
  const int64_t r = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (r >= rows) return;
  const T* w = weights + r * Tk;
  T* g = grad + r * Tk;
  T inner = T(0);
  for (int64_t j = lane; j < Tk; j += kWarp) inner += w[j] * g[j];
  inner = warp_sum(inner);
  for (int64_t j = lane; j < Tk; j += kWarp) softmax_backward_element(w, g, j, inner, scale);
}

unsigned warp_blocks(int64_t rows) { return static_cast<unsigned>((rows * kWarp + kThreads - 1) / kThreads); }

}  // namespace

#define PYSEQ_DEFINE_ATTENTION_LAUNCHERS(T)                                                                        \
  void launch_additive_scores(const AdditiveArgs<T>& a, void* stream) {                                          \
    const int64_t n = a.B * a.Tq * a.Tk;                                                                          \
    if (n > 0) launch_kernel<additive_scores_kernel<T>>(blocks_for(n), kThreads, 0, stream, a);                    \
  }                                                                                                               \
  void launch_masked_softmax(T* scores, int64_t rows, int64_t Tq, int64_t Tk, MaskView mask, T scale,            \
                             void* stream) {                                                                      \
    if (rows > 0) {                                                                                               \
      launch_kernel<masked_softmax_kernel<T>>(warp_blocks(rows), kThreads, 0, stream, scores, rows, Tq, Tk, mask,  \
                                              scale);                                                             \
    }                                                                                                             \
  }                                                                                                               \
  void launch_softmax_backward(const T* weights, T* grad, int64_t rows, int64_t Tk, T scale, void* stream) {     \
    if (rows > 0) {                                                                                               \
      launch_kernel<softmax_backward_kernel<T>>(warp_blocks(rows), kThreads, 0, stream, weights, grad, rows, Tk,  \
                                                scale);                                                           \
    }                                                                                                             \
  }                                                                                                               \
  void launch_additive_gradients(const AdditiveArgs<T>& a, void* stream) {                                       \
    const int64_t n = (a.Tq + a.Tk) * a.B * a.A;                                                                  \
    if (n > 0) launch_kernel<additive_gradients_kernel<T>>(blocks_for(n), kThreads, 0, stream, a);                 \
  }
PYSEQ_DEFINE_ATTENTION_LAUNCHERS(float)
PYSEQ_DEFINE_ATTENTION_LAUNCHERS(double)
#undef PYSEQ_DEFINE_ATTENTION_LAUNCHERS

}  // namespace pyseq
