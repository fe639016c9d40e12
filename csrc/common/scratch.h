// Per-thread buffers for temporaries that do not outlive a call.
//
// A fresh multi-megabyte allocation is mapped anew by the C library and pays a page fault per 4 KB on first touch,
// on every call: measured as 10-25% of a GRU training step at (T=100, B=32, H=256), varying from run to run, and
// most of a batch-1, one-step LSTM call at H=256 (packing W_hh into a fresh 1 MB buffer). So each thread keeps the
// buffer of each slot for its next call, within a bound on the bytes kept by all threads together
// (scratch_limit, settable): a request that would take the total over it gets a fresh tensor, freed when the caller
// drops it. release_scratch() frees every kept buffer (pyseq.empty_cache()).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <initializer_list>

namespace pyseq {

enum class Scratch {
  InputProjection = 0,  // x @ W_ih^T for the whole sequence
  GateGradients = 1,    // the backward's dL/d(pre-activations)
  PackedWeights = 2,    // W_hh in the packed kernels' panel layout
};

// A tensor of `sizes` backed by the calling thread's buffer for `slot` when it fits the bound (else a fresh one);
// valid until the thread's next request for the same slot. Its contents are undefined.
at::Tensor scratch(Scratch slot, std::initializer_list<int64_t> sizes, const at::TensorOptions& options);

// The bound on the bytes all threads keep between calls (default kDefaultScratchLimit); lowering it releases nothing
// by itself (release_scratch does), it only stops buffers from being kept or grown past it.
constexpr int64_t kDefaultScratchLimit = int64_t(64) << 20;
void set_scratch_limit(int64_t bytes);
int64_t scratch_limit();

// Bytes the threads keep now; and releasing them all (buffers still in use by a running call stay alive until that
// call drops them).
int64_t scratch_bytes();
void release_scratch();

}  // namespace pyseq
