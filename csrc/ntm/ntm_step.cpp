// One step of an NTM's heads as one op (pyseq::ntm_step): the activations of the heads' parameters (as the
// controller's linear layer emits them), the addressing of every head, the reads, and the writes in turn, with one
// autograd node and one backward op instead of the two dozen small ops and autograd nodes per step of the same thing
// written in Python (at NTM sizes the per-op overhead is most of a step's time). Here: the argument checks and the
// composite of pyseq's NTM ops and ATen ops that is the CUDA kernel (ntm_cuda.cpp registers it) and what torch.func
// differentiates; the CPU kernel is one fused pass per batch entry (ntm_step_cpu.cpp).
#include <tuple>
#include <vector>

#include "../common/checks.h"
#include "ntm.h"

namespace pyseq {
namespace {

constexpr double kSoftplusBeta = 1.0;

// The heads' parameters, split and activated (see ntm.h for the layout): per head the key, the key strength
// (softplus), the gate (sigmoid), the sharpening (1 + softplus) and the shift (softmax over S); per write head the
// erase (sigmoid) and add (tanh) vectors.
struct HeadParams : NtmStepShape {
  at::Tensor key, beta_raw, gamma_raw;  // [B, heads, M], [B, heads] (before softplus)
  at::Tensor beta, gate, gamma, shift;  // [B, heads], [B, heads], [B, heads], [B, heads, S]
  at::Tensor erase, add;                // [B, W, M] each

