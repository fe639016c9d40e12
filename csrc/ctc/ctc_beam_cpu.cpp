// CTC prefix beam search on the CPU, one sequence per task. Every prefix keeps two probabilities, of its
// alignments ending in a blank and in its last label, so that alignments that collapse to the same prefix merge
// (a repeated label needs a blank between its two copies). Prefixes live in a trie; a beam entry is a trie node.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <unordered_map>
#include <vector>

#include "ctc.h"
#include "ctc_args.h"
#include "ctc_math.h"

namespace pyseq {
namespace {

struct Trie {
  std::vector<int32_t> parent{-1};
  std::vector<int64_t> token{-1};
  std::unordered_map<uint64_t, int32_t> children;

  static uint64_t key(int32_t node, int64_t label) {
    return (static_cast<uint64_t>(node) << 32) | static_cast<uint32_t>(label);
  }
  int32_t find(int32_t node, int64_t label) const {
    auto it = children.find(key(node, label));
    return it == children.end() ? -1 : it->second;
  }
  int32_t insert(int32_t node, int64_t label) {
    const int32_t id = static_cast<int32_t>(parent.size());
    parent.push_back(node);
    token.push_back(label);
    children.emplace(key(node, label), id);
    return id;
  }
  std::vector<int64_t> tokens(int32_t node) const {
    std::vector<int64_t> out;
    for (; node > 0; node = parent[node]) out.push_back(token[node]);
    std::reverse(out.begin(), out.end());
    return out;
  }
};

// A prefix in the beam. New prefixes get a trie node only if they survive pruning (node = -1 until then, with
// parent and last naming them), so the trie holds survivors, not every extension ever tried.
struct TokensHash {
  size_t operator()(const std::vector<int64_t>& v) const {
    uint64_t h = 1469598103934665603ull;
    for (int64_t x : v) h = (h ^ static_cast<uint64_t>(x)) * 1099511628211ull;
    return static_cast<size_t>(h);
  }
};

// The n-gram tables of a CtcLanguageModel in hash maps.
class NgramScorer {
 public:
  explicit NgramScorer(const CtcLanguageModel& lm) : lm_(lm) {
    for (const auto& [tokens, value] : lm.log_probs) log_probs_.emplace(tokens, value);
    for (const auto& [tokens, value] : lm.backoffs) backoffs_.emplace(tokens, value);
  }
  bool enabled() const { return lm_.order > 0; }

  // weight * log p(token | context) + insertion bonus; context: the prefix's last tokens, oldest first.
  double score(const std::vector<int64_t>& context, int64_t token) const {
    double backoff = 0;
    std::vector<int64_t> key;
    for (int64_t k = static_cast<int64_t>(context.size()); k >= 0; --k) {
      key.assign(context.end() - k, context.end());
      key.push_back(token);
      auto it = log_probs_.find(key);
      if (it != log_probs_.end()) return weighted(backoff + it->second);
      if (k > 0) {
        key.pop_back();
        auto b = backoffs_.find(key);
        if (b != backoffs_.end()) backoff += b->second;
      }
    }
    return weighted(lm_.unk);
  }
  int64_t context_length() const { return std::max<int64_t>(0, lm_.order - 1); }

 private:
  // A weight of 0 switches the model off, also for log-probs of -inf (0 * -inf would be NaN).
  double weighted(double log_prob) const {
    return (lm_.weight == 0 ? 0.0 : lm_.weight * log_prob) + lm_.insertion_bonus;
  }

