// Argument checks shared by the CTC loss, decoders and aligner.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "../common/checks.h"

namespace pyseq {

// log_probs: [T, N, C] float32/float64 on the CPU, and blank in [0, C).
inline void check_log_probs(const at::Tensor& log_probs, int64_t blank) {
  check_dim(log_probs, "log_probs", 3, "(T, N, C)");
  check_floating(log_probs, "log_probs");
  TORCH_CHECK(log_probs.device().is_cpu(), "log_probs must be on the CPU, got ", log_probs.device());
  const int64_t C = log_probs.size(2);
  TORCH_CHECK_VALUE(blank >= 0 && blank < C, "blank must be in [0, C) = [0, ", C, "), got ", blank);
}

// lengths: [N] int64 on the CPU, each in [0, max] (`what` describes max, e.g. "T = 500"); max < 0: no upper bound.
inline std::vector<int64_t> read_lengths(const at::Tensor& lengths, const char* name, int64_t N, int64_t max,
                                         const std::string& what) {
  check_dim(lengths, name, 1, "(N,)");
  TORCH_CHECK_TYPE(lengths.scalar_type() == at::kLong, name, " must be int64, got ", lengths.scalar_type());
  TORCH_CHECK(lengths.device().is_cpu(), name, " must be on the CPU, got ", lengths.device());
  TORCH_CHECK(lengths.size(0) == N, name, " must have one entry per sequence (N = ", N, "), got ", lengths.size(0));
  const at::Tensor c = lengths.contiguous();
  std::vector<int64_t> out(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + N);
  for (int64_t n = 0; n < N; ++n) {
    TORCH_CHECK(out[n] >= 0 && (max < 0 || out[n] <= max), name, " must be ",
                max < 0 ? std::string("non-negative") : "in [0, " + what + "]", ", got ", out[n], " for sequence ", n);
  }
  return out;
}

}  // namespace pyseq