  HeadParams(const at::Tensor& memory, const at::Tensor& params, int64_t read_heads, int64_t write_heads)
      : NtmStepShape(check_ntm_step(memory, params, read_heads, write_heads)) {
    const int64_t address = heads() * per_head();
    const at::Tensor p = params.narrow(1, 0, address).reshape({B, heads(), per_head()});
    key = p.narrow(2, 0, M);
    beta_raw = p.select(2, M);
    gate = p.select(2, M + 1).sigmoid();
    gamma_raw = p.select(2, M + 2);
    shift = p.narrow(2, M + 3, S).softmax(2);
    beta = at::softplus(beta_raw, kSoftplusBeta, kNtmSoftplusThreshold);
    gamma = at::softplus(gamma_raw, kSoftplusBeta, kNtmSoftplusThreshold) + 1;
    const at::Tensor ea = params.narrow(1, address, W * 2 * M).reshape({B, W, 2, M});
    erase = ea.select(2, 0).sigmoid();
    add = ea.select(2, 1).tanh();
  }
};

}  // namespace

NtmStepShape check_ntm_step(const at::Tensor& memory, const at::Tensor& params, int64_t read_heads,
                            int64_t write_heads) {
  check_dim(memory, "memory", 3, "(batch, memory_size, memory_width)");
  check_dim(params, "params", 2, "(batch, parameters)");
  TORCH_CHECK_VALUE(read_heads >= 0 && write_heads >= 0 && read_heads + write_heads >= 1,
                    "need read_heads >= 0, write_heads >= 0 and at least one head, got ", read_heads, " and ",
                    write_heads);
  NtmStepShape s{memory.size(0), memory.size(1), memory.size(2), read_heads, write_heads, 0};
  const int64_t heads = s.heads(), address = params.size(1) - s.W * 2 * s.M;
  TORCH_CHECK_VALUE(params.size(0) == s.B, "params must have one row per batch entry (", s.B, "), got ",
                    params.size(0));
  TORCH_CHECK_VALUE(address > heads * (s.M + 3) && address % heads == 0,
                    "params must have heads * (M + 3 + S) + write_heads * 2 * M columns (heads = ", heads, ", M = ",
                    s.M, ", S >= 1 shifts), got ", params.size(1));
  check_like(params, "params", memory, "memory");
  s.S = address / heads - s.M - 3;
  return s;
}

NtmStepTensors ntm_step_composite(const at::Tensor& memory, const at::Tensor& params, const at::Tensor& prev_weights,
                                  int64_t read_heads, int64_t write_heads) {
  const HeadParams h(memory, params, read_heads, write_heads);
  const at::Tensor weights =
      ntm_address(memory, h.key, h.beta, h.gate, h.shift, h.gamma, prev_weights);  // checks prev_weights
  const at::Tensor reads = at::bmm(weights.narrow(1, 0, h.R), memory).contiguous();
  at::Tensor written = memory.contiguous();
  if (h.W == 0) written = written.clone();  // an output never aliases an input
  for (int64_t w = 0; w < h.W; ++w) {
    written = ntm_write(written, weights.select(1, h.R + w), h.erase.select(1, w), h.add.select(1, w));
  }
  return {weights, reads, written};
}

NtmStepTensors ntm_step_backward_composite(const at::Tensor& grad_weights, const at::Tensor& grad_reads,
                                           const at::Tensor& grad_memory, const at::Tensor& memory,
                                           const at::Tensor& params, const at::Tensor& prev_weights,
                                           const at::Tensor& weights, int64_t read_heads, int64_t write_heads) {
  const HeadParams h(memory, params, read_heads, write_heads);
  check_shape(weights, "weights", {h.B, h.R + h.W, h.N});
  check_shape(grad_weights, "grad_weights", {h.B, h.R + h.W, h.N});
  check_shape(grad_reads, "grad_reads", {h.B, h.R, h.M});
  check_shape(grad_memory, "grad_memory", {h.B, h.N, h.M});
  // The writes, last first, from the memories they were given (recomputed).
  std::vector<at::Tensor> given{memory};
  for (int64_t w = 0; w + 1 < h.W; ++w) {
    given.push_back(ntm_write(given.back(), weights.select(1, h.R + w), h.erase.select(1, w), h.add.select(1, w)));
  }
  at::Tensor d_weights = grad_weights.clone(at::MemoryFormat::Contiguous), d_memory = grad_memory;
  std::vector<at::Tensor> d_erase(h.W), d_add(h.W);
  for (int64_t w = h.W - 1; w >= 0; --w) {
    auto [dm, dw, de, da] =
        ntm_write_backward(d_memory, given[w], weights.select(1, h.R + w), h.erase.select(1, w), h.add.select(1, w));
    d_memory = dm;
    d_weights.select(1, h.R + w).add_(dw);
    d_erase[w] = de;
    d_add[w] = da;
  }
  // reads = weights[:, :R] @ memory
  d_weights.narrow(1, 0, h.R).add_(at::bmm(grad_reads, memory.transpose(1, 2)));
  d_memory = d_memory + at::bmm(weights.narrow(1, 0, h.R).transpose(1, 2), grad_reads);
  auto [dm, d_key, d_beta, d_gate, d_shift, d_gamma, d_prev] =
      ntm_address_backward(d_weights, memory, h.key, h.beta, h.gate, h.shift, h.gamma, prev_weights);
  d_memory = d_memory + dm;
  const at::Tensor d_address = at::cat(
      {d_key, at::softplus_backward(d_beta, h.beta_raw, kSoftplusBeta, kNtmSoftplusThreshold).unsqueeze(2),
       at::sigmoid_backward(d_gate, h.gate).unsqueeze(2),
       at::softplus_backward(d_gamma, h.gamma_raw, kSoftplusBeta, kNtmSoftplusThreshold).unsqueeze(2),
       at::_softmax_backward_data(d_shift, h.shift, 2, h.shift.scalar_type())},
      2);
  std::vector<at::Tensor> d_params{d_address.reshape({h.B, -1})};
  if (h.W > 0) {
    const at::Tensor d_ea = at::stack({at::sigmoid_backward(at::stack(d_erase, 1), h.erase),
                                       at::tanh_backward(at::stack(d_add, 1), h.add)},
                                      2);
    d_params.push_back(d_ea.reshape({h.B, -1}));
  }
  return {d_memory.contiguous(), at::cat(d_params, 1), d_prev};
}

}  // namespace pyseq
