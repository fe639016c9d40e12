// Argument checks shared by every op. Each message names the argument and what was expected, so that a user who
// passes the wrong thing reads which one and why, not an index into a kernel.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace pyseq {

inline std::string shape_str(at::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}

// `what` describes the dimensions, e.g. "(N, input_size)".
inline void check_dim(const at::Tensor& t, const char* name, int64_t dim, const char* what) {
  TORCH_CHECK_VALUE(t.dim() == dim, name, " must be ", dim, "-D ", what, ", got ", t.dim(), "-D");
}

inline void check_shape(const at::Tensor& t, const char* name, std::vector<int64_t> expected) {
  TORCH_CHECK(t.sizes() == at::IntArrayRef(expected), name, " must have shape ", shape_str(expected), ", got ",
              shape_str(t.sizes()));
}

inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name,
                   " must be float32 or float64 (bfloat16 and float16 are computed in float32), got ",
                   t.scalar_type());
}

// On the device type a kernel serves (the CPU kernels: the CPU; the CUDA glue: CUDA, or the CPU when emulated).
inline void check_device_type(const at::Tensor& t, const char* name, c10::DeviceType device) {
  TORCH_CHECK(t.device().type() == device, name, " must be on ", c10::DeviceTypeName(device, true), ", got ",
              t.device());
}

// Same dtype and device as the reference argument `ref` named `ref_name`.
inline void check_like(const at::Tensor& t, const char* name, const at::Tensor& ref, const char* ref_name) {
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), name, " must have the dtype of ", ref_name, " (",
                   ref.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), name, " must be on the device of ", ref_name, " (", ref.device(), "), got ",
              t.device());
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
