// CUDA kernels of the recurrent layers, both running the per-unit functions of rnn_steps.h (the CPU's cell math,
// cell_rows.h): the fused cell update of one step, one thread per hidden unit of an active row (the GEMMs around it
// go through cuBLAS from the glue, rnn_cuda.cpp); and the persistent forward kernel for small batches.
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include "../common/cuda_launch.h"
#include "rnn_cuda.h"

namespace pyseq {
namespace {

constexpr int kThreads = 256;

// Grid-stride over the n * H units of a step, unit (b, j) at index b * H + j: consecutive threads take consecutive
// units of a row, so the loads and stores of a warp are coalesced.
template <typename Rows, void (*Unit)(const Rows&, int64_t, int64_t)>
__global__ void __launch_bounds__(kThreads) cell_update_kernel(const Rows a, int64_t units) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < units;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    Unit(a, i / a.H, i % a.H);
  }
}

template <typename Rows, void (*Unit)(const Rows&, int64_t, int64_t)>
void launch(const Rows& a, int64_t n, void* stream) {
  const int64_t units = n * a.H;
  if (units == 0) return;
  // Enough blocks to fill the GPU several times over; the grid-stride loop covers the rest.
  const int64_t blocks = (units + kThreads - 1) / kThreads;
  const unsigned grid = static_cast<unsigned>(blocks < 65535 ? blocks : 65535);
  launch_kernel<cell_update_kernel<Rows, Unit>>(grid, kThreads, 0, stream, a, units);
}

}  // namespace

#define PYSEQ_DEFINE_RNN_LAUNCHERS(S)                                                                        \
  void launch_cell_update(const LstmForwardRows<S>& a, int64_t n, void* stream) {                           \
    launch<LstmForwardRows<S>, &lstm_forward_unit<S>>(a, n, stream);                                        \
  }                                                                                                         \
  void launch_cell_update(const GruForwardRows<S>& a, int64_t n, void* stream) {                            \
    launch<GruForwardRows<S>, &gru_forward_unit<S>>(a, n, stream);                                          \
  }                                                                                                         \
  void launch_cell_update(const RnnForwardRows<S>& a, int64_t n, void* stream) {                            \
    launch<RnnForwardRows<S>, &rnn_forward_unit<S>>(a, n, stream);                                          \
  }                                                                                                         \
  void launch_cell_update(const LstmBackwardRows<S>& a, int64_t n, void* stream) {                          \
    launch<LstmBackwardRows<S>, &lstm_backward_unit<S>>(a, n, stream);                                      \
  }                                                                                                         \
  void launch_cell_update(const GruBackwardRows<S>& a, int64_t n, void* stream) {                           \
    launch<GruBackwardRows<S>, &gru_backward_unit<S>>(a, n, stream);                                        \
  }                                                                                                         \
  void launch_cell_update(const RnnBackwardRows<S>& a, int64_t n, void* stream) {                           \
    launch<RnnBackwardRows<S>, &rnn_backward_unit<S>>(a, n, stream);                                        \
  }
PYSEQ_DEFINE_RNN_LAUNCHERS(float)
PYSEQ_DEFINE_RNN_LAUNCHERS(double)
PYSEQ_DEFINE_RNN_LAUNCHERS(bfloat16_t)
PYSEQ_DEFINE_RNN_LAUNCHERS(float16_t)
#undef PYSEQ_DEFINE_RNN_LAUNCHERS

// ---- the persistent forward kernel ------------------------------------------------------------------------------

