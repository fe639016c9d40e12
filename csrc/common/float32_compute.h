// 16-bit tensors given to the ops whose CPU kernels compute in float32 and float64 only (CTC, CRF, attention).
//
// ComputeInFloat32<results, kernel>::call is registered as the CPU kernel in place of `kernel`: bfloat16 and float16
// tensor arguments are converted to float32, and the kernel runs on those. Its float32 results then either stay
// float32 (Results::Float32: the losses and scores of CTC and CRF, as torch computes its CTC loss in float32 under
// autocast; their gradients reach 16-bit inputs in the inputs' dtype, as autograd casts a gradient to its input's
// dtype) or go back to the dtype of the first 16-bit argument (Results::InputDtype: attention, whose context feeds the
// next 16-bit layer of the model). float32 and float64 arguments pass through untouched.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace pyseq {

inline bool is_16_bit_float(const at::Tensor& t) {
  return t.defined() && (t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf);
}

inline at::Tensor in_float32(const at::Tensor& t) { return is_16_bit_float(t) ? t.to(at::kFloat) : t; }
inline std::optional<at::Tensor> in_float32(const std::optional<at::Tensor>& t) {
  return t ? std::optional<at::Tensor>(in_float32(*t)) : t;
}
template <typename T>
T in_float32(T value) {  // the arguments that are not tensors
  return value;
}

// The dtype of the first 16-bit tensor among the arguments; nullopt when there is none.
inline std::optional<at::ScalarType> first_16_bit_dtype() { return std::nullopt; }
template <typename First, typename... Rest>
std::optional<at::ScalarType> first_16_bit_dtype(const First& first, const Rest&... rest) {
  if constexpr (std::is_same_v<First, at::Tensor>) {
    if (is_16_bit_float(first)) return first.scalar_type();
  } else if constexpr (std::is_same_v<First, std::optional<at::Tensor>>) {
    if (first && is_16_bit_float(*first)) return first->scalar_type();
  }
  return first_16_bit_dtype(rest...);
}

inline void float32_results_to(at::Tensor& t, at::ScalarType dtype) {
  if (t.defined() && t.scalar_type() == at::kFloat) t = t.to(dtype);
}
template <typename... T>
void float32_results_to(std::tuple<T...>& results, at::ScalarType dtype) {
  std::apply([&](auto&... t) { (float32_results_to(t, dtype), ...); }, results);
}

enum class Results { Float32, InputDtype };

template <Results kResults, typename Kernel, Kernel kernel>
struct ComputeInFloat32;

template <Results kResults, typename Result, typename... Args, Result (*kernel)(Args...)>
struct ComputeInFloat32<kResults, Result (*)(Args...), kernel> {
  static Result call(Args... args) {
    Result results = kernel(in_float32(args)...);
    if constexpr (kResults == Results::InputDtype) {
      if (const std::optional<at::ScalarType> dtype = first_16_bit_dtype(args...)) {
        float32_results_to(results, *dtype);
      }
    }
    return results;
  }
};

}  // namespace pyseq

// The CPU kernel to register for `kernel` (a function): it accepts 16-bit tensors as described above.
#define PYSEQ_FLOAT32_RESULTS(kernel) \
  (&::pyseq::ComputeInFloat32<::pyseq::Results::Float32, decltype(&kernel), &kernel>::call)
#define PYSEQ_INPUT_DTYPE_RESULTS(kernel) \
  (&::pyseq::ComputeInFloat32<::pyseq::Results::InputDtype, decltype(&kernel), &kernel>::call)
