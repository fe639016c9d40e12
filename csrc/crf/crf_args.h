// Argument checks shared by the CRF kernels (see crf.h for the shapes).
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "../common/checks.h"

namespace pyseq {

struct CrfArgs {
  int64_t B, T, K;
  std::vector<int64_t> lengths;  // [B], each in [0, T]
  at::Tensor emissions;          // [B, T, K] with the tag dimension contiguous
  int64_t stride_b, stride_t;    // element strides of emissions over batch and time
};

// emissions: [B, T, K] float32/float64 on the CPU; lengths: [B] int64 in [0, T].
inline CrfArgs check_crf_emissions(const at::Tensor& emissions, const at::Tensor& lengths) {
  check_dim(emissions, "emissions", 3, "(batch, seq_length, num_tags)");
  check_floating(emissions, "emissions");
  TORCH_CHECK(emissions.device().is_cpu(), "emissions must be on the CPU, got ", emissions.device());
  CrfArgs a;
  a.B = emissions.size(0);
  a.T = emissions.size(1);
  a.K = emissions.size(2);
  TORCH_CHECK_VALUE(a.K >= 1, "emissions must have at least one tag, got num_tags = 0");
  a.lengths = read_lengths(lengths, "lengths", a.B, a.T, "seq_length = " + std::to_string(a.T));
  a.emissions = emissions.stride(2) == 1 ? emissions : emissions.contiguous();
  a.stride_b = a.emissions.stride(0);
  a.stride_t = a.emissions.stride(1);
  return a;
}

// Also start_transitions, end_transitions: [K]; transitions: [K, K]; all of the dtype of emissions.
inline CrfArgs check_crf_args(const at::Tensor& emissions, const at::Tensor& lengths, const at::Tensor& start,
                              const at::Tensor& end, const at::Tensor& transitions) {
  CrfArgs a = check_crf_emissions(emissions, lengths);
  check_shape(start, "start_transitions", {a.K});
  check_shape(end, "end_transitions", {a.K});
  check_shape(transitions, "transitions", {a.K, a.K});
  check_like(start, "start_transitions", emissions, "emissions");
  check_like(end, "end_transitions", emissions, "emissions");
  check_like(transitions, "transitions", emissions, "emissions");
  return a;
}

// tags: [B, T] int64 with every tag in [0, K) within its sequence's length. Returns it contiguous.
inline at::Tensor check_tags(const at::Tensor& tags, const CrfArgs& a) {
  check_shape(tags, "tags", {a.B, a.T});
  TORCH_CHECK_TYPE(tags.scalar_type() == at::kLong, "tags must be int64, got ", tags.scalar_type());
  const at::Tensor y = tags.contiguous();
  const int64_t* p = y.data_ptr<int64_t>();
  for (int64_t b = 0; b < a.B; ++b) {
    for (int64_t t = 0; t < a.lengths[b]; ++t) {
      const int64_t k = p[b * a.T + t];
      TORCH_CHECK_VALUE(k >= 0 && k < a.K, "tags must be in [0, num_tags = ", a.K, "), got ", k, " at step ", t,
                        " of sequence ", b);
    }
  }
  return y;
}

}  // namespace pyseq
