// What the NTM kernels share besides the ops' signatures (ntm_ops.h): the step's parameter layout and checks, and the
// step as a composite of the NTM ops.
#pragma once

#include <ATen/ATen.h>

#include "ntm_ops.h"

namespace pyseq {

// The activations' softplus is torch.nn.functional.softplus's default: the identity above this threshold.
constexpr double kNtmSoftplusThreshold = 20.0;

struct NtmStepShape {
  int64_t B, N, M, R, W, S;
  int64_t heads() const { return R + W; }
  int64_t per_head() const { return M + 3 + S; }  // the parameters of a head's addressing
};
NtmStepShape check_ntm_step(const at::Tensor& memory, const at::Tensor& params, int64_t read_heads,
                            int64_t write_heads);

// The step as a composite of the NTM ops and ATen ops (ntm_step.cpp): what CUDA runs (make cuda-emulate runs it on
// the CPU), and what torch.func transforms differentiate.
NtmStepTensors ntm_step_composite(const at::Tensor& memory, const at::Tensor& params, const at::Tensor& prev_weights,
                                  int64_t read_heads, int64_t write_heads);
NtmStepTensors ntm_step_backward_composite(const at::Tensor& grad_weights, const at::Tensor& grad_reads,
                                           const at::Tensor& grad_memory, const at::Tensor& memory,
                                           const at::Tensor& params, const at::Tensor& prev_weights,
                                           const at::Tensor& weights, int64_t read_heads, int64_t write_heads);

}  // namespace pyseq
