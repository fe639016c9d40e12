// Argument checks shared by the CRF kernels (see crf.h for the shapes).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <vector>

#include "../common/checks.h"
#include "../common/math.h"
#include "crf_math.h"

namespace pyseq {

// Outputs of the shape of the emissions ([B, T, K]: gradients, marginals) are allocated contiguous, whatever the
// strides of the emissions (a slice of a padded batch, an expanded tensor), and written in their own layout.
struct CrfArgs {
  int64_t B, T, K;
  std::vector<int64_t> lengths;  // [B], each in [0, T]
  at::Tensor emissions;          // [B, T, K] with the tag dimension contiguous
  int64_t stride_b, stride_t;    // element strides of emissions over batch and time
  // [B]: 1 where a score that sequence b reads (its emissions within its length, or any transition score) is NaN.
  // Its results are then NaN, as a composition of torch ops would give; the recursions, which take maxima by
  // comparison, would skip the NaN. Filled by check_crf_args.
  std::vector<uint8_t> nan;
};

// The lengths of a prefix mask [B, T] (bool or any integer dtype, nonzero = on; any strides; on the CPU or on
// `device`, then read on the host): ValueError for a row that is not ones, then zeros.
inline std::vector<int64_t> mask_lengths(const at::Tensor& mask, int64_t B, int64_t T, const at::Device& device) {
  TORCH_CHECK_TYPE(mask.scalar_type() == at::kBool || at::isIntegralType(mask.scalar_type(), /*includeBool=*/false),
                   "mask must be bool or an integer dtype, got ", mask.scalar_type());
  check_shape(mask, "mask", {B, T});
  TORCH_CHECK(mask.device().is_cpu() || mask.device() == device, "mask must be on the CPU or on ", device, ", got ",
              mask.device());
  const at::Tensor on = (mask.scalar_type() == at::kBool ? mask : mask.ne(0)).to(at::kCPU);
  const uint8_t* m = static_cast<const uint8_t*>(on.data_ptr());  // bool is stored as one byte, 0 or 1
  const int64_t sb = on.stride(0), st = on.stride(1);
  std::vector<int64_t> lengths(B);
  for (int64_t b = 0; b < B; ++b) {
    int64_t L = 0;
    while (L < T && m[b * sb + L * st]) ++L;
    for (int64_t t = L; t < T; ++t) {
      TORCH_CHECK_VALUE(!m[b * sb + t * st], "mask must be a prefix in each sequence (ones for the steps that exist, "
                        "then zeros for padding), but sequence ", b, " has a one at step ", t, " after a zero at step ",
                        L);
    }
    lengths[b] = L;
  }
  return lengths;
}

// emissions: [B, T, K] float32/float64 on a `device` device; lengths: [B] int64 in [0, T] on the CPU, or a prefix
// mask [B, T].
inline CrfArgs check_crf_emissions(const at::Tensor& emissions, const at::Tensor& lengths,
                                   c10::DeviceType device = c10::kCPU) {
  check_dim(emissions, "emissions", 3, "(batch, seq_length, num_tags)");
  check_floating(emissions, "emissions");
  check_device_type(emissions, "emissions", device);
  CrfArgs a;
  a.B = emissions.size(0);
  a.T = emissions.size(1);
  a.K = emissions.size(2);
  TORCH_CHECK_VALUE(a.K >= 1, "emissions must have at least one tag, got num_tags = 0");
  a.lengths = lengths.dim() == 2 ? mask_lengths(lengths, a.B, a.T, emissions.device())
                                 : read_lengths(lengths, "lengths", a.B, a.T, "seq_length = " + std::to_string(a.T));
  a.emissions = emissions.stride(2) == 1 ? emissions : emissions.contiguous();
  a.stride_b = a.emissions.stride(0);
  a.stride_t = a.emissions.stride(1);
  return a;
}

// Fills a.nan (see CrfArgs).
template <typename T>
void find_nan_sequences(CrfArgs& a, const at::Tensor& start, const at::Tensor& end, const at::Tensor& transitions) {
  const at::Tensor s = start.contiguous(), e = end.contiguous(), tr = transitions.contiguous();
  const bool in_scores =
      any_nan(s.data_ptr<T>(), a.K) || any_nan(e.data_ptr<T>(), a.K) || any_nan(tr.data_ptr<T>(), a.K * a.K);
  a.nan.assign(a.B, 0);
  const T* em = a.emissions.data_ptr<T>();
  at::parallel_for(0, a.B, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      bool found = in_scores && a.lengths[b] > 0;
      for (int64_t t = 0; t < a.lengths[b] && !found; ++t) found = any_nan(em + b * a.stride_b + t * a.stride_t, a.K);
      a.nan[b] = found;
    }
  });
}

