// Per-thread buffers for temporaries that do not outlive a call.
//
// A fresh multi-megabyte allocation is mapped anew by the C library and pays a page fault per 4 KB on first touch,
// on every call: measured as 10-25% of a GRU training step at (T=100, B=32, H=256), varying from run to run, and
// most of a batch-1, one-step LSTM call at H=256 (packing W_hh into a fresh 1 MB buffer). Each slot keeps its
// largest buffer (up to kScratchCap bytes; larger requests get a fresh tensor) for the thread's next call.
#pragma once

#include <ATen/ATen.h>

#include <initializer_list>

namespace pyseq {

enum class Scratch {
  InputProjection = 0,  // x @ W_ih^T for the whole sequence
  GateGradients = 1,    // the backward's dL/d(pre-activations)
  PackedWeights = 2,    // W_hh in the packed kernels' panel layout
};

constexpr int64_t kScratchCap = int64_t(64) << 20;

// A tensor of `sizes` backed by the calling thread's buffer for `slot`; valid until the thread's next request for
// the same slot. Its contents are undefined.
at::Tensor scratch(Scratch slot, std::initializer_list<int64_t> sizes, const at::TensorOptions& options);

}  // namespace pyseq
