// CTC on CUDA: the glue between the ops and the kernels of ctc_cuda.cu (device-generic ATen only, so that it builds
// against a CPU torch too; see CMakeLists.txt). Lengths and targets are read and checked on the host (ctc_args.h);
// the per-sequence metadata goes to the device in one copy per tensor, and the kernels run on the current stream.
// (In the emulation build the same glue runs on CPU tensors, the kernels through the CUDA emulator: cuda_glue.h.)
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "ctc.h"
#include "ctc_args.h"
#include "ctc_lattice.h"

#include <c10/core/DeviceGuard.h>

#include "../common/cuda_glue.h"
#include "../common/float32_compute.h"
#include "ctc_cuda.h"

namespace pyseq {
namespace {

// A loss batch on the device of log_probs: the host-read batch, its per-sequence metadata [3, N] int64 (input
// lengths, target lengths, target offsets), the targets, and each target position's label chain (ctc_lattice.h).
struct LossBatch {
  Batch b;
  at::Tensor meta, targets, next_same, first_of_label;
};

LossBatch loss_batch(const at::Tensor& log_probs, const at::Tensor& targets, const at::Tensor& input_lengths,
                     const at::Tensor& target_lengths, int64_t blank) {
  LossBatch d{read_batch(log_probs, targets, input_lengths, target_lengths, blank, log_probs.device().type()), {}, {},
              {}, {}};
  const Batch& b = d.b;
  at::Tensor meta = at::empty({3, b.N}, at::kLong);
  std::copy(b.input_lengths.begin(), b.input_lengths.end(), meta.data_ptr<int64_t>());
  std::copy(b.target_lengths.begin(), b.target_lengths.end(), meta.data_ptr<int64_t>() + b.N);
  std::copy(b.target_offsets.begin(), b.target_offsets.end(), meta.data_ptr<int64_t>() + 2 * b.N);
  const int64_t positions = b.targets.numel();
  at::Tensor next_same = at::full({positions}, -1, at::kInt), first = at::zeros({positions}, at::kByte);
  const int64_t* tg = b.targets.data_ptr<int64_t>();
  int32_t* next_p = next_same.data_ptr<int32_t>();
  uint8_t* first_p = first.data_ptr<uint8_t>();
  std::vector<int64_t> last(b.C, -1), seen_in(b.C, -1);  // per label: its last position seen, and in which sequence
  for (int64_t n = 0; n < b.N; ++n) {
    const int64_t offset = b.target_offsets[n];
    for (int64_t i = b.target_lengths[n] - 1; i >= 0; --i) {
      const int64_t label = tg[offset + i];
      next_p[offset + i] = seen_in[label] == n ? static_cast<int32_t>(last[label]) : -1;
      last[label] = i;
      seen_in[label] = n;
    }
    for (int64_t i = 0; i < b.target_lengths[n]; ++i) first_p[offset + i] = last[tg[offset + i]] == i;
  }
  const at::Device device = log_probs.device();
  d.meta = meta.to(device);
  d.targets = b.targets.to(device);
  d.next_same = next_same.to(device);
  d.first_of_label = first.to(device);
  return d;
}

template <typename T>
CtcLossArgs<T> loss_args(const LossBatch& d, int64_t blank, const at::Tensor& lp, const at::Tensor& alpha,
                         const at::Tensor& nll) {
  const Batch& b = d.b;
  const int64_t* meta = d.meta.data_ptr<int64_t>();
  return {b.T,
          b.N,
          b.C,
          2 * b.S_max + 1,
          blank,
          lp.data_ptr<T>(),
          d.targets.data_ptr<int64_t>(),
          meta,
          meta + b.N,
          meta + 2 * b.N,
          d.next_same.data_ptr<int32_t>(),
          d.first_of_label.data_ptr<uint8_t>(),
          alpha.data_ptr<T>(),
          nll.data_ptr<T>(),
          nullptr,
          nullptr,
          nullptr,
          nullptr};
}

std::tuple<at::Tensor, at::Tensor> loss_cuda(const at::Tensor& log_probs, const at::Tensor& targets,
                                             const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                             int64_t blank) {
  const c10::DeviceGuard guard(log_probs.device());
  void* stream = cuda_stream_of(log_probs, "log_probs");
  const LossBatch d = loss_batch(log_probs, targets, input_lengths, target_lengths, blank);
  const at::Tensor lp = log_probs.contiguous();
  at::Tensor nll = at::empty({d.b.N}, lp.options());
  at::Tensor alpha = at::empty({d.b.N, d.b.T, 2 * d.b.S_max + 1}, lp.options());
  AT_DISPATCH_FLOATING_TYPES(lp.scalar_type(), "ctc_loss", [&] {
    launch_ctc_alpha(loss_args<scalar_t>(d, blank, lp, alpha, nll), stream);
  });
  check_kernel_launch("CTC forward");
  return {nll, alpha};
}

at::Tensor loss_backward_cuda(const at::Tensor& grad_nll, const at::Tensor& log_probs, const at::Tensor& targets,
                              const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                              const at::Tensor& nll, const at::Tensor& log_alpha, int64_t blank) {
  const c10::DeviceGuard guard(log_probs.device());
  void* stream = cuda_stream_of(log_probs, "log_probs");
  const LossBatch d = loss_batch(log_probs, targets, input_lengths, target_lengths, blank);
  const Batch& b = d.b;
  const int64_t Lmax = 2 * b.S_max + 1;
  check_loss_saved(b, log_probs, grad_nll, nll, log_alpha);
  const at::Tensor lp = log_probs.contiguous(), alpha = log_alpha.contiguous();
  const at::Tensor go = grad_nll.contiguous(), nll_c = nll.contiguous();
  at::Tensor grad = at::zeros_like(lp);
  at::Tensor beta = at::empty({b.N, 2, Lmax + 2}, lp.options()), occupancy = at::empty({b.N, Lmax}, lp.options());
  AT_DISPATCH_FLOATING_TYPES(lp.scalar_type(), "ctc_loss_backward", [&] {
    CtcLossArgs<scalar_t> a = loss_args<scalar_t>(d, blank, lp, alpha, nll_c);
    a.grad_nll = go.data_ptr<scalar_t>();
    a.grad = grad.data_ptr<scalar_t>();
    a.beta = beta.data_ptr<scalar_t>();
    a.occupancy = occupancy.data_ptr<scalar_t>();
    launch_ctc_backward(a, stream);
  });
  check_kernel_launch("CTC backward");
  return grad;
}

std::tuple<at::Tensor, at::Tensor> greedy_decode_cuda(const at::Tensor& log_probs, const at::Tensor& input_lengths,
                                                      int64_t blank) {
  const c10::DeviceGuard guard(log_probs.device());
  void* stream = cuda_stream_of(log_probs, "log_probs");
  check_log_probs(log_probs, blank, kGlueDevice);
  const int64_t T = log_probs.size(0), N = log_probs.size(1), C = log_probs.size(2);
  const at::Tensor lengths =
      at::tensor(read_lengths(input_lengths, "input_lengths", N, T, std::to_string(T)), at::kLong)
          .to(log_probs.device());
  const at::Tensor lp = log_probs.contiguous();
  const auto longs = lp.options().dtype(at::kLong);
  at::Tensor best = at::empty({N, T}, longs), tokens = at::full({N, T}, -1, longs), counts = at::empty({N}, longs);
  AT_DISPATCH_FLOATING_TYPES(lp.scalar_type(), "ctc_greedy_decode_cuda", [&] {
    launch_ctc_greedy(lp.data_ptr<scalar_t>(), T, N, C, blank, lengths.data_ptr<int64_t>(), best.data_ptr<int64_t>(),
                      tokens.data_ptr<int64_t>(), counts.data_ptr<int64_t>(), stream);
  });
  check_kernel_launch("CTC greedy decoding");
  return {tokens, counts};
}

std::tuple<at::Tensor, at::Tensor> forced_align_cuda(const at::Tensor& log_probs, const at::Tensor& targets,
                                                     const at::Tensor& input_lengths,
                                                     const at::Tensor& target_lengths, int64_t blank) {
  const c10::DeviceGuard guard(log_probs.device());
  void* stream = cuda_stream_of(log_probs, "log_probs");
  const AlignBatch b = read_align_batch(log_probs, targets, input_lengths, target_lengths, blank, kGlueDevice);
  const at::Tensor lp = log_probs.contiguous(), tg = targets.contiguous();
  const int64_t ld = 2 * b.S_max + 1;
  const at::Device device = lp.device();
  const auto longs = lp.options().dtype(at::kLong), bytes = lp.options().dtype(at::kByte);
  at::Tensor labels = at::full({b.N, b.T}, blank, longs), scores = at::zeros({b.N, b.T}, lp.options());
  at::Tensor delta = at::empty({b.N, 2, ld}, lp.options()), from = at::empty({b.N, b.T, ld}, bytes);
  const at::Tensor lengths = at::tensor(b.input_lengths, at::kLong).to(device);
  const at::Tensor tlengths = at::tensor(b.target_lengths, at::kLong).to(device);
  at::Tensor unalignable = at::zeros({b.N}, bytes);
  AT_DISPATCH_FLOATING_TYPES(lp.scalar_type(), "ctc_forced_align_cuda", [&] {
    const CtcAlignArgs<scalar_t> a{b.T, b.N, b.C, b.S_max, blank, lp.data_ptr<scalar_t>(), tg.data_ptr<int64_t>(),
                                   lengths.data_ptr<int64_t>(), tlengths.data_ptr<int64_t>(),
                                   delta.data_ptr<scalar_t>(), from.data_ptr<uint8_t>(), labels.data_ptr<int64_t>(),
                                   scores.data_ptr<scalar_t>(), unalignable.data_ptr<uint8_t>()};
    launch_ctc_align(a, stream);
  });
  check_kernel_launch("CTC alignment");
  const at::Tensor flags = unalignable.to(at::kCPU);  // waits for the kernel: the error is raised on the host
  check_aligned(b, flags.data_ptr<uint8_t>());
  return {labels, scores};
}

}  // namespace
}  // namespace pyseq

PYSEQ_CUDA_LIBRARY_IMPL(m) {
  m.impl("ctc_loss", PYSEQ_FLOAT32_RESULTS(pyseq::loss_cuda));
  m.impl("ctc_loss_backward", PYSEQ_FLOAT32_RESULTS(pyseq::loss_backward_cuda));
  m.impl("ctc_greedy_decode", PYSEQ_FLOAT32_RESULTS(pyseq::greedy_decode_cuda));
  m.impl("ctc_forced_align", PYSEQ_FLOAT32_RESULTS(pyseq::forced_align_cuda));
}