// Also start_transitions, end_transitions: [K]; transitions: [K, K]; all of the dtype and device of emissions.
// Leaves a.nan empty.
inline CrfArgs check_crf_scores(const at::Tensor& emissions, const at::Tensor& lengths, const at::Tensor& start,
                                const at::Tensor& end, const at::Tensor& transitions, c10::DeviceType device) {
  CrfArgs a = check_crf_emissions(emissions, lengths, device);
  check_shape(start, "start_transitions", {a.K});
  check_shape(end, "end_transitions", {a.K});
  check_shape(transitions, "transitions", {a.K, a.K});
  check_like(start, "start_transitions", emissions, "emissions");
  check_like(end, "end_transitions", emissions, "emissions");
  check_like(transitions, "transitions", emissions, "emissions");
  return a;
}

// check_crf_scores on the CPU, and a.nan filled.
inline CrfArgs check_crf_args(const at::Tensor& emissions, const at::Tensor& lengths, const at::Tensor& start,
                              const at::Tensor& end, const at::Tensor& transitions) {
  CrfArgs a = check_crf_scores(emissions, lengths, start, end, transitions, c10::kCPU);
  AT_DISPATCH_FLOATING_TYPES(emissions.scalar_type(), "crf_find_nan",
                             [&] { find_nan_sequences<scalar_t>(a, start, end, transitions); });
  return a;
}

// padded_tags (crf_math.h) for the dtype of emissions: the row length of log_alpha.
inline int64_t padded_tags_of(const at::Tensor& emissions, int64_t K) {
  return emissions.scalar_type() == at::kDouble ? padded_tags<double>(K) : padded_tags<float>(K);
}

// What a backward takes from its forward: grad [B] (named grad_name) of the dtype and device of the emissions,
// log_alpha [T, B, Kp] likewise, alpha_shift [T, B] float64.
inline void check_saved(const CrfArgs& a, const at::Tensor& emissions, const at::Tensor& grad, const char* grad_name,
                        const at::Tensor& log_alpha, const at::Tensor& alpha_shift) {
  check_shape(grad, grad_name, {a.B});
  check_like(grad, grad_name, emissions, "emissions");
  check_shape(log_alpha, "log_alpha", {a.T, a.B, padded_tags_of(emissions, a.K)});
  check_like(log_alpha, "log_alpha", emissions, "emissions");
  check_shape(alpha_shift, "alpha_shift", {a.T, a.B});
  TORCH_CHECK_TYPE(alpha_shift.scalar_type() == at::kDouble, "alpha_shift must be float64, got ",
                   alpha_shift.scalar_type());
}

// tags: [B, T] int64 with every tag in [0, K) within its sequence's length (checked on the host). Returns it
// contiguous.
inline at::Tensor check_tags(const at::Tensor& tags, const CrfArgs& a) {
  check_shape(tags, "tags", {a.B, a.T});
  TORCH_CHECK(tags.device() == a.emissions.device(), "tags must be on the device of emissions (",
              a.emissions.device(), "), got ", tags.device());
  TORCH_CHECK_TYPE(tags.scalar_type() == at::kLong, "tags must be int64, got ", tags.scalar_type());
  const at::Tensor y = tags.contiguous(), host = y.to(at::kCPU);
  const int64_t* p = host.data_ptr<int64_t>();
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
