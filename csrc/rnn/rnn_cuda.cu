// CUDA kernels of the recurrent layers: the fused cell update of one step, one thread per hidden unit of an active
// row, running the per-unit functions of rnn_steps.h (the CPU's cell math, cell_rows.h). The GEMMs around them go
// through cuBLAS from the glue (rnn_cuda.cpp).
#include <cuda_runtime.h>

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
  cell_update_kernel<Rows, Unit><<<grid, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(a, units);
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

}  // namespace pyseq
