// CUDA kernels of the Clockwork RNN: a block per batch row runs the whole time loop (rows are independent), its
// state in shared memory, a thread per hidden unit (units strided over the block), two barriers per step. Each
// thread's work is a function of clockwork_elements.h (the CPU kernels run the same math register-blocked; make
// cuda-emulate runs these kernels on the CPU).
#include <cuda_runtime.h>

#include "../common/cuda_launch.h"
#include "clockwork_cuda.h"

namespace pyseq {
namespace {

// Shared memory: the state h [H], then the next state [H].
template <typename T>
__global__ void clockwork_forward_kernel(const ClockworkArgs<T> a) {
  PYSEQ_DYNAMIC_SHARED(shared);
  T* h = reinterpret_cast<T*>(shared);
  T* next = h + a.H;
  const int64_t b = blockIdx.x;
  for (int64_t u = threadIdx.x; u < a.H; u += blockDim.x) h[u] = a.h0[b * a.H + u];
  __syncthreads();  // the initial state whole before the first step reads it
  for (int64_t t = 0; t < a.steps; ++t) {
    T* y = a.output + (t * a.B + b) * a.H;
    if (t >= a.lengths[b]) {  // the same for the whole block: the sequence has ended
      for (int64_t u = threadIdx.x; u < a.H; u += blockDim.x) y[u] = T(0);
      continue;
    }
    for (int64_t u = threadIdx.x; u < a.H; u += blockDim.x) next[u] = clockwork_unit_step(a, t, b, u, h);
    __syncthreads();  // every unit has read h before it changes
    for (int64_t u = threadIdx.x; u < a.H; u += blockDim.x) {
      h[u] = next[u];
      y[u] = next[u];
    }
    __syncthreads();  // the new state whole before the next step reads it
  }
  for (int64_t u = threadIdx.x; u < a.H; u += blockDim.x) a.h_n[b * a.H + u] = h[u];
}

// Shared memory: d loss / d state [H], d loss / d h_t [H], the pre-activation gradients d_pre [H].
template <typename T>
__global__ void clockwork_backward_kernel(const ClockworkArgs<T> a) {
  PYSEQ_DYNAMIC_SHARED(shared);
  T* dh = reinterpret_cast<T*>(shared);
  T* g = dh + a.H;
  T* d_pre = g + a.H;
  const int64_t b = blockIdx.x;
  for (int64_t u = threadIdx.x; u < a.H; u += blockDim.x) dh[u] = a.grad_h_n[b * a.H + u];
  for (int64_t t = a.steps - 1; t >= 0; --t) {
    const int64_t row = (t * a.B + b) * a.H;
    if (t >= a.lengths[b]) {  // the same for the whole block: the state passes through unchanged
      for (int64_t u = threadIdx.x; u < a.H; u += blockDim.x) a.grad_input_proj[row + u] = T(0);
      continue;
    }
    // Each thread reads back only the dh entries it wrote, so no barrier is needed before this loop.
    for (int64_t u = threadIdx.x; u < a.H; u += blockDim.x) {
      g[u] = dh[u] + a.grad_output[row + u];
      d_pre[u] = module_active(a, u / a.width, t) ? clockwork_activation_backward(a, a.output[row + u], g[u]) : T(0);
      a.grad_input_proj[row + u] = d_pre[u];
    }
    __syncthreads();  // g and d_pre whole before the state gradient reads them
    for (int64_t c = threadIdx.x; c < a.H; c += blockDim.x) dh[c] = clockwork_state_gradient(a, t, c, g, d_pre);
    __syncthreads();  // g and d_pre read by every thread before the step before overwrites them
  }
  for (int64_t u = threadIdx.x; u < a.H; u += blockDim.x) a.grad_h0[b * a.H + u] = dh[u];
}

template <typename T>
void forward(const ClockworkArgs<T>& a, void* stream) {
  if (a.B == 0) return;
  launch_kernel<clockwork_forward_kernel<T>>(static_cast<unsigned>(a.B), pow2_block_threads(a.H), 2 * a.H * sizeof(T),
                                             stream, a);
}

template <typename T>
void backward(const ClockworkArgs<T>& a, void* stream) {
  if (a.B == 0) return;
  launch_kernel<clockwork_backward_kernel<T>>(static_cast<unsigned>(a.B), pow2_block_threads(a.H), 3 * a.H * sizeof(T),
                                              stream, a);
}

}  // namespace

#define PYSEQ_DEFINE_CLOCKWORK_LAUNCHERS(T)                                                      \
  void launch_clockwork_forward(const ClockworkArgs<T>& a, void* stream) { forward(a, stream); } \
  void launch_clockwork_backward(const ClockworkArgs<T>& a, void* stream) { backward(a, stream); }
PYSEQ_DEFINE_CLOCKWORK_LAUNCHERS(float)
PYSEQ_DEFINE_CLOCKWORK_LAUNCHERS(double)
#undef PYSEQ_DEFINE_CLOCKWORK_LAUNCHERS

}  // namespace pyseq
