// The CRF on CUDA: the glue between the ops and the kernels of crf_cuda.cu (device-generic ATen only, so that it
// builds against a CPU torch too; see CMakeLists.txt). Lengths (or the mask) and tags are read and checked on the
// host; the NaN flags of the sequences and the exponentiated transition tables are computed on the device with ATen,
// the per-sequence sums of the backward added over the batch with ATen's (deterministic) sum. k-best Viterbi
// (nbest > 1) runs on the CPU. (In the emulation build the same glue runs on CPU tensors, the kernels through the
// CUDA emulator: cuda_glue.h.)
#include "crf_cuda.h"

#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "../common/cuda_glue.h"
#include "../common/float32_compute.h"
#include "crf_args.h"
#include "crf_chain.h"
#include "crf_ops.h"

namespace pyseq {
namespace {

// What the recursions read besides the emissions, on the emissions' device.
struct ChainTensors {
  at::Tensor lengths, nan, start, end, trans, col_exp, col_shift, row_exp, row_shift, all_exp, all_shift;
};

at::Tensor finite_shifts(const at::Tensor& maxima) {  // finite_shift (crf_math.h) of each entry
  return at::where(maxima.isneginf(), at::zeros_like(maxima), maxima);
}

ChainTensors chain_tensors(const CrfArgs& a, const at::Tensor& start, const at::Tensor& end,
                           const at::Tensor& transitions) {
  ChainTensors c;
  c.lengths = at::tensor(a.lengths, at::kLong).to(a.emissions.device());
  // A sequence reads a NaN score: one of its emissions within its length, or any transition score (when it has steps).
  const at::Tensor valid = at::arange(a.T, c.lengths.options()).lt(c.lengths.unsqueeze(1));
  const at::Tensor in_emissions = a.emissions.isnan().any(2).logical_and(valid).any(1);
  const at::Tensor in_scores =
      start.isnan().any().logical_or(end.isnan().any()).logical_or(transitions.isnan().any());
  c.nan = in_emissions.logical_or(in_scores.logical_and(c.lengths.gt(0))).to(at::kByte);
  c.start = start.contiguous();
  c.end = end.contiguous();
  c.trans = transitions.contiguous();
  c.col_shift = finite_shifts(c.trans.amax(0));
  c.row_shift = finite_shifts(c.trans.amax(1));
  c.all_shift = finite_shifts(c.trans.amax().reshape({1}));
  c.col_exp = (c.trans - c.col_shift.unsqueeze(0)).exp();
  c.row_exp = (c.trans - c.row_shift.unsqueeze(1)).exp();
  c.all_exp = (c.trans - c.all_shift).exp();
  return c;
}

template <typename T>
CrfChainArgs<T> chain_args(const CrfArgs& a, const ChainTensors& c, const at::Tensor& alpha,
                           const at::Tensor& shift) {
  CrfChainArgs<T> x{};
  x.B = a.B;
  x.T_max = a.T;
  x.K = a.K;
  x.Kp = padded_tags<T>(a.K);
  x.em = a.emissions.data_ptr<T>();
  x.stride_b = a.stride_b;
  x.stride_t = a.stride_t;
  x.lengths = c.lengths.data_ptr<int64_t>();
  x.nan = c.nan.data_ptr<uint8_t>();
  x.start = c.start.data_ptr<T>();
  x.end = c.end.data_ptr<T>();
  x.trans = c.trans.data_ptr<T>();
  x.col_exp = c.col_exp.data_ptr<T>();
  x.col_shift = c.col_shift.data_ptr<T>();
  x.row_exp = c.row_exp.data_ptr<T>();
  x.row_shift = c.row_shift.data_ptr<T>();
  x.all_exp = c.all_exp.data_ptr<T>();
  x.all_shift = c.all_shift.data_ptr<T>();
  x.alpha = alpha.defined() ? alpha.data_ptr<T>() : nullptr;
  x.shift = shift.defined() ? shift.data_ptr<double>() : nullptr;
  return x;
}

// The backward's outputs: node [B, T, K] (every element written by the kernels), the per-sequence sums (zero).
struct BackwardTensors {
  at::Tensor node, pair, start_sum, end_sum;
  BackwardTensors(const CrfArgs& a, const at::TensorOptions& opts)
      : node(at::empty({a.B, a.T, a.K}, opts)),
        pair(at::zeros({a.B, a.K, a.K}, opts)),
        start_sum(at::zeros({a.B, a.K}, opts)),
        end_sum(at::zeros({a.B, a.K}, opts)) {}
  template <typename T>
  void into(CrfChainArgs<T>& x) const {
    x.node = node.data_ptr<T>();
    x.pair = pair.data_ptr<T>();
    x.start_sum = start_sum.data_ptr<T>();
    x.end_sum = end_sum.data_ptr<T>();
  }
  // The gradients (emissions, start, end, transitions): the sums added over the batch.
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gradients() const {
    return {node, start_sum.sum(0), end_sum.sum(0), pair.sum(0)};
  }
};

// The kernels on the current stream of the emissions' device.
struct CudaKernels {
  void* stream;
  void check_tag_count(int64_t K) const {
    TORCH_CHECK_VALUE(K <= kCrfCudaMaxTags, "the CUDA CRF kernels take at most ", kCrfCudaMaxTags,
                      " tags, got num_tags = ", K);
  }
  template <typename T>
  void forward(const CrfChainArgs<T>& a, T* out) const {
    launch_crf_forward(a, out, stream);
    check_kernel_launch("CRF forward");
  }
  template <typename T>
  void backward(const CrfChainArgs<T>& a) const {
    launch_crf_backward(a, stream);
    check_kernel_launch("CRF backward");
  }
  template <typename T>
  void path_scores(const CrfChainArgs<T>& a, T* out) const {
    launch_crf_path_scores(a, out, stream);
    check_kernel_launch("CRF path score");
  }
  template <typename T>
  void path_gradients(const CrfChainArgs<T>& a) const {
    launch_crf_path_gradients(a, stream);
    check_kernel_launch("CRF path gradient");
  }
  template <typename T>
  void viterbi(const CrfViterbiArgs<T>& a) const {
    launch_crf_viterbi(a, stream);
    check_kernel_launch("CRF Viterbi");
  }
};

CudaKernels kernels_on(const at::Tensor& emissions) { return {cuda_stream_of(emissions, "emissions")}; }

using Forward = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Gradients = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// The forward recursion of checked arguments: (log Z, or the log-likelihood of the tags y when defined; log_alpha;
// alpha_shift).
Forward forward_with(const CudaKernels& r, const CrfArgs& a, const ChainTensors& c, const at::Tensor& y) {
  const auto opts = a.emissions.options();
  at::Tensor out = at::empty({a.B}, opts);
  at::Tensor alpha = at::empty({a.T, a.B, padded_tags_of(a.emissions, a.K)}, opts);
  at::Tensor shift = at::empty({a.T, a.B}, opts.dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(a.emissions.scalar_type(), "crf_forward", [&] {
    CrfChainArgs<scalar_t> x = chain_args<scalar_t>(a, c, alpha, shift);
    x.tags = y.defined() ? y.data_ptr<int64_t>() : nullptr;
    r.forward(x, out.data_ptr<scalar_t>());
  });
  return {out, alpha, shift};
}

Forward forward_on(const at::Tensor& emissions, const at::Tensor* tags, const at::Tensor& lengths,
                   const at::Tensor& start, const at::Tensor& end, const at::Tensor& transitions) {
  const c10::DeviceGuard guard(emissions.device());
  const CudaKernels r = kernels_on(emissions);
  const CrfArgs a = check_crf_scores(emissions, lengths, start, end, transitions, emissions.device().type());
  r.check_tag_count(a.K);
  const at::Tensor y = tags ? check_tags(*tags, a) : at::Tensor();
  return forward_with(r, a, chain_tensors(a, start, end, transitions), y);
}

// The gradients of log Z (tags == nullptr: g = grad) or of the log-likelihood (g = -grad where the llh is finite,
// plus the path's term).
Gradients backward_on(const at::Tensor& grad, const at::Tensor& emissions, const at::Tensor* tags,
                      const at::Tensor& lengths, const at::Tensor& start, const at::Tensor& end,
                      const at::Tensor& transitions, const at::Tensor* llh, const at::Tensor& log_alpha,
                      const at::Tensor& alpha_shift) {
  const c10::DeviceGuard guard(emissions.device());
  const CudaKernels r = kernels_on(emissions);
  const CrfArgs a = check_crf_scores(emissions, lengths, start, end, transitions, emissions.device().type());
  r.check_tag_count(a.K);
  check_saved(a, emissions, grad, tags ? "grad_llh" : "grad_log_z", log_alpha, alpha_shift);
  const at::Tensor y = tags ? check_tags(*tags, a) : at::Tensor();
  if (llh) check_shape(*llh, "llh", {a.B});
  const ChainTensors c = chain_tensors(a, start, end, transitions);
  const at::Tensor alpha = log_alpha.contiguous(), shift = alpha_shift.contiguous();
  // d llh = d score - d log Z; a sequence whose log-likelihood is -inf (forbidden path) gets no gradient.
  const at::Tensor g_path = llh ? at::where(llh->isneginf(), at::zeros_like(grad), grad) : at::Tensor();
  const at::Tensor g = llh ? g_path.neg() : grad.contiguous();
  const BackwardTensors out(a, emissions.options());
  AT_DISPATCH_FLOATING_TYPES(emissions.scalar_type(), "crf_backward", [&] {
    CrfChainArgs<scalar_t> x = chain_args<scalar_t>(a, c, alpha, shift);
    x.g = g.data_ptr<scalar_t>();
    out.into(x);
    if (tags) {
      x.tags = y.data_ptr<int64_t>();
      x.g_path = g_path.data_ptr<scalar_t>();
    }
    r.backward(x);
  });
  return out.gradients();
}

Forward crf_log_partition_cuda(const at::Tensor& emissions, const at::Tensor& lengths, const at::Tensor& start,
                               const at::Tensor& end, const at::Tensor& transitions) {
  return forward_on(emissions, nullptr, lengths, start, end, transitions);
}

Forward crf_log_likelihood_cuda(const at::Tensor& emissions, const at::Tensor& tags, const at::Tensor& lengths,
                                const at::Tensor& start, const at::Tensor& end, const at::Tensor& transitions) {
  return forward_on(emissions, &tags, lengths, start, end, transitions);
}

Gradients crf_log_partition_backward_cuda(const at::Tensor& grad_log_z, const at::Tensor& emissions,
                                          const at::Tensor& lengths, const at::Tensor& start, const at::Tensor& end,
                                          const at::Tensor& transitions, const at::Tensor& log_alpha,
                                          const at::Tensor& alpha_shift) {
  return backward_on(grad_log_z, emissions, nullptr, lengths, start, end, transitions, nullptr, log_alpha, alpha_shift);
}

Gradients crf_log_likelihood_backward_cuda(const at::Tensor& grad_llh, const at::Tensor& emissions,
                                           const at::Tensor& tags, const at::Tensor& lengths, const at::Tensor& start,
                                           const at::Tensor& end, const at::Tensor& transitions, const at::Tensor& llh,
                                           const at::Tensor& log_alpha, const at::Tensor& alpha_shift) {
  return backward_on(grad_llh, emissions, &tags, lengths, start, end, transitions, &llh, log_alpha, alpha_shift);
}

at::Tensor crf_marginals_cuda(const at::Tensor& emissions, const at::Tensor& lengths, const at::Tensor& start,
                              const at::Tensor& end, const at::Tensor& transitions) {
  const c10::DeviceGuard guard(emissions.device());
  const CudaKernels r = kernels_on(emissions);
  const CrfArgs a = check_crf_scores(emissions, lengths, start, end, transitions, emissions.device().type());
  r.check_tag_count(a.K);
  const ChainTensors c = chain_tensors(a, start, end, transitions);
  const auto [log_z, log_alpha, alpha_shift] = forward_with(r, a, c, at::Tensor());
  const at::Tensor ones = at::ones({a.B}, emissions.options());
  at::Tensor node = at::empty({a.B, a.T, a.K}, emissions.options());
  AT_DISPATCH_FLOATING_TYPES(emissions.scalar_type(), "crf_marginals", [&] {
    CrfChainArgs<scalar_t> x = chain_args<scalar_t>(a, c, log_alpha, alpha_shift);
    x.g = ones.data_ptr<scalar_t>();
    x.node = node.data_ptr<scalar_t>();
    r.backward(x);
  });
  return node;
}

at::Tensor crf_path_score_cuda(const at::Tensor& emissions, const at::Tensor& tags, const at::Tensor& lengths,
                               const at::Tensor& start, const at::Tensor& end, const at::Tensor& transitions) {
  const c10::DeviceGuard guard(emissions.device());
  const CudaKernels r = kernels_on(emissions);
  const CrfArgs a = check_crf_scores(emissions, lengths, start, end, transitions, emissions.device().type());
  const at::Tensor y = check_tags(tags, a);
  const ChainTensors c = chain_tensors(a, start, end, transitions);
  at::Tensor out = at::empty({a.B}, emissions.options());
  AT_DISPATCH_FLOATING_TYPES(emissions.scalar_type(), "crf_path_score", [&] {
    CrfChainArgs<scalar_t> x = chain_args<scalar_t>(a, c, at::Tensor(), at::Tensor());
    x.tags = y.data_ptr<int64_t>();
    r.path_scores(x, out.data_ptr<scalar_t>());
  });
  return out;
}

Gradients crf_path_score_backward_cuda(const at::Tensor& grad_score, const at::Tensor& emissions,
                                       const at::Tensor& tags, const at::Tensor& lengths) {
  const c10::DeviceGuard guard(emissions.device());
  const CudaKernels r = kernels_on(emissions);
  const CrfArgs a = check_crf_emissions(emissions, lengths, emissions.device().type());
  check_shape(grad_score, "grad_score", {a.B});
  check_like(grad_score, "grad_score", emissions, "emissions");
  const at::Tensor y = check_tags(tags, a), g = grad_score.contiguous();
  const at::Tensor lengths_on_device = at::tensor(a.lengths, at::kLong).to(emissions.device());
  BackwardTensors out(a, emissions.options());
  out.node.zero_();
  AT_DISPATCH_FLOATING_TYPES(emissions.scalar_type(), "crf_path_score_backward", [&] {
    CrfChainArgs<scalar_t> x{};
    x.B = a.B;
    x.T_max = a.T;
    x.K = a.K;
    x.lengths = lengths_on_device.data_ptr<int64_t>();
    x.tags = y.data_ptr<int64_t>();
    x.g_path = g.data_ptr<scalar_t>();
    out.into(x);
    r.path_gradients(x);
  });
  return out.gradients();
}

std::tuple<at::Tensor, at::Tensor> crf_viterbi_cuda(const at::Tensor& emissions, const at::Tensor& lengths,
                                                    const at::Tensor& start, const at::Tensor& end,
                                                    const at::Tensor& transitions, int64_t nbest) {
  const c10::DeviceGuard guard(emissions.device());
  const CudaKernels r = kernels_on(emissions);
  const CrfArgs a = check_crf_scores(emissions, lengths, start, end, transitions, emissions.device().type());
  TORCH_CHECK_VALUE(nbest >= 1, "nbest must be at least 1, got ", nbest);
  if (nbest > 1) {  // k-best runs on the CPU
    const at::Device device = emissions.device();
    const auto [paths, scores] = crf_viterbi(emissions.cpu(), at::tensor(a.lengths, at::kLong), start.cpu(), end.cpu(),
                                             transitions.cpu(), nbest);
    return {paths.to(device), scores.to(device)};
  }
  r.check_tag_count(a.K);
  const ChainTensors c = chain_tensors(a, start, end, transitions);
  const auto opts = emissions.options();
  at::Tensor paths = at::full({a.B, 1, a.T}, -1, opts.dtype(at::kLong)), scores = at::empty({a.B, 1}, opts);
  at::Tensor delta = at::empty({a.B, 2, a.K}, opts), back = at::empty({a.B, a.T, a.K}, opts.dtype(at::kInt));
  AT_DISPATCH_FLOATING_TYPES(emissions.scalar_type(), "crf_viterbi", [&] {
    using T = scalar_t;
    const CrfViterbiArgs<T> x{a.B, a.T, a.K, a.emissions.data_ptr<T>(), a.stride_b, a.stride_t,
                              c.lengths.data_ptr<int64_t>(), c.nan.data_ptr<uint8_t>(), c.start.data_ptr<T>(),
                              c.end.data_ptr<T>(), c.trans.data_ptr<T>(), delta.data_ptr<T>(),
                              back.data_ptr<int32_t>(), paths.data_ptr<int64_t>(), scores.data_ptr<T>()};
    r.viterbi(x);
  });
  return {paths, scores};
}

}  // namespace
}  // namespace pyseq

PYSEQ_CUDA_LIBRARY_IMPL(m) {
  m.impl("crf_log_likelihood", PYSEQ_FLOAT32_RESULTS(pyseq::crf_log_likelihood_cuda));
  m.impl("crf_log_likelihood_backward", PYSEQ_FLOAT32_RESULTS(pyseq::crf_log_likelihood_backward_cuda));
  m.impl("crf_log_partition", PYSEQ_FLOAT32_RESULTS(pyseq::crf_log_partition_cuda));
  m.impl("crf_log_partition_backward", PYSEQ_FLOAT32_RESULTS(pyseq::crf_log_partition_backward_cuda));
  m.impl("crf_path_score", PYSEQ_FLOAT32_RESULTS(pyseq::crf_path_score_cuda));
  m.impl("crf_path_score_backward", PYSEQ_FLOAT32_RESULTS(pyseq::crf_path_score_backward_cuda));
  m.impl("crf_marginals", PYSEQ_FLOAT32_RESULTS(pyseq::crf_marginals_cuda));
  m.impl("crf_viterbi", PYSEQ_FLOAT32_RESULTS(pyseq::crf_viterbi_cuda));
}
