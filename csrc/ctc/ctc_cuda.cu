// CUDA kernels of CTC: the loss forward and backward, greedy decoding and forced alignment. The loss and the alignment
// run one block per sequence, the lattice cells across its threads and time as the loop, each cell's work being a
// function of ctc_lattice.h (make cuda-emulate runs these kernels on the CPU). No floating-point atomics: every
// gradient element is written by one thread and the blank's sum is a fixed tree, so gradients are deterministic.
#include <cuda_runtime.h>

#include "../common/cuda_launch.h"

#include "ctc_cuda.h"

namespace pyseq {
namespace {

constexpr int kMaxThreads = kMaxBlockThreads;
constexpr int kWarp = 32;

// Threads of a block over `cells` cells: a power of two (the blank's tree sum), at least a warp.
int block_threads(int64_t cells) { return pow2_block_threads(cells); }

template <typename T>
__global__ void __launch_bounds__(kMaxThreads) ctc_alpha_kernel(const CtcLossArgs<T> a) {
  const int64_t n = blockIdx.x, steps = a.input_lengths[n];
  __shared__ int nan;
  if (threadIdx.x == 0) nan = 0;
  bool mine = false;
  for (int64_t t = 0; t < steps; ++t) {
    __syncthreads();  // row t - 1 is complete
    for (int64_t s = threadIdx.x; s < a.Lmax; s += blockDim.x) mine |= ctc_alpha_cell(a, n, t, s);
  }
  // Rows past the sequence's frames: -inf, nothing reads them here.
  T* rest = a.alpha + (n * a.T_max + steps) * a.Lmax;
  for (int64_t i = threadIdx.x; i < (a.T_max - steps) * a.Lmax; i += blockDim.x) rest[i] = neg_inf<T>();
  if (mine) atomicOr(&nan, 1);  // after the loop's first barrier (or with no steps, no flag): nan = 0 is written
  __syncthreads();              // the last row and the NaN flag are complete
  if (threadIdx.x == 0) a.nll[n] = ctc_nll(a, n, nan != 0);
}

template <typename T>
__global__ void __launch_bounds__(kMaxThreads) ctc_backward_kernel(const CtcLossArgs<T> a) {
  __shared__ T partial[kMaxThreads];
  const int64_t n = blockIdx.x, steps = a.input_lengths[n], S = a.target_lengths[n];
  const int tid = threadIdx.x, threads = blockDim.x;
  const CtcBackwardPlan plan = ctc_backward_plan(a, n);
  if (plan.kind == CtcBackwardPlan::Nan) {
    for (int64_t i = tid; i < steps * a.C; i += threads) ctc_nan_gradient(a, n, i);
    return;
  }
  if (plan.kind == CtcBackwardPlan::Skip) return;
  const T sign = static_cast<T>(plan.sign), shifted_nll = static_cast<T>(plan.shifted_nll);
  for (int64_t t = steps - 1; t >= 0; --t) {
    for (int64_t s = tid; s < a.Lmax + 2; s += threads) ctc_beta_cell(a, n, t, s, shifted_nll);
    __syncthreads();  // row t of beta and the occupancies are complete
    for (int64_t i = tid; i < S; i += threads) ctc_label_gradient(a, n, t, i, sign);
    partial[tid] = ctc_blank_occupancy(a, n, tid, threads);
    __syncthreads();
    for (int half = threads / 2; half > 0; half /= 2) {
      if (tid < half) partial[tid] += partial[tid + half];
      __syncthreads();
    }
    if (tid == 0) a.grad[(t * a.N + n) * a.C + a.blank] = -sign * partial[0];
  }
}

// One warp per frame f = t * N + n: its lanes scan the classes, then the warp keeps the first class of highest score.
template <typename T>
__global__ void ctc_best_class_kernel(const T* lp, int64_t frames, int64_t N, int64_t T_max, int64_t C,
                                      int64_t* best) {
  const int64_t f = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (f >= frames) return;  // whole warps
  const T* row = lp + f * C;
  T value = neg_inf<T>();
  int64_t index = C;  // a lane without classes loses every comparison
  for (int64_t c = lane; c < C; c += kWarp) {
    if (index == C || row[c] > value) value = row[c], index = c;
  }
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const T other_value = __shfl_down_sync(0xffffffffu, value, offset);
    const int64_t other_index = __shfl_down_sync(0xffffffffu, index, offset);
    const bool better = other_index < C && (index == C || other_value > value ||
                                            (other_value == value && other_index < index));
    if (better) value = other_value, index = other_index;
  }
  if (lane == 0) best[(f % N) * T_max + f / N] = index;
}

__global__ void ctc_collapse_kernel(const int64_t* best, int64_t N, int64_t T_max, int64_t blank,
                                    const int64_t* input_lengths, int64_t* tokens, int64_t* counts) {
  const int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (n < N) counts[n] = ctc_collapse(best + n * T_max, input_lengths[n], blank, tokens + n * T_max);
}

template <typename T>
__global__ void __launch_bounds__(kMaxThreads) ctc_align_kernel(const CtcAlignArgs<T> a) {
  const int64_t n = blockIdx.x, steps = a.input_lengths[n], L = 2 * a.target_lengths[n] + 1;
  for (int64_t t = 0; t < steps; ++t) {
    for (int64_t s = threadIdx.x; s < L; s += blockDim.x) ctc_viterbi_cell(a, n, t, s);
    __syncthreads();  // row t is complete before row t + 1 reads it (and before it is overwritten at t + 2)
  }
  if (threadIdx.x == 0) ctc_backtrack(a, n);
}

template <typename T>
void alpha(const CtcLossArgs<T>& a, void* stream) {
  if (a.N == 0) return;
  launch_kernel<ctc_alpha_kernel<T>>(static_cast<unsigned>(a.N), block_threads(a.Lmax), 0, stream, a);
}

template <typename T>
void backward(const CtcLossArgs<T>& a, void* stream) {
  if (a.N == 0) return;
  launch_kernel<ctc_backward_kernel<T>>(static_cast<unsigned>(a.N), block_threads(a.Lmax + 2), 0, stream, a);
}

template <typename T>
void greedy(const T* lp, int64_t T_max, int64_t N, int64_t C, int64_t blank, const int64_t* input_lengths,
            int64_t* best, int64_t* tokens, int64_t* counts, void* stream) {
  const int64_t frames = T_max * N;
  if (N == 0) return;
  constexpr int kThreads = 256;
  if (frames > 0) {
    const int64_t blocks = (frames * kWarp + kThreads - 1) / kThreads;
    launch_kernel<ctc_best_class_kernel<T>>(static_cast<unsigned>(blocks), kThreads, 0, stream, lp, frames, N, T_max,
                                            C, best);
  }
  launch_kernel<ctc_collapse_kernel>(static_cast<unsigned>((N + kThreads - 1) / kThreads), kThreads, 0, stream, best,
                                     N, T_max, blank, input_lengths, tokens, counts);
}

template <typename T>
void align(const CtcAlignArgs<T>& a, void* stream) {
  if (a.N == 0) return;
  launch_kernel<ctc_align_kernel<T>>(static_cast<unsigned>(a.N), block_threads(2 * a.S_max + 1), 0, stream, a);
}

}  // namespace

