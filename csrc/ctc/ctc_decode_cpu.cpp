// CTC decoding and alignment on the CPU: greedy (best path) decoding and batched forced alignment (Viterbi over
// the CTC topology), parallel over the batch.
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "ctc.h"
#include "ctc_args.h"
#include "ctc_math.h"

namespace pyseq {
namespace {

// Writes the decoded class ids of one sequence into out (room for `steps`) and returns how many there are.
template <typename T>
int64_t greedy_sequence(const T* lp, int64_t steps, int64_t stride_t, int64_t C, int64_t blank, int64_t* out) {
  int64_t count = 0, prev = -1;
  for (int64_t t = 0; t < steps; ++t) {
    const T* row = lp + t * stride_t;
    const int64_t best = std::max_element(row, row + C) - row;
    if (best != prev && best != blank) out[count++] = best;
    prev = best;
  }
  return count;
}

}  // namespace

std::vector<at::Tensor> ctc_greedy_decode_cpu(const at::Tensor& log_probs, const at::Tensor& input_lengths,
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
      for (int64_t n = n0; n < n1; ++n) {
        counts_p[n] = greedy_sequence(p + n * C, lengths[n], N * C, C, blank, tokens_p + n * T);
      }
    });
  });
  return {tokens, counts};
}

std::vector<at::Tensor> ctc_forced_align_cpu(const at::Tensor& log_probs, const at::Tensor& targets,
                                             const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                             int64_t blank) {
  check_log_probs(log_probs, blank);
  const int64_t T = log_probs.size(0), N = log_probs.size(1), C = log_probs.size(2);
  check_dim(targets, "targets", 2, "(N, S)");
  TORCH_CHECK_TYPE(targets.scalar_type() == at::kLong, "targets must be int64, got ", targets.scalar_type());
  TORCH_CHECK(targets.size(0) == N, "targets must have one row per sequence (N = ", N, "), got ", targets.size(0));
  const int64_t S_max = targets.size(1);
  const std::vector<int64_t> in_len = read_lengths(input_lengths, "input_lengths", N, T, std::to_string(T));
  const std::vector<int64_t> tg_len =
      read_lengths(target_lengths, "target_lengths", N, S_max, "S = " + std::to_string(S_max));
  const at::Tensor tg = targets.contiguous();
  const int64_t* tg_p = tg.data_ptr<int64_t>();
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t i = 0; i < tg_len[n]; ++i) {
      const int64_t label = tg_p[n * S_max + i];
      TORCH_CHECK(label >= 0 && label < C && label != blank, "targets must be in [0, C = ", C,
                  ") and differ from the blank (", blank, "), got ", label, " at position ", i, " of sequence ", n);
    }
  }
  const at::Tensor lp = log_probs.contiguous();
  at::Tensor labels = at::full({N, T}, blank, at::kLong);
  at::Tensor scores = at::zeros({N, T}, lp.options());
  std::vector<int64_t> unalignable(N, 0);
  AT_DISPATCH_FLOATING_TYPES(lp.scalar_type(), "ctc_forced_align_cpu", [&] {
    const scalar_t* p = lp.data_ptr<scalar_t>();
    int64_t* labels_p = labels.data_ptr<int64_t>();
    scalar_t* scores_p = scores.data_ptr<scalar_t>();
    at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        const int64_t steps = in_len[n], S = tg_len[n], L = 2 * S + 1;
        const int64_t* target = tg_p + n * S_max;
        if (steps == 0) {
          unalignable[n] = S > 0;
          continue;
        }
        // delta: best log score of a partial alignment ending in cell s; from: 0, 1 or 2 cells back.
        std::vector<scalar_t> delta(L, neg_inf<scalar_t>()), next(L);
        std::vector<uint8_t> from(steps * L, 0);
        const scalar_t* row0 = p + n * C;
        delta[0] = row0[blank];
        if (L > 1) delta[1] = row0[target[0]];
        for (int64_t t = 1; t < steps; ++t) {
          const scalar_t* row = p + t * N * C + n * C;
          uint8_t* back = from.data() + t * L;
          for (int64_t s = 0; s < L; ++s) {
            scalar_t best = delta[s];
            uint8_t step = 0;
            if (s >= 1 && delta[s - 1] > best) best = delta[s - 1], step = 1;
            if (can_skip(target, s) && delta[s - 2] > best) best = delta[s - 2], step = 2;
            next[s] = best + row[extended_label(target, s, blank)];
            back[s] = step;
          }
          std::swap(delta, next);
        }
        int64_t s = L - 1;
        if (L > 1 && delta[L - 2] > delta[L - 1]) s = L - 2;
        if (delta[s] == neg_inf<scalar_t>()) {
          unalignable[n] = 1;
          continue;
        }
        for (int64_t t = steps - 1; t >= 0; --t) {
          const int64_t label = extended_label(target, s, blank);
          labels_p[n * T + t] = label;
          scores_p[n * T + t] = p[t * N * C + n * C + label];
          s -= from[t * L + s];
        }
      }
    });
  });
  for (int64_t n = 0; n < N; ++n) {
    TORCH_CHECK_VALUE(!unalignable[n], "forced_align: the target of sequence ", n, " (", tg_len[n],
                      " labels) cannot be aligned to its ", in_len[n],
                      " frames (too short, or every alignment has probability 0)");
  }
  return {labels, scores};
}

}  // namespace pyseq
