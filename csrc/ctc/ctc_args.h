// Argument checks shared by the CTC loss, decoders and aligner, on every backend. Lengths are read on the host (the
// Python layer passes them as CPU tensors), and so are the targets, whose labels are checked here once for all
// backends (a CUDA call copies them to the host, as torch's CUDA CTC loss reads its lengths there).
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <string>
#include <vector>

#include "../common/checks.h"

namespace pyseq {

// log_probs: [T, N, C] float32/float64 on `device`, and blank in [0, C).
inline void check_log_probs(const at::Tensor& log_probs, int64_t blank, c10::DeviceType device = c10::kCPU) {
  check_dim(log_probs, "log_probs", 3, "(T, N, C)");
  check_floating(log_probs, "log_probs");
  check_device_type(log_probs, "log_probs", device);
  const int64_t C = log_probs.size(2);
  TORCH_CHECK_VALUE(blank >= 0 && blank < C, "blank must be in [0, C) = [0, ", C, "), got ", blank);
}

// Every label of every target in [0, C) and not the blank. targets: int64 contiguous on the CPU; sequence n's labels
// at offsets[n] + i, i < lengths[n].
inline void check_labels(const at::Tensor& targets, const std::vector<int64_t>& offsets,
                         const std::vector<int64_t>& lengths, int64_t C, int64_t blank) {
  const int64_t* tg = targets.data_ptr<int64_t>();
  for (size_t n = 0; n < lengths.size(); ++n) {
    for (int64_t i = 0; i < lengths[n]; ++i) {
      const int64_t label = tg[offsets[n] + i];
      TORCH_CHECK(label >= 0 && label < C && label != blank, "targets must be in [0, C = ", C,
                  ") and differ from the blank (", blank, "), got ", label, " at position ", i, " of sequence ", n);
    }
  }
}

// A batch of the CTC loss, read on the host.
struct Batch {
  int64_t T, N, C, S_max;
  std::vector<int64_t> input_lengths, target_lengths, target_offsets;
  at::Tensor targets;  // contiguous int64 on the CPU
};

// log_probs: [T, N, C] on `device`; targets: [N, S] padded or [sum(target_lengths)] concatenated, int32/int64, on the
// CPU or on `device`; input_lengths, target_lengths: [N] int64 on the CPU.
inline Batch read_batch(const at::Tensor& log_probs, const at::Tensor& targets, const at::Tensor& input_lengths,
                        const at::Tensor& target_lengths, int64_t blank, c10::DeviceType device = c10::kCPU) {
  check_log_probs(log_probs, blank, device);
  Batch b;
  b.T = log_probs.size(0);
  b.N = log_probs.size(1);
  b.C = log_probs.size(2);
  b.input_lengths = read_lengths(input_lengths, "input_lengths", b.N, b.T, "T = " + std::to_string(b.T));
  b.target_lengths = read_lengths(target_lengths, "target_lengths", b.N, -1, "");
  TORCH_CHECK_TYPE(targets.scalar_type() == at::kLong || targets.scalar_type() == at::kInt,
                   "targets must be int32 or int64, got ", targets.scalar_type());
  TORCH_CHECK(targets.device().is_cpu() || targets.device() == log_probs.device(),
              "targets must be on the CPU or on the device of log_probs (", log_probs.device(), "), got ",
              targets.device());
  b.targets = targets.to(at::kCPU, at::kLong).contiguous();
  b.target_offsets.resize(b.N);
  if (targets.dim() == 2) {
    TORCH_CHECK(targets.size(0) == b.N, "targets must have one row per sequence (N = ", b.N, "), got ",
                targets.size(0));
    b.S_max = targets.size(1);
    for (int64_t n = 0; n < b.N; ++n) {
      TORCH_CHECK(b.target_lengths[n] <= b.S_max, "target_lengths must be at most S = ", b.S_max, " (targets ",
                  shape_str(targets.sizes()), "), got ", b.target_lengths[n], " for sequence ", n);
      b.target_offsets[n] = n * b.S_max;
    }
  } else {
    TORCH_CHECK(targets.dim() == 1, "targets must be 2-D (N, S) or 1-D (sum(target_lengths),), got ", targets.dim(),
                "-D");
    int64_t offset = 0;
    b.S_max = 0;
    for (int64_t n = 0; n < b.N; ++n) {
      b.target_offsets[n] = offset;
      offset += b.target_lengths[n];
      b.S_max = std::max(b.S_max, b.target_lengths[n]);
    }
    TORCH_CHECK(offset == targets.size(0), "targets (1-D) must hold sum(target_lengths) = ", offset,
                " labels, got ", targets.size(0));
  }
  check_labels(b.targets, b.target_offsets, b.target_lengths, b.C, blank);
  return b;
}

// What the loss backward takes from the forward: grad_nll and nll [N], log_alpha [N, T, 2 S_max + 1], all of the
// dtype and device of log_probs.
inline void check_loss_saved(const Batch& b, const at::Tensor& log_probs, const at::Tensor& grad_nll,
                             const at::Tensor& nll, const at::Tensor& log_alpha) {
  check_like(grad_nll, "grad_nll", log_probs, "log_probs");
  check_like(nll, "nll", log_probs, "log_probs");
  check_like(log_alpha, "log_alpha", log_probs, "log_probs");
  check_shape(grad_nll, "grad_nll", {b.N});
  check_shape(nll, "nll", {b.N});
  check_shape(log_alpha, "log_alpha", {b.N, b.T, 2 * b.S_max + 1});
}

// A batch of forced alignment, read on the host: targets [N, S] int64 padded, on the CPU or on `device`.
struct AlignBatch {
  int64_t T, N, C, S_max;
  std::vector<int64_t> input_lengths, target_lengths;
};

inline AlignBatch read_align_batch(const at::Tensor& log_probs, const at::Tensor& targets,
                                   const at::Tensor& input_lengths, const at::Tensor& target_lengths, int64_t blank,
                                   c10::DeviceType device = c10::kCPU) {
  check_log_probs(log_probs, blank, device);
  AlignBatch b{log_probs.size(0), log_probs.size(1), log_probs.size(2), 0, {}, {}};
  check_dim(targets, "targets", 2, "(N, S)");
  TORCH_CHECK_TYPE(targets.scalar_type() == at::kLong, "targets must be int64, got ", targets.scalar_type());
  TORCH_CHECK(targets.size(0) == b.N, "targets must have one row per sequence (N = ", b.N, "), got ",
              targets.size(0));
  TORCH_CHECK(targets.device() == log_probs.device(), "targets must be on the device of log_probs (",
              log_probs.device(), "), got ", targets.device());
  b.S_max = targets.size(1);
  b.input_lengths = read_lengths(input_lengths, "input_lengths", b.N, b.T, std::to_string(b.T));
  b.target_lengths = read_lengths(target_lengths, "target_lengths", b.N, b.S_max, "S = " + std::to_string(b.S_max));
  std::vector<int64_t> offsets(b.N);
  for (int64_t n = 0; n < b.N; ++n) offsets[n] = n * b.S_max;
  check_labels(targets.to(at::kCPU).contiguous(), offsets, b.target_lengths, b.C, blank);
  return b;
}

// Raised after an alignment for the first sequence flagged in unalignable ([N] on the CPU).
inline void check_aligned(const AlignBatch& b, const uint8_t* unalignable) {
  for (int64_t n = 0; n < b.N; ++n) {
    TORCH_CHECK_VALUE(!unalignable[n], "forced_align: the target of sequence ", n, " (", b.target_lengths[n],
                      " labels) cannot be aligned to its ", b.input_lengths[n],
                      " frames (too short, or every alignment has probability 0)");
  }
}

}  // namespace pyseq
