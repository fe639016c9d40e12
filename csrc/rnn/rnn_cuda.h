// Launchers of the recurrent layers' CUDA kernels: one fused cell update per step over the n active rows of the step,
// queued on `stream` (a cudaStream_t). Torch-free (see rnn_steps.h); compiled by nvcc in rnn_cuda.cu.
#pragma once

#include "rnn_steps.h"

namespace pyseq {

#define PYSEQ_DECLARE_RNN_LAUNCHERS(S)                                                    \
  void launch_cell_update(const LstmForwardRows<S>& a, int64_t n, void* stream);         \
  void launch_cell_update(const GruForwardRows<S>& a, int64_t n, void* stream);          \
  void launch_cell_update(const RnnForwardRows<S>& a, int64_t n, void* stream);          \
  void launch_cell_update(const LstmBackwardRows<S>& a, int64_t n, void* stream);        \
  void launch_cell_update(const GruBackwardRows<S>& a, int64_t n, void* stream);         \
  void launch_cell_update(const RnnBackwardRows<S>& a, int64_t n, void* stream);
PYSEQ_DECLARE_RNN_LAUNCHERS(float)
PYSEQ_DECLARE_RNN_LAUNCHERS(double)
PYSEQ_DECLARE_RNN_LAUNCHERS(bfloat16_t)
PYSEQ_DECLARE_RNN_LAUNCHERS(float16_t)
#undef PYSEQ_DECLARE_RNN_LAUNCHERS

}  // namespace pyseq
