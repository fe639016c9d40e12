// Launchers of the recurrent layers' CUDA kernels, queued on `stream` (a cudaStream_t). Torch-free (see
// rnn_steps.h); compiled by nvcc in rnn_cuda.cu.
//
// launch_cell_update: one fused cell update per step over the n active rows of the step (the step schedule of
// rnn_schedule.h runs the recurrent product through cuBLAS between them).
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

// The whole forward time loop of one layer in one persistent kernel, for small batches: each block keeps the rows of
// W_hh of its share of the hidden units in shared memory for all T steps, computes their recurrent products and cell
// updates, and the grid synchronises once per step (the new state goes through a double buffer in global memory).
// Every sequence runs all T steps (padded input), no projection. Results and workspace as the step schedule's.
template <typename S>
struct PersistentForward {
  int mode;  // CellMode
  int64_t T, B, H;
  bool reverse;
  const S* gi;    // [T*B, G*H] input projection (biases folded as in the step schedule)
  const S* w_hh;  // [G*H, H] row-major
  const S* b_hh;  // [3H] (GRU) or nullptr
  S* h;           // [2, B, H]: h0 in the first half; after the call h_n is in half T % 2
  S* c;           // [B, H] (LSTM): c0 in, c_n out
  S* gh;          // [B, G*H] scratch for the recurrent products
  S* y;           // [T*B, H]
  S* saved;       // [T*B, saved_ld] or nullptr
  int64_t saved_ld;
};

// Queues the kernel (a cooperative launch); false when it does not fit (then nothing is queued).
bool launch_persistent_forward(const PersistentForward<float>& a, void* stream);
bool launch_persistent_forward(const PersistentForward<bfloat16_t>& a, void* stream);
bool launch_persistent_forward(const PersistentForward<float16_t>& a, void* stream);

// The largest batch the persistent kernel takes.
constexpr int64_t kPersistentMaxBatch = 16;

}  // namespace pyseq
