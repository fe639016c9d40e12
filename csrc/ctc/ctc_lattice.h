// The CTC dynamic programs as the work of one lattice cell, target position or frame: __host__ __device__ functions
// that a CUDA thread runs (csrc/ctc/ctc_cuda.cu: one block per sequence, cells across its threads, time as the loop;
// make cuda-emulate runs them on the CPU, thread by thread).
// Torch-free, so that nvcc compiles it without torch headers. The math is ctc_math.h's, as in the CPU kernels.
//
// Every result element is written by exactly one thread, and every sum is taken in a fixed order: two runs give
// bitwise-identical results, gradients included.
#pragma once

#include <cstdint>

#include "ctc_math.h"

namespace pyseq {

// One batch of the CTC loss. Every pointer is on the kernels' device.
template <typename T>
struct CtcLossArgs {
  int64_t T_max, N, C, Lmax;  // Lmax = 2 * S_max + 1
  int64_t blank;
  const T* lp;                     // [T_max, N, C] contiguous
  const int64_t* targets;          // sequence n's labels at targets[target_offsets[n] + i], i < target_lengths[n]
  const int64_t* input_lengths;    // [N]
  const int64_t* target_lengths;   // [N]
  const int64_t* target_offsets;   // [N]
  // Per target position (indexed like targets): the next position of the same sequence with the same label, or -1;
  // and whether the position is the first of its label in its sequence. The gradient of a label is the sum over
  // its positions, taken by the thread of its first position along this chain.
  const int32_t* next_same;
  const uint8_t* first_of_label;
  T* alpha;                        // [N, T_max, Lmax] forward variables; -inf off each sequence's lattice
  T* nll;                          // [N]
  // Backward only:
  const T* grad_nll;               // [N]
  T* grad;                         // [T_max, N, C], zero on entry
  T* beta;                         // [N, 2, Lmax + 2] two rolling rows of beta (two -inf cells past the lattice)
  T* occupancy;                    // [N, Lmax] the posterior of each cell at the current step, scaled
};

// The lattice of sequence n: its frames, its 2S + 1 extended labels and its target.
template <typename T>
struct CtcSequence {
  int64_t steps, L;
  const int64_t* target;
  PYSEQ_HD CtcSequence(const CtcLossArgs<T>& a, int64_t n)
      : steps(a.input_lengths[n]), L(2 * a.target_lengths[n] + 1), target(a.targets + a.target_offsets[n]) {}
  // Whether cell s at time t lies on a complete alignment: reachable from the start (s <= 2t + 1) and still able to
  // reach the end (s >= L - 2 (steps - t)).
  PYSEQ_HD bool in_band(int64_t t, int64_t s) const {
    return t < steps && s < L && s <= 2 * t + 1 && s >= L - 2 * (steps - t);
  }
};

// Alpha of cell (t, s) of sequence n from row t - 1 (written by the previous step); -inf off the band and past the
// sequence. s in [0, Lmax). Returns whether the log-prob it read is NaN (the maxima of the recursion skip NaN; the
// sequence's loss is then NaN).
template <typename T>
PYSEQ_HD bool ctc_alpha_cell(const CtcLossArgs<T>& a, int64_t n, int64_t t, int64_t s) {
  const CtcSequence<T> q(a, n);
  T* row = a.alpha + (n * a.T_max + t) * a.Lmax;
  if (!q.in_band(t, s)) {
    row[s] = neg_inf<T>();
    return false;
  }
  const T emit = a.lp[(t * a.N + n) * a.C + extended_label(q.target, s, a.blank)];
  if (t == 0) {
    row[s] = emit;
  } else {
    const T* prev = row - a.Lmax;
    const T one_back = s >= 1 ? prev[s - 1] : neg_inf<T>();
    const T two_back = can_skip(q.target, s) ? prev[s - 2] : neg_inf<T>();
    row[s] = log_sum_exp3(prev[s], one_back, two_back) + emit;
  }
  return emit != emit;
}

// The loss of sequence n once its alpha table is complete; nan: whether a log-prob on its lattice is NaN.
template <typename T>
PYSEQ_HD T ctc_nll(const CtcLossArgs<T>& a, int64_t n, bool nan) {
  const CtcSequence<T> q(a, n);
  if (q.steps == 0) return q.L == 1 ? T(0) : std::numeric_limits<T>::infinity();
  if (nan) return std::numeric_limits<T>::quiet_NaN();
  const T* last = a.alpha + (n * a.T_max + q.steps - 1) * a.Lmax;
  return -(q.L > 1 ? log_add_exp(last[q.L - 1], last[q.L - 2]) : last[0]);
}

// How the backward treats sequence n: Run its recursion, leave its gradient zero (Skip: no frames, an infinite loss
// or a zero incoming gradient), or fill its frames with NaN (its loss or incoming gradient is NaN). For Run, the
// incoming gradient's sign and log|grad| + nll: grad * posterior is formed as sign * exp(log posterior + log|grad|),
// so that small incoming gradients cannot make it denormal.
struct CtcBackwardPlan {
  enum Kind { Run, Skip, Nan } kind;
  double sign, shifted_nll;
};
template <typename T>
PYSEQ_HD CtcBackwardPlan ctc_backward_plan(const CtcLossArgs<T>& a, int64_t n) {
  const T nll = a.nll[n], g = a.grad_nll[n];
  if (nll != nll || g != g) return {CtcBackwardPlan::Nan, 0, 0};
  if (a.input_lengths[n] == 0 || nll == std::numeric_limits<T>::infinity() || g == T(0)) {
    return {CtcBackwardPlan::Skip, 0, 0};
  }
  return {CtcBackwardPlan::Run, g > T(0) ? 1.0 : -1.0, static_cast<double>(nll + std::log(g > T(0) ? g : -g))};
}

// Element i of the NaN-filled gradient of sequence n: i over [0, steps * C).
template <typename T>
PYSEQ_HD void ctc_nan_gradient(const CtcLossArgs<T>& a, int64_t n, int64_t i) {
  const int64_t t = i / a.C, c = i % a.C;
  a.grad[(t * a.N + n) * a.C + c] = std::numeric_limits<T>::quiet_NaN();
}

// Beta of cell (t, s) of sequence n from row t + 1, and the cell's occupancy exp(alpha + beta - emission + nll +
// log|grad|); s in [0, Lmax + 2). Off the band: beta -inf, occupancy 0.
template <typename T>
PYSEQ_HD void ctc_beta_cell(const CtcLossArgs<T>& a, int64_t n, int64_t t, int64_t s, T shifted_nll) {
  const CtcSequence<T> q(a, n);
  const int64_t ld = a.Lmax + 2;
  T* cur = a.beta + (2 * n + (t & 1)) * ld;
  const T* next = a.beta + (2 * n + ((t + 1) & 1)) * ld;
  T* occupancy = a.occupancy + n * a.Lmax;
  if (!q.in_band(t, s)) {
    cur[s] = neg_inf<T>();
    if (s < a.Lmax) occupancy[s] = T(0);
    return;
  }
  const T emit = a.lp[(t * a.N + n) * a.C + extended_label(q.target, s, a.blank)];
  const T alpha = a.alpha[(n * a.T_max + t) * a.Lmax + s];
  T be = T(0);  // the last frame: its band holds the two final cells, whose beta without emission is 0
  if (t != q.steps - 1) {
    const T skip = s + 2 < q.L && can_skip(q.target, s + 2) ? next[s + 2] : neg_inf<T>();
    be = log_sum_exp3(next[s], next[s + 1], skip);
  }
  cur[s] = be + emit;
  occupancy[s] = exp_or_zero(alpha + be + shifted_nll);
}

// The gradient of the label at target position i of sequence n at frame t, when i is the first position of its
// label: minus the sum of the occupancies of the label's cells, in target order.
template <typename T>
PYSEQ_HD void ctc_label_gradient(const CtcLossArgs<T>& a, int64_t n, int64_t t, int64_t i, T sign) {
  const int64_t offset = a.target_offsets[n];
  if (!a.first_of_label[offset + i]) return;
  const T* occupancy = a.occupancy + n * a.Lmax;
  T sum = T(0);
  for (int64_t j = i; j >= 0; j = a.next_same[offset + j]) sum += occupancy[2 * j + 1];
  a.grad[(t * a.N + n) * a.C + a.targets[offset + i]] = -sign * sum;
}

// The blank cells' occupancy summed over part k of `parts`: cells 2k, 2(k + parts), ... of sequence n's lattice.
// The blank's gradient is minus the sum of all parts (the CUDA kernel adds them in a fixed tree order).
template <typename T>
PYSEQ_HD T ctc_blank_occupancy(const CtcLossArgs<T>& a, int64_t n, int64_t k, int64_t parts) {
  const T* occupancy = a.occupancy + n * a.Lmax;
  const int64_t L = 2 * a.target_lengths[n] + 1;
  T sum = T(0);
  for (int64_t s = 2 * k; s < L; s += 2 * parts) sum += occupancy[s];
  return sum;
}

// Best-path decoding of frame (t, n): the first class of highest score (std::max_element's choice).
template <typename T>
PYSEQ_HD int64_t ctc_best_class(const T* lp, int64_t N, int64_t C, int64_t t, int64_t n) {
  const T* row = lp + (t * N + n) * C;
  int64_t best = 0;
  for (int64_t c = 1; c < C; ++c) best = row[c] > row[best] ? c : best;
  return best;
}

// Collapses the best classes of one sequence's frames (best: [steps]) into its tokens: repeats merged, blanks
// removed. Writes them to out and returns how many there are.
PYSEQ_HD int64_t ctc_collapse(const int64_t* best, int64_t steps, int64_t blank, int64_t* out) {
  int64_t count = 0, prev = -1;
  for (int64_t t = 0; t < steps; ++t) {
    if (best[t] != prev && best[t] != blank) out[count++] = best[t];
    prev = best[t];
  }
  return count;
}

// One batch of forced alignment (Viterbi over the CTC lattice). Targets padded [N, S_max].
template <typename T>
struct CtcAlignArgs {
  int64_t T_max, N, C, S_max;
  int64_t blank;
  const T* lp;                    // [T_max, N, C]
  const int64_t* targets;         // [N, S_max]
  const int64_t* input_lengths;   // [N]
  const int64_t* target_lengths;  // [N]
  T* delta;                       // [N, 2, 2 S_max + 1] two rolling rows of the best partial-alignment scores
  uint8_t* from;                  // [N, T_max, 2 S_max + 1] back-pointers: 0, 1 or 2 cells back
  int64_t* labels;                // [N, T_max] out: blank on entry
  T* scores;                      // [N, T_max] out: zero on entry
  uint8_t* unalignable;           // [N] out
};

// delta of cell (t, s) of sequence n from row t - 1, and its back-pointer (ties go to the nearer cell, as on the
// CPU); s in [0, 2 S + 1), t < the sequence's frames.
template <typename T>
PYSEQ_HD void ctc_viterbi_cell(const CtcAlignArgs<T>& a, int64_t n, int64_t t, int64_t s) {
  const int64_t ld = 2 * a.S_max + 1;
  const int64_t* target = a.targets + n * a.S_max;
  T* cur = a.delta + (2 * n + (t & 1)) * ld;
  const T emit = a.lp[(t * a.N + n) * a.C + extended_label(target, s, a.blank)];
  if (t == 0) {
    cur[s] = s <= 1 ? emit : neg_inf<T>();
    return;
  }
  const T* prev = a.delta + (2 * n + ((t + 1) & 1)) * ld;
  T best = prev[s];
  uint8_t step = 0;
  if (s >= 1 && prev[s - 1] > best) best = prev[s - 1], step = 1;
  if (can_skip(target, s) && prev[s - 2] > best) best = prev[s - 2], step = 2;
  cur[s] = best + emit;
  a.from[(n * a.T_max + t) * ld + s] = step;
}

// After the last frame of sequence n: follows the back-pointers from the better final cell and writes the labels and
// scores of its frames, or flags the sequence when no alignment has a finite score.
template <typename T>
PYSEQ_HD void ctc_backtrack(const CtcAlignArgs<T>& a, int64_t n) {
  const int64_t steps = a.input_lengths[n], L = 2 * a.target_lengths[n] + 1, ld = 2 * a.S_max + 1;
  const int64_t* target = a.targets + n * a.S_max;
  if (steps == 0) {
    a.unalignable[n] = L > 1;
    return;
  }
  const T* last = a.delta + (2 * n + ((steps - 1) & 1)) * ld;
  int64_t s = L - 1;
  if (L > 1 && last[L - 2] > last[L - 1]) s = L - 2;
  a.unalignable[n] = last[s] == neg_inf<T>();
  if (a.unalignable[n]) return;
  for (int64_t t = steps - 1; t >= 0; --t) {
    const int64_t label = extended_label(target, s, a.blank);
    a.labels[n * a.T_max + t] = label;
    a.scores[n * a.T_max + t] = a.lp[(t * a.N + n) * a.C + label];
    if (t > 0) s -= a.from[(n * a.T_max + t) * ld + s];  // frame 0 has no back-pointer
  }
}

}  // namespace pyseq
