// The linear-chain CRF ops, called through the dispatcher: each function runs pyseq::<its name> on the kernel of its
// tensors' device. Log partition (forward algorithm) and its gradient (forward-backward marginals), the score of
// given tag paths, tag marginals, Viterbi and k-best Viterbi, over a batch. Schemas and autograd: crf_ops.cpp;
// kernels: crf_cpu.cpp, crf_viterbi_cpu.cpp, crf_cuda.cpp.
//
// Shared conventions of every function below:
//   emissions:   [B, T, K] float32/float64 (16-bit computed in float32), any strides with the tag dimension contiguous
//   (a time-major
//                tensor passed as .transpose(0, 1) is read in place, without a copy);
//   lengths:     [B] int64, each in [0, T]; sequence b covers steps 0 .. lengths[b] - 1, the rest is padding. Or a
//                mask [B, T] (bool or uint8, any strides) that is a prefix in each row: ones, then zeros;
//   start, end:  [K] scores of the first and last tag; transitions: [K, K], transitions[i][j] scores i -> j.
// The score of a path y of length L >= 1 is start[y_0] + sum_t emissions[t, y_t] + sum_{t>=1} transitions[y_{t-1},
// y_t] + end[y_{L-1}]. A sequence of length 0 has exactly one path, the empty one, with score 0 (so log Z = 0).
// -inf scores mark forbidden tags and transitions (constraints) and are honoured exactly: a sequence whose every path
// is forbidden has log Z = -inf, no Viterbi path, and a zero gradient. A sequence that reads a NaN score (its
// emissions within its length, or any transition score) gets NaN results: log Z, marginals, gradients, Viterbi score.
// Outputs shaped like the emissions ([B, T, K]) are contiguous, whatever the strides of the emissions.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace pyseq {

// Returns (log_z [B], log_alpha [T, B, Kp], alpha_shift [T, B] float64), Kp = K rounded up to whole 64-byte vectors
// (padded_tags in crf_math.h): log_alpha[t, b, j] + alpha_shift[t, b] (j < K) is the
// log of the summed scores of all prefixes of length t + 1 ending in tag j (emissions of step t included). The
// shift, summed in double, carries the part that grows with t, so that log_alpha keeps float32 precision. Both are
// kept for the backward; log_alpha is -inf past each length.
std::tuple<at::Tensor, at::Tensor, at::Tensor> crf_log_partition(const at::Tensor& emissions, const at::Tensor& lengths,
                                                                 const at::Tensor& start, const at::Tensor& end,
                                                                 const at::Tensor& transitions);

// grad_log_z: [B]. Returns the gradients of sum_b grad_log_z[b] * log_z[b] with respect to (emissions [B, T, K] in the
// strides of `emissions`, start [K], end [K], transitions [K, K]): the node and pairwise marginals, computed by the
// backward recursion, not by differentiating through the forward loop.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> crf_log_partition_backward(
    const at::Tensor& grad_log_z, const at::Tensor& emissions, const at::Tensor& lengths, const at::Tensor& start,
    const at::Tensor& end, const at::Tensor& transitions, const at::Tensor& log_alpha, const at::Tensor& alpha_shift);

// P(y_t = k | x): [B, T, K], 0 past each length (and for a sequence with no valid path).
at::Tensor crf_marginals(const at::Tensor& emissions, const at::Tensor& lengths, const at::Tensor& start,
                         const at::Tensor& end, const at::Tensor& transitions);

// tags: [B, T] int64, each in [0, K) within its length (values past the length are ignored). Returns the path scores
// [B] (-inf for a path through a forbidden tag or transition).
at::Tensor crf_path_score(const at::Tensor& emissions, const at::Tensor& tags, const at::Tensor& lengths,
                          const at::Tensor& start, const at::Tensor& end, const at::Tensor& transitions);

// grad_score: [B]. Gradients of sum_b grad_score[b] * score[b] with respect to (emissions, start, end, transitions):
// grad_score[b] at every (step, tag) and transition the path of b uses.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> crf_path_score_backward(const at::Tensor& grad_score,
                                                                                   const at::Tensor& emissions,
                                                                                   const at::Tensor& tags,
                                                                                   const at::Tensor& lengths);

// log P(tags | emissions) = path score - log Z in one pass: returns (llh [B], log_alpha, alpha_shift) as in
// crf_log_partition. A forbidden tag path has llh = -inf.
std::tuple<at::Tensor, at::Tensor, at::Tensor> crf_log_likelihood(const at::Tensor& emissions, const at::Tensor& tags,
                                                                  const at::Tensor& lengths, const at::Tensor& start,
                                                                  const at::Tensor& end, const at::Tensor& transitions);

// grad_llh: [B]. Gradients of sum_b grad_llh[b] * llh[b] for (emissions, start, end, transitions): the path's
// indicators minus the marginals, written in one pass; zero for sequences with llh = -inf.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> crf_log_likelihood_backward(
    const at::Tensor& grad_llh, const at::Tensor& emissions, const at::Tensor& tags, const at::Tensor& lengths,
    const at::Tensor& start, const at::Tensor& end, const at::Tensor& transitions, const at::Tensor& llh,
    const at::Tensor& log_alpha, const at::Tensor& alpha_shift);

// Viterbi (nbest = 1) and list Viterbi (nbest > 1). Returns (paths [B, nbest, T] int64, scores [B, nbest]): the
// nbest highest-scoring distinct paths of each sequence, best first (ties: the lower tag, then the lower rank, at
// the latest step that differs). Steps past a length, and ranks beyond the number of valid paths, hold tag -1 and
// score -inf.
std::tuple<at::Tensor, at::Tensor> crf_viterbi(const at::Tensor& emissions, const at::Tensor& lengths,
                                               const at::Tensor& start, const at::Tensor& end,
                                               const at::Tensor& transitions, int64_t nbest);

}  // namespace pyseq
