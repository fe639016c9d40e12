// CTC decoding and alignment on the CPU: greedy (best path) decoding and batched forced alignment (Viterbi over
// the CTC topology), parallel over the batch. Both run the per-frame and per-cell functions of ctc_lattice.h, which
// the CUDA kernels run across threads (csrc/ctc/ctc_cuda.cu).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "../common/float32_compute.h"
#include "ctc_args.h"
#include "ctc_lattice.h"

namespace pyseq {
namespace {

std::tuple<at::Tensor, at::Tensor> ctc_greedy_decode_cpu(const at::Tensor& log_probs, const at::Tensor& input_lengths,
                                                         int64_t blank) {
  check_log_probs(log_probs, blank);
  const int64_t T = log_probs.size(0), N = log_probs.size(1), C = log_probs.size(2);
  const std::vector<int64_t> lengths = read_lengths(input_lengths, "input_lengths", N, T, std::to_string(T));
  const at::Tensor lp = log_probs.contiguous();
  at::Tensor tokens = at::full({N, T}, -1, at::kLong);
  at::Tensor counts = at::empty({N}, at::kLong);
  AT_DISPATCH_FLOATING_TYPES(lp.scalar_type(), "ctc_greedy_decode_cpu", [&] {
    const scalar_t* p = lp.data_ptr<scalar_t>();
    int64_t* tokens_p = tokens.data_ptr<int64_t>();
    int64_t* counts_p = counts.data_ptr<int64_t>();
    at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
      std::vector<int64_t> best(T);
      for (int64_t n = n0; n < n1; ++n) {
        for (int64_t t = 0; t < lengths[n]; ++t) best[t] = ctc_best_class(p, N, C, t, n);
        counts_p[n] = ctc_collapse(best.data(), lengths[n], blank, tokens_p + n * T);
      }
    });
  });
  return {tokens, counts};
}

std::tuple<at::Tensor, at::Tensor> ctc_forced_align_cpu(const at::Tensor& log_probs, const at::Tensor& targets,
                                                        const at::Tensor& input_lengths,
                                                        const at::Tensor& target_lengths, int64_t blank) {
  const AlignBatch b = read_align_batch(log_probs, targets, input_lengths, target_lengths, blank);
  const at::Tensor lp = log_probs.contiguous(), tg = targets.contiguous();
  const int64_t ld = 2 * b.S_max + 1;
  at::Tensor labels = at::full({b.N, b.T}, blank, at::kLong);
  at::Tensor scores = at::zeros({b.N, b.T}, lp.options());
  at::Tensor delta = at::empty({b.N, 2, ld}, lp.options());
  at::Tensor from = at::empty({b.N, b.T, ld}, at::kByte);
  at::Tensor lengths = at::tensor(b.input_lengths, at::kLong), tlengths = at::tensor(b.target_lengths, at::kLong);
  at::Tensor unalignable = at::zeros({b.N}, at::kByte);
  AT_DISPATCH_FLOATING_TYPES(lp.scalar_type(), "ctc_forced_align_cpu", [&] {
    const CtcAlignArgs<scalar_t> a{b.T, b.N, b.C, b.S_max, blank, lp.data_ptr<scalar_t>(), tg.data_ptr<int64_t>(),
                                   lengths.data_ptr<int64_t>(), tlengths.data_ptr<int64_t>(),
                                   delta.data_ptr<scalar_t>(), from.data_ptr<uint8_t>(), labels.data_ptr<int64_t>(),
                                   scores.data_ptr<scalar_t>(), unalignable.data_ptr<uint8_t>()};
    at::parallel_for(0, b.N, 1, [&](int64_t n0, int64_t n1) {
      // A copy of its own: the back-pointer stores (bytes, which may alias anything) cannot then change the
      // arguments, whose fields stay in registers across the cells.
      const CtcAlignArgs<scalar_t> args = a;
      for (int64_t n = n0; n < n1; ++n) {
        const int64_t L = 2 * b.target_lengths[n] + 1;
        for (int64_t t = 0; t < b.input_lengths[n]; ++t) {
          for (int64_t s = 0; s < L; ++s) ctc_viterbi_cell(args, n, t, s);
        }
        ctc_backtrack(args, n);
      }
    });
  });
  check_aligned(b, unalignable.data_ptr<uint8_t>());
  return {labels, scores};
}

}  // namespace
}  // namespace pyseq

TORCH_LIBRARY_IMPL(pyseq, CPU, m) {
  m.impl("ctc_greedy_decode", PYSEQ_FLOAT32_RESULTS(pyseq::ctc_greedy_decode_cpu));
  m.impl("ctc_forced_align", PYSEQ_FLOAT32_RESULTS(pyseq::ctc_forced_align_cpu));
}
