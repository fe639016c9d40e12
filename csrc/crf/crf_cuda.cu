// CUDA kernels of the linear-chain CRF: the forward recursion (log Z, log-likelihood), the backward recursion
// (marginals, gradients), path scores and their gradient, and Viterbi. One block per sequence, the tags across its
// threads, time as the loop; each tag's work is a function of crf_chain.h (make cuda-emulate runs these kernels on
// the CPU). Maxima over the tags are block reductions in a fixed tree; no atomics, so results are deterministic.
#include <cuda_runtime.h>

#include "../common/cuda_launch.h"

#include "crf_cuda.h"

namespace pyseq {
namespace {

constexpr int kMaxThreads = kMaxBlockThreads;

// Threads of a block over K tags: a power of two (the reductions' tree), at least a warp.
int block_threads(int64_t K) { return pow2_block_threads(K); }

// The maximum of x[0, n) over the block (NaN skipped, -inf for none); every thread gets it. buffer: [blockDim.x].
template <typename T>
__device__ T block_max(const T* x, int64_t n, T* buffer) {
  T m = neg_inf<T>();
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) m = x[i] > m ? x[i] : m;
  buffer[threadIdx.x] = m;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half && buffer[threadIdx.x + half] > buffer[threadIdx.x]) {
      buffer[threadIdx.x] = buffer[threadIdx.x + half];
    }
    __syncthreads();
  }
  const T result = buffer[0];
  __syncthreads();
  return result;
}

// Shared memory of a block: the four vectors of CrfScratch ([K] each), then the reduction buffer.
template <typename T>
struct SharedVectors {
  CrfScratch<T> s;
  T* buffer;
  __device__ SharedVectors(T* base, int64_t K) : s{base, base + K, base + 2 * K, base + 3 * K}, buffer(base + 4 * K) {}
};

template <typename T>
size_t shared_bytes(int64_t K, int threads) {
  return (4 * K + threads) * sizeof(T);
}

template <typename T>
__global__ void __launch_bounds__(kMaxThreads) crf_forward_kernel(const CrfChainArgs<T> a, T* out) {
  PYSEQ_DYNAMIC_SHARED(shared);
  const SharedVectors<T> v(reinterpret_cast<T*>(shared), a.K);
  const int64_t b = blockIdx.x, L = a.lengths[b], K = a.K;
  for (int64_t i = threadIdx.x; i < (a.T_max - L) * a.Kp; i += blockDim.x) crf_alpha_padding(a, b, i);
  if (L > 0) {
    for (int64_t j = threadIdx.x; j < a.Kp; j += blockDim.x) crf_alpha_first(a, b, j);
    if (threadIdx.x == 0) crf_shift_step(a, b, 0, T(0));
  }
  // No barrier at the top of a step: block_max reads only the tags of row t - 1 that this thread wrote, and its first
  // barrier comes before p is overwritten (every thread is done with step t - 1's p by then).
  for (int64_t t = 1; t < L; ++t) {
    const T m = block_max(crf_alpha_row(a, b, t - 1), K, v.buffer);
    for (int64_t i = threadIdx.x; i < K; i += blockDim.x) crf_forward_exp(a, b, t, i, m, v.s.p);
    __syncthreads();
    for (int64_t j = threadIdx.x; j < a.Kp; j += blockDim.x) crf_alpha_tag(a, b, t, j, m, v.s.p);
    if (threadIdx.x == 0) crf_shift_step(a, b, t, m);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const T log_z = crf_log_z(a, b);
    out[b] = a.tags ? crf_log_likelihood(a, b, crf_path_score(a, b), log_z) : log_z;
  }
}

