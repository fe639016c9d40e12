// nvcc compile check of the per-element math headers whose CUDA kernels are not written yet (CTC, CRF, attention):
// each function is called from device code, float and double, so that nvcc compiles them as the kernels will.
// Compiled into an object file only, never linked (CMakeLists.txt: PYSEQ_CUDA_HEADER_CHECKS). The recurrent cells'
// math (cells.h, cell_rows.h, common/math.h) is compiled by the kernels of csrc/rnn/rnn_cuda.cu.
#include <cuda_runtime.h>

#include "../attention/attention_math.h"
#include "../crf/crf_math.h"
#include "../ctc/ctc_math.h"

namespace pyseq {

template <typename T>
__global__ void math_headers_kernel(const T* x, const int64_t* labels, T* out) {
  const int i = threadIdx.x;
  const T a = x[i], b = x[i + 1], c = x[i + 2];
  T r = log_sum_exp3(a, b, c) + log_add_exp(a, b) + exp_or_zero(a) + sigmoid(a) + tanh(b) + relu(c);
  r += static_cast<T>(extended_label(labels, i, int64_t(0)) + can_skip(labels, i));
  r += log_sum_exp_plus(x, x + 4, 1, 3) + max_of(x, 3) + finite_shift(a) + log_positive(c * c + T(1));
  r += static_cast<T>(padded_tags<T>(i)) + CrfLimits<T>::tiny;
  r += additive_term(a, b) + additive_slope(a, b) + additive_reciprocal(a, b) + tanh_rational(c);
  out[i] = r + static_cast<T>(any_nan(x, 3));
}

template __global__ void math_headers_kernel<float>(const float*, const int64_t*, float*);
template __global__ void math_headers_kernel<double>(const double*, const int64_t*, double*);

}  // namespace pyseq
