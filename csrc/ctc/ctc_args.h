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

}  // namespace pyseq