template <typename T>
__global__ void __launch_bounds__(kMaxThreads) crf_backward_kernel(const CrfChainArgs<T> a) {
  PYSEQ_DYNAMIC_SHARED(shared);
  const SharedVectors<T> v(reinterpret_cast<T*>(shared), a.K);
  const CrfScratch<T>& s = v.s;
  const int64_t b = blockIdx.x, L = a.lengths[b], K = a.K;
  const CrfBackwardPlan plan = crf_backward_plan(a, b);
  for (int64_t i = threadIdx.x; i < a.T_max * K; i += blockDim.x) crf_node_fill(a, b, i, plan.kind);
  if (plan.kind == CrfBackwardPlan::Run) {
    for (int64_t j = threadIdx.x; j < K; j += blockDim.x) crf_beta_last(a, j, s.beta);
    double beta_shift = 0;
    for (int64_t t = L - 1; t >= 0; --t) {
      __syncthreads();  // beta of step t is complete
      for (int64_t j = threadIdx.x; j < K; j += blockDim.x) crf_node_tag(a, b, t, j, beta_shift, plan.log_z, s.beta, s.w);
      if (t == 0) break;
      const T mw = block_max(s.w, K, v.buffer);  // reads this thread's own w first, then synchronises
      const T m = block_max(crf_alpha_row(a, b, t - 1), K, v.buffer);
      if (mw == neg_inf<T>()) {  // nothing after step t is reachable: no pairwise mass, beta of t - 1 is -inf
        for (int64_t j = threadIdx.x; j < K; j += blockDim.x) s.beta[j] = neg_inf<T>();
        continue;
      }
      for (int64_t j = threadIdx.x; j < K; j += blockDim.x) crf_backward_exp(a, b, t, j, m, mw, s);
      __syncthreads();
      for (int64_t j = threadIdx.x; j < K; j += blockDim.x) crf_pair_and_beta(a, b, t, j, m, mw, beta_shift, plan.log_z, s);
      beta_shift += mw;
    }
  }
  if (a.tags) {
    __syncthreads();  // the recursion's writes are complete
    if (threadIdx.x == 0) crf_path_gradient(a, b);
  }
}

template <typename T>
__global__ void crf_path_scores_kernel(const CrfChainArgs<T> a, T* out) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b < a.B) out[b] = crf_path_score(a, b);
}

template <typename T>
__global__ void crf_path_gradients_kernel(const CrfChainArgs<T> a) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b < a.B) crf_path_gradient(a, b);
}

template <typename T>
__global__ void __launch_bounds__(kMaxThreads) crf_viterbi_kernel(const CrfViterbiArgs<T> a) {
  const int64_t b = blockIdx.x, L = a.lengths[b];
  for (int64_t t = 0; t < L; ++t) {
    for (int64_t j = threadIdx.x; j < a.K; j += blockDim.x) crf_viterbi_tag(a, b, t, j);
    __syncthreads();  // row t is complete before row t + 1 reads it (and before it is overwritten at t + 2)
  }
  if (threadIdx.x == 0) crf_viterbi_backtrack(a, b);
}

template <typename T>
void forward(const CrfChainArgs<T>& a, T* out, void* stream) {
  if (a.B == 0) return;
  const int threads = block_threads(a.K);
  launch_kernel<crf_forward_kernel<T>>(static_cast<unsigned>(a.B), threads, shared_bytes<T>(a.K, threads), stream, a,
                                       out);
}

template <typename T>
void backward(const CrfChainArgs<T>& a, void* stream) {
  if (a.B == 0) return;
  const int threads = block_threads(a.K);
  launch_kernel<crf_backward_kernel<T>>(static_cast<unsigned>(a.B), threads, shared_bytes<T>(a.K, threads), stream, a);
}

constexpr int kSequenceThreads = 128;
unsigned sequence_blocks(int64_t B) { return static_cast<unsigned>((B + kSequenceThreads - 1) / kSequenceThreads); }

template <typename T>
void path_scores(const CrfChainArgs<T>& a, T* out, void* stream) {
  if (a.B == 0) return;
  launch_kernel<crf_path_scores_kernel<T>>(sequence_blocks(a.B), kSequenceThreads, 0, stream, a, out);
}

template <typename T>
void path_gradients(const CrfChainArgs<T>& a, void* stream) {
  if (a.B == 0) return;
  launch_kernel<crf_path_gradients_kernel<T>>(sequence_blocks(a.B), kSequenceThreads, 0, stream, a);
}

template <typename T>
void viterbi(const CrfViterbiArgs<T>& a, void* stream) {
  if (a.B == 0) return;
  launch_kernel<crf_viterbi_kernel<T>>(static_cast<unsigned>(a.B), block_threads(a.K), 0, stream, a);
}

}  // namespace

#define PYSEQ_DEFINE_CRF_LAUNCHERS(T)                                                                              \
  void launch_crf_forward(const CrfChainArgs<T>& a, T* out, void* stream) { forward(a, out, stream); }            \
  void launch_crf_backward(const CrfChainArgs<T>& a, void* stream) { backward(a, stream); }                      \
  void launch_crf_path_scores(const CrfChainArgs<T>& a, T* out, void* stream) { path_scores(a, out, stream); }   \
  void launch_crf_path_gradients(const CrfChainArgs<T>& a, void* stream) { path_gradients(a, stream); }          \
  void launch_crf_viterbi(const CrfViterbiArgs<T>& a, void* stream) { viterbi(a, stream); }
PYSEQ_DEFINE_CRF_LAUNCHERS(float)
PYSEQ_DEFINE_CRF_LAUNCHERS(double)
#undef PYSEQ_DEFINE_CRF_LAUNCHERS

}  // namespace pyseq