namespace {

constexpr int kPersistentThreads = 256;

constexpr int persistent_gates(int mode) { return mode == 2 ? 4 : mode == 3 ? 3 : 1; }

// The cell update of unit j of row b at step t, from the recurrent products in a.gh; the state is read from and
// written to h_next, where the caller has copied this unit's previous state.
template <typename S, int kMode>
__device__ void persistent_update(const PersistentForward<S>& a, int64_t t, int64_t b, int64_t j, S* h_next) {
  const int64_t H = a.H, rows = t * a.B;
  S* saved = a.saved ? a.saved + rows * a.saved_ld : nullptr;
  if constexpr (kMode == 2) {
    lstm_forward_unit(
        LstmForwardRows<S>{H, H, a.gi + rows * 4 * H, a.gh, a.c, h_next, a.y + rows * H, nullptr, saved, a.saved_ld},
        b, j);
  } else if constexpr (kMode == 3) {
    gru_forward_unit(GruForwardRows<S>{H, a.gi + rows * 3 * H, a.gh, a.b_hh, h_next, a.y + rows * H, saved,
                                       a.saved_ld},
                     b, j);
  } else {
    rnn_forward_unit(
        RnnForwardRows<S>{H, kMode == 1, a.gi + rows * H, a.gh, h_next, a.y + rows * H, saved, a.saved_ld}, b, j);
  }
}

// Block k owns hidden units [k * units, (k + 1) * units). Shared memory: the state of the step, [B, H] in the
// accumulation type, then the block's rows of W_hh, [G * units, H] (row g * units + u is W_hh row g * H + u0 + u).
// Per step: stage the state, one warp per owned row computes its product with every batch row (lanes over the
// reduction, then a warp reduction), the block's threads update their units, and the grid synchronises.
template <typename S, int kMode>
__global__ void __launch_bounds__(kPersistentThreads)
    persistent_forward_kernel(const PersistentForward<S> a, int64_t units) {
  using A = accumulate_t<S>;
  constexpr int G = persistent_gates(kMode);
  const int64_t H = a.H, B = a.B, GH = G * H;
  const int64_t u0 = blockIdx.x * units;
  const int64_t U = u0 >= H ? 0 : (H - u0 < units ? H - u0 : units);
  PYSEQ_DYNAMIC_SHARED(shared);
  A* state = reinterpret_cast<A*>(shared);
  S* w = reinterpret_cast<S*>(shared + B * H * sizeof(A));
  for (int64_t i = threadIdx.x; i < G * U * H; i += blockDim.x) {
    const int64_t r = i / H, k = i % H;
    w[i] = a.w_hh[((r / U) * H + u0 + r % U) * H + k];
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  cooperative_groups::grid_group grid = cooperative_groups::this_grid();
  for (int64_t s = 0; s < a.T; ++s) {
    const int64_t t = a.reverse ? a.T - 1 - s : s;
    const S* h_cur = a.h + (s % 2) * B * H;
    S* h_next = a.h + ((s + 1) % 2) * B * H;
    for (int64_t i = threadIdx.x; i < B * H; i += blockDim.x) state[i] = load(h_cur[i]);
    __syncthreads();
    for (int64_t r = warp; r < G * U; r += warps) {
      A acc[kPersistentMaxBatch];
#pragma unroll
      for (int b = 0; b < kPersistentMaxBatch; ++b) acc[b] = A(0);
      const S* row = w + r * H;
      for (int64_t k = lane; k < H; k += 32) {
        const A wk = load(row[k]);
#pragma unroll
        for (int b = 0; b < kPersistentMaxBatch; ++b) {
          if (b < B) acc[b] += wk * state[b * H + k];
        }
      }
      const int64_t column = (r / U) * H + u0 + r % U;
#pragma unroll
      for (int b = 0; b < kPersistentMaxBatch; ++b) {
        if (b < B) {
          A v = acc[b];
          for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
          if (lane == 0) store(&a.gh[b * GH + column], v);
        }
      }
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < B * U; i += blockDim.x) {
      const int64_t b = i / U, j = u0 + i % U;
      h_next[b * H + j] = h_cur[b * H + j];
      persistent_update<S, kMode>(a, t, b, j, h_next);
    }
    grid.sync();
  }
}

template <typename S, int kMode>
bool launch_persistent(const PersistentForward<S>& a, void* stream) {
  using A = accumulate_t<S>;
  if (a.B < 1 || a.B > kPersistentMaxBatch || a.T < 1) return false;
  int device = 0, sms = 0, smem_limit = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&smem_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  // One block per multiprocessor, each owning an equal share of the units.
  const int64_t units = (a.H + sms - 1) / sms;
  const int64_t blocks = (a.H + units - 1) / units;
  const size_t smem = a.B * a.H * sizeof(A) + persistent_gates(kMode) * units * a.H * sizeof(S);
  if (smem > static_cast<size_t>(smem_limit)) return false;
  auto kernel = persistent_forward_kernel<S, kMode>;
  int per_sm = 0;
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)) !=
          cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kPersistentThreads, smem) != cudaSuccess ||
      static_cast<int64_t>(per_sm) * sms < blocks) {
    cudaGetLastError();
    return false;
  }
  if (launch_cooperative_kernel<persistent_forward_kernel<S, kMode>>(static_cast<unsigned>(blocks), kPersistentThreads,
                                                                     smem, stream, a, units) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return true;
}

template <typename S>
bool launch_persistent_any(const PersistentForward<S>& a, void* stream) {
  switch (a.mode) {
    case 0: return launch_persistent<S, 0>(a, stream);
    case 1: return launch_persistent<S, 1>(a, stream);
    case 2: return launch_persistent<S, 2>(a, stream);
    case 3: return launch_persistent<S, 3>(a, stream);
    default: return false;
  }
}

}  // namespace

bool launch_persistent_forward(const PersistentForward<float>& a, void* stream) {
  return launch_persistent_any(a, stream);
}
bool launch_persistent_forward(const PersistentForward<bfloat16_t>& a, void* stream) {
  return launch_persistent_any(a, stream);
}
bool launch_persistent_forward(const PersistentForward<float16_t>& a, void* stream) {
  return launch_persistent_any(a, stream);
}

}  // namespace pyseq
