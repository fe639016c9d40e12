// The SCRN on the CPU: the context state's steps in turn, the batch rows split over the threads (each row's units
// vectorized), then the hidden layer through the Clockwork RNN's CPU time loop (one module of period 1). Each
// element's sums run in the same order whatever the thread count: deterministic.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "../clockwork/clockwork_cpu.h"
#include "../common/float32_compute.h"
#include "scrn_schedule.h"

namespace pyseq {
namespace {

// Batch rows per task: a row's steps are a few operations an element.
int64_t rows_per_task(int64_t steps, int64_t C) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, steps * C));
}

struct ScrnCpuKernels : ClockworkCpuKernels {
  template <typename T>
  void context(const ScrnContextArgs<T>& a, T* s_n) const {
    at::parallel_for(0, a.B, rows_per_task(a.steps, a.C), [&](int64_t b0, int64_t b1) {
      for (int64_t t = 0; t < a.steps; ++t) {
        for (int64_t b = b0; b < b1; ++b) {
          for (int64_t c = 0; c < a.C; ++c) scrn_context_step(a, t, b, c);
        }
      }
      for (int64_t b = b0; b < b1; ++b) {
        for (int64_t c = 0; c < a.C; ++c) s_n[b * a.C + c] = scrn_context_final(a, b, c);
      }
    });
  }

  template <typename T>
  void context_backward(const ScrnContextArgs<T>& a) const {
    at::parallel_for(0, a.B, rows_per_task(a.steps, a.C), [&](int64_t b0, int64_t b1) {
      for (int64_t t = a.steps - 1; t >= 0; --t) {
        for (int64_t b = b0; b < b1; ++b) {
          for (int64_t c = 0; c < a.C; ++c) scrn_context_backward_step(a, t, b, c);
        }
      }
    });
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> scrn_cpu(
    const at::Tensor& input_proj, const at::Tensor& context_proj, const at::Tensor& h0, const at::Tensor& s0,
    const at::Tensor& w_hh, const at::Tensor& w_ch, double alpha, const at::Tensor& lengths, bool sigmoid) {
  return scrn_on(ScrnCpuKernels{}, input_proj, context_proj, h0, s0, w_hh, w_ch, alpha, lengths, sigmoid);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> scrn_backward_cpu(
    const at::Tensor& grad_hidden, const at::Tensor& grad_context, const at::Tensor& grad_h_n,
    const at::Tensor& grad_s_n, const at::Tensor& hidden, const at::Tensor& context, const at::Tensor& h0,
    const at::Tensor& s0, const at::Tensor& w_hh, const at::Tensor& w_ch, double alpha, const at::Tensor& lengths,
    bool sigmoid) {
  return scrn_backward_on(ScrnCpuKernels{}, grad_hidden, grad_context, grad_h_n, grad_s_n, hidden, context, h0, s0,
                          w_hh, w_ch, alpha, lengths, sigmoid);
}

}  // namespace
}  // namespace pyseq

TORCH_LIBRARY_IMPL(pyseq, CPU, m) {
  m.impl("scrn", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::scrn_cpu));
  m.impl("scrn_backward", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::scrn_backward_cpu));
}