  const CtcLanguageModel& lm_;
  std::unordered_map<std::vector<int64_t>, double, TokensHash> log_probs_, backoffs_;
};

struct Beam {
  int32_t node, parent;
  int64_t last;
  double blank, label;  // log p of the prefix's alignments ending in a blank / in its last label
  double total() const { return log_add_exp(blank, label); }
};

// Classes worth extending with at frame `row`: the top_k most likely (0: all) among those with a log-prob of at
// least `threshold`; the blank is handled apart.
template <typename T>
void candidates(const T* row, int64_t C, int64_t blank, int64_t top_k, double threshold, std::vector<int64_t>& out) {
  out.clear();
  for (int64_t c = 0; c < C; ++c) {
    if (c != blank && static_cast<double>(row[c]) >= threshold) out.push_back(c);
  }
  if (top_k > 0 && static_cast<int64_t>(out.size()) > top_k) {
    std::partial_sort(out.begin(), out.begin() + top_k, out.end(),
                      [row](int64_t a, int64_t b) { return row[a] > row[b]; });
    out.resize(top_k);
  }
}

template <typename T>
std::vector<CtcHypothesis> search_sequence(const T* lp, int64_t steps, int64_t stride_t, int64_t C, int64_t blank,
                                           int64_t beam_width, int64_t nbest, int64_t top_k, double threshold,
                                           const NgramScorer& lm) {
  const double ninf = -std::numeric_limits<double>::infinity();
  Trie trie;
  std::vector<Beam> beams{{0, -1, -1, 0.0, ninf}}, next;
  // Index in `next` of each existing prefix's entry this frame (-1: none). A new prefix (not yet in the trie) can
  // only come from one beam entry and one class, so it needs no lookup.
  std::vector<int32_t> slot_of;
  std::vector<int64_t> labels, context;
  auto existing = [&](int32_t node) -> Beam& {
    if (static_cast<size_t>(node) >= slot_of.size()) slot_of.resize(trie.parent.size(), -1);
    int32_t& slot = slot_of[node];
    if (slot < 0) {
      slot = static_cast<int32_t>(next.size());
      next.push_back({node, -1, trie.token[node], ninf, ninf});
    }
    return next[slot];
  };
  auto entry = [&](int32_t node, int32_t parent, int64_t label) -> Beam& {
    if (node >= 0) return existing(node);
    next.push_back({-1, parent, label, ninf, ninf});
    return next.back();
  };
  for (int64_t t = 0; t < steps; ++t) {
    const T* row = lp + t * stride_t;
    candidates(row, C, blank, top_k, threshold, labels);
    next.clear();
    for (const Beam& b : beams) {
      const double total = b.total();
      if (lm.enabled()) {  // the prefix's last order - 1 tokens, oldest first
        context.clear();
        for (int32_t node = b.node; node > 0 && static_cast<int64_t>(context.size()) < lm.context_length();
             node = trie.parent[node]) {
          context.push_back(trie.token[node]);
        }
        std::reverse(context.begin(), context.end());
      }
      Beam& same = entry(b.node, -1, -1);
      same.blank = log_add_exp(same.blank, total + static_cast<double>(row[blank]));
      for (int64_t c : labels) {
        const double p = static_cast<double>(row[c]);
        // A new token's language-model term: the same for every alignment that grows this prefix by c.
        const double fused = p + (lm.enabled() ? lm.score(context, c) : 0.0);
        const int32_t child = trie.find(b.node, c);
        if (c == b.last) {
          Beam& stay = entry(b.node, -1, -1);  // the repeat collapses into the same prefix
          stay.label = log_add_exp(stay.label, b.label + p);
          Beam& grow = entry(child, b.node, c);  // a new copy of the label needs the blank before it
          grow.label = log_add_exp(grow.label, b.blank + fused);
        } else {
          Beam& grow = entry(child, b.node, c);
          grow.label = log_add_exp(grow.label, total + fused);
        }
      }
    }
    for (const Beam& b : next) {
      if (b.node >= 0) slot_of[b.node] = -1;
    }
    const int64_t keep = std::min<int64_t>(beam_width, static_cast<int64_t>(next.size()));
    std::partial_sort(next.begin(), next.begin() + keep, next.end(),
                      [](const Beam& a, const Beam& b) { return a.total() > b.total(); });
    next.resize(keep);
    for (Beam& b : next) {
      if (b.node < 0) b.node = trie.insert(b.parent, b.last);
    }
    beams.swap(next);
  }
  std::sort(beams.begin(), beams.end(), [](const Beam& a, const Beam& b) { return a.total() > b.total(); });
  std::vector<CtcHypothesis> out;
  for (int64_t i = 0; i < std::min<int64_t>(nbest, static_cast<int64_t>(beams.size())); ++i) {
    out.push_back({trie.tokens(beams[i].node), beams[i].total()});
  }
  return out;
}

}  // namespace

std::vector<std::vector<CtcHypothesis>> ctc_beam_search_cpu(const at::Tensor& log_probs,
                                                           const at::Tensor& input_lengths, int64_t beam_width,
                                                           int64_t blank, int64_t nbest, int64_t top_k,
                                                           double threshold, const CtcLanguageModel& lm) {
  TORCH_CHECK_VALUE(lm.order >= 0, "the language model's order must be non-negative, got ", lm.order);
  for (const auto& [tokens, value] : lm.log_probs) {
    TORCH_CHECK_VALUE(!tokens.empty() && static_cast<int64_t>(tokens.size()) <= lm.order,
                      "language-model n-grams must have 1 to order = ", lm.order, " tokens, got ", tokens.size());
  }
  const NgramScorer scorer(lm);
  check_log_probs(log_probs, blank);
  const int64_t T = log_probs.size(0), N = log_probs.size(1), C = log_probs.size(2);
  TORCH_CHECK_VALUE(beam_width >= 1, "beam_width must be at least 1, got ", beam_width);
  TORCH_CHECK_VALUE(nbest >= 1 && nbest <= beam_width, "nbest must be in [1, beam_width = ", beam_width, "], got ",
                    nbest);
  TORCH_CHECK_VALUE(top_k >= 0, "top_k must be non-negative (0: no limit), got ", top_k);
  const std::vector<int64_t> len = read_lengths(input_lengths, "input_lengths", N, T, std::to_string(T));
  const at::Tensor lp = log_probs.contiguous();
  std::vector<std::vector<CtcHypothesis>> out(N);
  AT_DISPATCH_FLOATING_TYPES(lp.scalar_type(), "ctc_beam_search_cpu", [&] {
    const scalar_t* p = lp.data_ptr<scalar_t>();
    at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        out[n] = search_sequence(p + n * C, len[n], N * C, C, blank, beam_width, nbest, top_k, threshold, scorer);
      }
    });
  });
  return out;
}

}  // namespace pyseq
