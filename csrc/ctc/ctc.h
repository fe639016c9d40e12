// CTC beam search with an n-gram language model (a pybind11 function: it returns Python objects); the ops are
// declared in ctc_ops.h.
#pragma once

#include <ATen/ATen.h>

#include <utility>
#include <vector>

namespace pyseq {

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
