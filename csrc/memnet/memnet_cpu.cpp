// Memory networks on the CPU: the element functions of memnet_elements.h in loops. The bags: sentences in parallel,
// the gradients by table row (each distinct word's row sums its positions in order) and by word position. The hops:
// one batch entry per thread, the hops in turn, every sum over sentences in a fixed order: deterministic.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <vector>

#include "../common/float32_compute.h"
#include "memnet_schedule.h"

namespace pyseq {
namespace {

// Items per task for work of `cost` operations an item.
int64_t grain_for(int64_t cost) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, cost)); }

struct CpuKernels {
  c10::DeviceType device() const { return c10::DeviceType::CPU; }

  template <typename T>
  void bag(const BagArgs<T>& a) const {
    at::parallel_for(0, a.rows, grain_for(a.W * a.D), [&](int64_t r0, int64_t r1) {
      for (int64_t row = r0; row < r1; ++row) {
        bag_columns(a, row, 0, a.D);
      }
    });
  }

  template <typename T>
  void bag_weight_gradients(const BagArgs<T>& a) const {
    at::parallel_for(0, a.W, grain_for(a.rows * a.D), [&](int64_t j0, int64_t j1) {
      for (int64_t j = j0; j < j1; ++j) bag_weight_gradient_columns(a, j, 0, a.D);
    });
  }

  template <typename T>
  void bag_table_gradient(const BagTableGradientArgs<T>& a) const {
    at::parallel_for(0, a.words, grain_for(a.D * 8), [&](int64_t u0, int64_t u1) {
      for (int64_t u = u0; u < u1; ++u) bag_table_gradient_columns(a, u, 0, a.D);
    });
  }

  template <typename T>
  void hops(const HopArgs<T>& a) const {
    at::parallel_for(0, a.B, grain_for(a.K * a.S * a.D * 2), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        for (int64_t k = 0; k < a.K; ++k) {
          T* p = a.weights + (k * a.B + b) * a.S;
          for (int64_t i = 0; i < a.S; ++i) p[i] = hop_score(a, k, b, i);
          if (a.softmax) {
            T top = -std::numeric_limits<T>::infinity();
            for (int64_t i = 0; i < a.S; ++i) top = std::max(top, p[i]);
            T z = 0;
            for (int64_t i = 0; i < a.S; ++i) {
              p[i] = hop_unnormalized(p[i], top);
              z += p[i];
            }
            // z == 0: the mask dropped every sentence (a NaN z stays NaN)
            for (int64_t i = 0; i < a.S; ++i) p[i] = z == 0 ? T(0) : p[i] / z;
          } else {
            for (int64_t i = 0; i < a.S; ++i) p[i] = hop_linear(p[i]);
          }
          hop_update_columns(a, k, b, 0, a.D);
        }
      }
    });
  }

  template <typename T>
  void hops_backward(const HopArgs<T>& a) const {
    at::parallel_for(0, a.B, grain_for(a.K * a.S * a.D * 4), [&](int64_t b0, int64_t b1) {
      std::vector<T> ds(a.S);
      for (int64_t b = b0; b < b1; ++b) {
        std::copy(a.grad_states + (a.K * a.B + b) * a.D, a.grad_states + (a.K * a.B + b + 1) * a.D,
                  a.d_states + ((a.K - 1) * a.B + b) * a.D);
        for (int64_t k = a.K - 1; k >= 0; --k) {
          const T* p = a.weights + (k * a.B + b) * a.S;
          T inner = 0;
          for (int64_t i = 0; i < a.S; ++i) {
            ds[i] = hop_weight_gradient(a, k, b, i);
            inner += p[i] * ds[i];
          }
          for (int64_t i = 0; i < a.S; ++i) {
            ds[i] = hop_score_gradient(a, b, i, p[i], ds[i], inner);
            for (int64_t c = 0; c < a.D; ++c) hop_memory_gradients(a, k, b, i, c, ds[i]);
          }
          hop_state_gradient_columns(a, k, b, ds.data(), hop_state_gradient_out(a, k, b), 0, a.D);
        }
      }
    });
  }
};

std::tuple<at::Tensor, at::Tensor> position_encoded_bag_backward_cpu(const at::Tensor& grad, const at::Tensor& table,
                                                                     const at::Tensor& indices,
                                                                     const at::Tensor& weights,
                                                                     const at::Tensor& lengths) {
  return position_encoded_bag_backward_on(CpuKernels{}, grad, table, indices, weights, lengths);
}

at::Tensor position_encoded_bag_cpu(const at::Tensor& table, const at::Tensor& indices, const at::Tensor& weights,
                                    const at::Tensor& lengths) {
  return position_encoded_bag_on(CpuKernels{}, table, indices, weights, lengths);
}

std::tuple<at::Tensor, at::Tensor> memory_hops_cpu(const at::Tensor& u, const at::Tensor& memory_in,
                                                   const at::Tensor& memory_out,
                                                   const std::optional<at::Tensor>& mask, int64_t hops,
                                                   const std::optional<at::Tensor>& H, bool softmax) {
  return memory_hops_on(CpuKernels{}, u, memory_in, memory_out, mask, hops, H, softmax);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> memory_hops_backward_cpu(
    const at::Tensor& grad_states, const std::optional<at::Tensor>& grad_weights, const at::Tensor& memory_in,
    const at::Tensor& memory_out, const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& H,
    const at::Tensor& states, const at::Tensor& weights, bool softmax) {
  return memory_hops_backward_on(CpuKernels{}, grad_states, grad_weights, memory_in, memory_out, mask, H, states,
                                 weights, softmax);
}

}  // namespace
}  // namespace pyseq

TORCH_LIBRARY_IMPL(pyseq, CPU, m) {
  m.impl("position_encoded_bag", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::position_encoded_bag_cpu));
  m.impl("position_encoded_bag_backward", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::position_encoded_bag_backward_cpu));
  m.impl("memory_hops", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::memory_hops_cpu));
  m.impl("memory_hops_backward", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::memory_hops_backward_cpu));
}
