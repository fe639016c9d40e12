// CTC loss (Graves et al. 2006): forward (alpha) and backward (beta and the gradient) over a batch.
#pragma once

#include <ATen/ATen.h>

#include <utility>
#include <vector>

namespace pyseq {

// log_probs: [T, N, C] float32/float64; targets: [N, S] padded or [sum(target_lengths)] concatenated, int64;
// input_lengths, target_lengths: [N] int64 on the CPU.
// Returns nll: [N] (-log p(target | input), +inf where no alignment exists) and log_alpha: [N, T, 2 * S_max + 1]
// (the forward variables, kept for the backward; -inf outside each sequence's lattice).
std::vector<at::Tensor> ctc_loss_forward_cpu(const at::Tensor& log_probs, const at::Tensor& targets,
                                             const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                             int64_t blank);

// grad_nll: [N]. Returns d(sum_n grad_nll[n] * nll[n]) / d log_probs: [T, N, C], which is -grad_nll[n] times the
// posterior occupancy of each (t, class): the gradient with respect to the log-probs as given (not torch's
// exp(log_probs) - posterior, which is only right after a log_softmax). Sequences with an infinite nll get a zero
// gradient.
at::Tensor ctc_loss_backward_cpu(const at::Tensor& grad_nll, const at::Tensor& log_probs, const at::Tensor& targets,
                                 const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                 const at::Tensor& nll, const at::Tensor& log_alpha, int64_t blank);

// Best-path decoding: per frame the most likely class, repeats collapsed, blanks removed. log_probs: [T, N, C];
// input_lengths: [N] int64. Returns tokens: [N, T] int64, the class ids of each sequence first, then -1; and
// counts: [N] int64, how many each sequence has.
std::vector<at::Tensor> ctc_greedy_decode_cpu(const at::Tensor& log_probs, const at::Tensor& input_lengths,
                                              int64_t blank);

// Viterbi alignment over the CTC topology for a batch. targets: [N, S] int64 padded. Returns labels: [N, T] int64
// (the class each frame is aligned to; blank past each input's length) and scores: [N, T] (the log-prob of that
// class at that frame; 0 past the length). Raises ValueError when a target cannot be aligned.
std::vector<at::Tensor> ctc_forced_align_cpu(const at::Tensor& log_probs, const at::Tensor& targets,
                                             const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                             int64_t blank);

// A beam-search result: the class ids of a hypothesis and its log-probability (summed over its alignments).
using CtcHypothesis = std::pair<std::vector<int64_t>, double>;

// A token-level n-gram language model for shallow fusion: log-probabilities of (context..., token) n-grams (the
// context oldest first, at most order - 1 tokens) and backoff weights of contexts; a token the model has no
// unigram for scores `unk`. score(context, token) tries the longest context first and adds the backoff weight of
// every context it backs off from (ARPA semantics).
using Ngrams = std::vector<std::pair<std::vector<int64_t>, double>>;
struct CtcLanguageModel {
  Ngrams log_probs, backoffs;
  int64_t order = 0;  // 0: no language model
  double unk = 0, weight = 0, insertion_bonus = 0;
};

// CTC prefix beam search, per sequence up to `nbest` hypotheses, best first. log_probs: [T, N, C]; input_lengths:
// [N] int64. Each frame extends the beam with the top_k most likely classes (0: all) whose log-prob is at least
// `threshold` (-inf: no threshold). With a language model, extending a prefix by a token adds
// weight * lm(token | prefix) + insertion_bonus to its score, and the returned scores include those terms.
std::vector<std::vector<CtcHypothesis>> ctc_beam_search_cpu(const at::Tensor& log_probs,
                                                           const at::Tensor& input_lengths, int64_t beam_width,
                                                           int64_t blank, int64_t nbest, int64_t top_k,
                                                           double threshold, const CtcLanguageModel& lm);

}  // namespace pyseq