void launch_ctc_alpha(const CtcLossArgs<float>& a, void* stream) { alpha(a, stream); }
void launch_ctc_alpha(const CtcLossArgs<double>& a, void* stream) { alpha(a, stream); }
void launch_ctc_backward(const CtcLossArgs<float>& a, void* stream) { backward(a, stream); }
void launch_ctc_backward(const CtcLossArgs<double>& a, void* stream) { backward(a, stream); }
void launch_ctc_greedy(const float* lp, int64_t T_max, int64_t N, int64_t C, int64_t blank,
                       const int64_t* input_lengths, int64_t* best, int64_t* tokens, int64_t* counts, void* stream) {
  greedy(lp, T_max, N, C, blank, input_lengths, best, tokens, counts, stream);
}
void launch_ctc_greedy(const double* lp, int64_t T_max, int64_t N, int64_t C, int64_t blank,
                       const int64_t* input_lengths, int64_t* best, int64_t* tokens, int64_t* counts, void* stream) {
  greedy(lp, T_max, N, C, blank, input_lengths, best, tokens, counts, stream);
}
void launch_ctc_align(const CtcAlignArgs<float>& a, void* stream) { align(a, stream); }
void launch_ctc_align(const CtcAlignArgs<double>& a, void* stream) { align(a, stream); }

}  // namespace pyseq
