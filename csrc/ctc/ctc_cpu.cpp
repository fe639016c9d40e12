// CTC loss on the CPU: one sequence per task (parallel over the batch), log-space recursions restricted to the band
// of lattice cells that lie on some complete alignment. The forward keeps the alpha table (the one T x (2S + 1)
// table per sequence); the backward runs beta with two rolling rows and accumulates the gradient as it goes.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../common/cpu_dispatch.h"
#include "../common/float32_compute.h"
#include "ctc_args.h"
#include "ctc_math.h"

namespace pyseq {
namespace {

// Cells s of the lattice at time t (of a sequence of `steps` frames and L = 2S + 1 labels) that lie on a complete
// alignment: reachable from the start (s <= 2t + 1) and still able to reach the end (s >= L - 2 (steps - t)).
struct Band {
  int64_t lo, hi;  // [lo, hi)
};
Band band(int64_t t, int64_t steps, int64_t L) {
  return {std::max<int64_t>(0, L - 2 * (steps - t)), std::min<int64_t>(L, 2 * t + 2)};
}

// Row kernels over lattice cells [lo, hi) with lo >= 2 (the first two cells are done by the caller, so that every
// load below is in bounds and the loops vectorize). emit: the row's log-probs gathered per cell; skip[s]: whether
// s - 2 -> s is allowed.

// out[s] = logsumexp(prev[s], prev[s-1], prev[s-2] if skip[s]) + emit[s]
template <typename T>
PYSEQ_ALWAYS_INLINE void alpha_cells_impl(int64_t lo, int64_t hi, const T* __restrict__ prev,
                                          const T* __restrict__ emit, const uint8_t* __restrict__ skip,
                                          T* __restrict__ out) {
  for (int64_t s = lo; s < hi; ++s) {
    out[s] = log_sum_exp3(prev[s], prev[s - 1], skip[s] ? prev[s - 2] : neg_inf<T>()) + emit[s];
  }
}

// With next padded by two -inf cells and skip by two zeros past the lattice:
// be = logsumexp(next[s], next[s+1], next[s+2] if skip[s+2]) is beta at s without the emission at t;
// out[s] = be + emit[s]; occupancy[s] = exp(alpha[s] + be + nll), the posterior of cell (t, s).
template <typename T>
PYSEQ_ALWAYS_INLINE void beta_cells_impl(int64_t lo, int64_t hi, const T* __restrict__ next,
                                         const T* __restrict__ emit, const uint8_t* __restrict__ skip,
                                         const T* __restrict__ alpha, T nll, T* __restrict__ out,
                                         T* __restrict__ occupancy) {
  for (int64_t s = lo; s < hi; ++s) {
    const T be = log_sum_exp3(next[s], next[s + 1], skip[s + 2] ? next[s + 2] : neg_inf<T>());
    out[s] = be + emit[s];
    occupancy[s] = exp_or_zero(alpha[s] + be + nll);
  }
}

PYSEQ_CPU_CLONES void alpha_cells(int64_t lo, int64_t hi, const float* prev, const float* emit, const uint8_t* skip,
                                  float* out) {
  alpha_cells_impl(lo, hi, prev, emit, skip, out);
}
void alpha_cells(int64_t lo, int64_t hi, const double* prev, const double* emit, const uint8_t* skip, double* out) {
  alpha_cells_impl(lo, hi, prev, emit, skip, out);
}
PYSEQ_CPU_CLONES void beta_cells(int64_t lo, int64_t hi, const float* next, const float* emit, const uint8_t* skip,
                                 const float* alpha, float nll, float* out, float* occupancy) {
  beta_cells_impl(lo, hi, next, emit, skip, alpha, nll, out, occupancy);
}
void beta_cells(int64_t lo, int64_t hi, const double* next, const double* emit, const uint8_t* skip,
                const double* alpha, double nll, double* out, double* occupancy) {
  beta_cells_impl(lo, hi, next, emit, skip, alpha, nll, out, occupancy);
}

// The extended labels of one sequence and their skip flags, with two padding cells past the end.
struct Lattice {
  std::vector<int32_t> labels;  // 32-bit: the row gather below vectorizes with 16-lane gathers
  std::vector<uint8_t> skip;
  int64_t L;

  Lattice(const int64_t* target, int64_t S, int64_t blank) : labels(2 * S + 3, blank), skip(2 * S + 3, 0), L(2 * S + 1) {
    for (int64_t s = 0; s < L; ++s) {
      labels[s] = static_cast<int32_t>(extended_label(target, s, blank));
      skip[s] = can_skip(target, s);
    }
  }
};

// emit[s] = lp_row[labels[s]] over [lo, hi).
template <typename T>
PYSEQ_ALWAYS_INLINE void gather_row_impl(int64_t lo, int64_t hi, const T* __restrict__ lp_row,
                                         const int32_t* __restrict__ labels, T* __restrict__ emit) {
  for (int64_t s = lo; s < hi; ++s) emit[s] = lp_row[labels[s]];
}
PYSEQ_CPU_CLONES void gather_row(int64_t lo, int64_t hi, const float* lp_row, const int32_t* labels, float* emit) {
  gather_row_impl(lo, hi, lp_row, labels, emit);
}
void gather_row(int64_t lo, int64_t hi, const double* lp_row, const int32_t* labels, double* emit) {
  gather_row_impl(lo, hi, lp_row, labels, emit);
}

#ifdef PYSEQ_HAVE_TARGETS
#define PYSEQ_HAVE_AVX512_PERMUTE 1
#include <immintrin.h>
// emit[s] = lp_row[labels[s]] over [lo, hi) for C <= 32 classes: the row sits in two registers and each 16 cells
// take one two-table permute, instead of a 16-lane gather from memory (several times slower per cell).
PYSEQ_TARGET_AVX512 void gather_row_permute_avx512(int64_t lo, int64_t hi, const float* lp_row, int64_t C,
                                                   const int32_t* labels, float* emit) {
  alignas(64) float table[32] = {};
  std::copy(lp_row, lp_row + C, table);
  const __m512 low = _mm512_load_ps(table), high = _mm512_load_ps(table + 16);
  int64_t s = lo;
  for (; s + 16 <= hi; s += 16) {
    const __m512i idx = _mm512_loadu_si512(labels + s);
    _mm512_storeu_ps(emit + s, _mm512_permutex2var_ps(low, idx, high));
  }
  for (; s < hi; ++s) emit[s] = table[labels[s]];
}
#endif

template <typename T>
void gather_emissions(const T* lp_row, int64_t C, const Lattice& lat, const Band& bd, T* emit) {
#ifdef PYSEQ_HAVE_AVX512_PERMUTE
  if constexpr (std::is_same_v<T, float>) {
    if (C <= 32 && use_avx512_helpers()) {
      gather_row_permute_avx512(bd.lo, bd.hi, lp_row, C, lat.labels.data(), emit);
      return;
    }
  }
#endif
  gather_row(bd.lo, bd.hi, lp_row, lat.labels.data(), emit);
}

// One sequence's state in the recursions: its lattice, and (backward) its two rolling rows of beta.
template <typename T>
struct SequenceState {
  Lattice lat;
  int64_t steps;
  std::vector<T> cur, next;  // backward only: [L + 2]
  T sign = 1, shifted_nll = 0;
  SequenceState(const Batch& b, int64_t n, int64_t blank)
      : lat(b.targets.data_ptr<int64_t>() + b.target_offsets[n], b.target_lengths[n], blank),
        steps(b.input_lengths[n]) {}
};

// Alpha row t of sequence n (its table alpha_n [T, Lmax]) from row t - 1; emit: [L] scratch. Returns whether a
// log-prob the row read is NaN (the recursion's maxima would skip it).
template <typename T>
bool forward_step(const Batch& b, int64_t n, int64_t t, const SequenceState<T>& st, const T* lp, T* alpha_n,
                  std::vector<T>& emit) {
  const int64_t Lmax = 2 * b.S_max + 1, L = st.lat.L;
  const T* lp_row = lp + t * b.N * b.C + n * b.C;
  T* row = alpha_n + t * Lmax;
  const T* prev = row - Lmax;
  const Band bd = band(t, st.steps, L);
  std::fill(row, row + bd.lo, neg_inf<T>());
  std::fill(row + std::max(bd.lo, bd.hi), row + Lmax, neg_inf<T>());
  gather_emissions(lp_row, b.C, st.lat, bd, emit.data());
  const bool nan = any_nan(emit.data() + bd.lo, bd.hi - bd.lo);
  if (t == 0) {
    for (int64_t s = bd.lo; s < bd.hi; ++s) row[s] = emit[s];
    return nan;
  }
  for (int64_t s = bd.lo; s < std::min<int64_t>(bd.hi, 2); ++s) {
    row[s] = (s == 0 ? prev[0] : log_sum_exp3(prev[1], prev[0], neg_inf<T>())) + emit[s];
  }
  alpha_cells(std::max<int64_t>(bd.lo, 2), bd.hi, prev, emit.data(), st.lat.skip.data(), row);
  return nan;
}

// The forward recursion of sequences [n0, n1). They advance together, one step of each in turn: log_probs is
// [T, N, C], so the rows they read at one step are adjacent in memory (one sequence at a time would read one row
// per page, at a stride of N C).
template <typename T>
void forward_sequences(const Batch& b, int64_t n0, int64_t n1, const T* lp, T* alpha, T* nll, int64_t blank) {
  const int64_t Lmax = 2 * b.S_max + 1;
  std::vector<SequenceState<T>> states;
  int64_t steps = 0, L_max = 1;
  for (int64_t n = n0; n < n1; ++n) {
    states.emplace_back(b, n, blank);
    const SequenceState<T>& st = states.back();
    // Cells outside each row's band stay -inf (the recursion reads them from the row before); rows past the
    // sequence's end are all -inf. Filling only those, not the whole table first, saves a pass over it.
    std::fill(alpha + (n * b.T + st.steps) * Lmax, alpha + (n + 1) * b.T * Lmax, neg_inf<T>());
    steps = std::max(steps, st.steps);
    L_max = std::max(L_max, st.lat.L);
  }
  std::vector<T> emit(L_max);
  std::vector<uint8_t> nan(n1 - n0, 0);  // a log-prob on the sequence's band is NaN: its loss is NaN
  for (int64_t t = 0; t < steps; ++t) {
    for (int64_t n = n0; n < n1; ++n) {
      const SequenceState<T>& st = states[n - n0];
      if (t < st.steps) nan[n - n0] |= forward_step(b, n, t, st, lp, alpha + n * b.T * Lmax, emit);
    }
  }
  for (int64_t n = n0; n < n1; ++n) {
    const SequenceState<T>& st = states[n - n0];
    const int64_t L = st.lat.L;
    if (st.steps == 0) {
      nll[n] = L == 1 ? T(0) : std::numeric_limits<T>::infinity();
      continue;
    }
    if (nan[n - n0]) {
      nll[n] = std::numeric_limits<T>::quiet_NaN();
      continue;
    }
    const T* last = alpha + (n * b.T + st.steps - 1) * Lmax;
    nll[n] = -(L > 1 ? log_add_exp(last[L - 1], last[L - 2]) : last[0]);
  }
}

// grad_row[label of s] -= sign * occupancy[s] over the band (occupancy already scaled by |grad_out|). Every even
// cell is the blank: summing those in independent partial sums first avoids a chain of read-modify-writes on one
// address (half the cells).
template <typename T>
void accumulate_gradient(const Lattice& lat, const Band& bd, const T* occupancy, T sign, int64_t blank,
                         T* grad_row) {
  T blank_sum[4] = {T(0), T(0), T(0), T(0)};
  const int64_t first_blank = bd.lo + (bd.lo & 1);
  int64_t s = first_blank, i = 0;
  for (; s < bd.hi; s += 2, ++i) blank_sum[i & 3] += occupancy[s];
  grad_row[blank] -= sign * ((blank_sum[0] + blank_sum[1]) + (blank_sum[2] + blank_sum[3]));
  for (s = bd.lo + 1 - (bd.lo & 1); s < bd.hi; s += 2) grad_row[lat.labels[s]] -= sign * occupancy[s];
}

// Beta row t of one sequence (st.next holds row t + 1, st.cur becomes row t), and the gradient of its step t.
// emit, occupancy: [L] scratch.
template <typename T>
void backward_step(const Batch& b, int64_t n, int64_t t, SequenceState<T>& st, const T* lp, const T* alpha_n, T* grad,
                   int64_t blank, std::vector<T>& emit, std::vector<T>& occupancy) {
  const int64_t Lmax = 2 * b.S_max + 1;
  const T* lp_row = lp + t * b.N * b.C + n * b.C;
  T* grad_row = grad + t * b.N * b.C + n * b.C;
  const T* alpha_t = alpha_n + t * Lmax;
  const Band bd = band(t, st.steps, st.lat.L);
  gather_emissions(lp_row, b.C, st.lat, bd, emit.data());
  // Cells outside the band are -inf (the step before reads up to two past its own band); inside, all are written.
  std::fill(st.cur.begin(), st.cur.begin() + bd.lo, neg_inf<T>());
  std::fill(st.cur.begin() + std::max(bd.lo, bd.hi), st.cur.end(), neg_inf<T>());
  if (t == st.steps - 1) {  // the band holds the two final cells, whose beta without emission is 0
    for (int64_t s = bd.lo; s < bd.hi; ++s) {
      st.cur[s] = emit[s];
      occupancy[s] = exp_or_zero(alpha_t[s] + st.shifted_nll);
    }
  } else {
    beta_cells(bd.lo, bd.hi, st.next.data(), emit.data(), st.lat.skip.data(), alpha_t, st.shifted_nll,
               st.cur.data(), occupancy.data());
  }
  accumulate_gradient(st.lat, bd, occupancy.data(), st.sign, blank, grad_row);
  std::swap(st.cur, st.next);
}

// The backward recursion of sequences [n0, n1), advancing together like forward_sequences; sequences with an
// infinite loss or a zero incoming gradient are skipped (their gradient stays zero), and those whose loss or incoming
// gradient is NaN get a NaN gradient at every frame within their length (a NaN input makes the loss NaN).
template <typename T>
void backward_sequences(const Batch& b, int64_t n0, int64_t n1, const T* lp, const T* alpha, const T* nll,
                        const T* grad_out, T* grad, int64_t blank) {
  const int64_t Lmax = 2 * b.S_max + 1;
  std::vector<SequenceState<T>> states;
  int64_t steps = 0, L_max = 1;
  for (int64_t n = n0; n < n1; ++n) {
    states.emplace_back(b, n, blank);
    SequenceState<T>& st = states.back();
    if (std::isnan(nll[n]) || std::isnan(grad_out[n])) {
      for (int64_t t = 0; t < st.steps; ++t) {
        T* grad_row = grad + t * b.N * b.C + n * b.C;
        std::fill(grad_row, grad_row + b.C, std::numeric_limits<T>::quiet_NaN());
      }
      st.steps = 0;
      continue;
    }
    if (st.steps == 0 || !std::isfinite(nll[n]) || grad_out[n] == T(0)) {
      st.steps = 0;
      continue;
    }
    st.cur.assign(st.lat.L + 2, neg_inf<T>());
    st.next.assign(st.lat.L + 2, neg_inf<T>());
    // grad_out * posterior, computed as sign * exp(log posterior + log |grad_out|): the product is formed in log
    // space, so small incoming gradients (1 / (N * S) under reduction='mean') cannot make it denormal.
    st.sign = grad_out[n] > 0 ? T(1) : T(-1);
    st.shifted_nll = nll[n] + std::log(std::abs(grad_out[n]));
    steps = std::max(steps, st.steps);
    L_max = std::max(L_max, st.lat.L);
  }
  std::vector<T> emit(L_max), occupancy(L_max);
  for (int64_t t = steps - 1; t >= 0; --t) {
    for (int64_t n = n0; n < n1; ++n) {
      SequenceState<T>& st = states[n - n0];
      if (t < st.steps) backward_step(b, n, t, st, lp, alpha + n * b.T * Lmax, grad, blank, emit, occupancy);
    }
  }
}

std::tuple<at::Tensor, at::Tensor> ctc_loss_cpu(const at::Tensor& log_probs, const at::Tensor& targets,
                                                const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                                int64_t blank) {
  const Batch b = read_batch(log_probs, targets, input_lengths, target_lengths, blank);
  const at::Tensor lp = log_probs.contiguous();
  const int64_t Lmax = 2 * b.S_max + 1;
  at::Tensor nll = at::empty({b.N}, lp.options());
  at::Tensor log_alpha = at::empty({b.N, b.T, Lmax}, lp.options());
  AT_DISPATCH_FLOATING_TYPES(lp.scalar_type(), "ctc_loss_cpu", [&] {
    const scalar_t* lp_p = lp.data_ptr<scalar_t>();
    scalar_t* alpha_p = log_alpha.data_ptr<scalar_t>();
    scalar_t* nll_p = nll.data_ptr<scalar_t>();
    at::parallel_for(0, b.N, 1, [&](int64_t n0, int64_t n1) {
      forward_sequences<scalar_t>(b, n0, n1, lp_p, alpha_p, nll_p, blank);
    });
  });
  return {nll, log_alpha};
}

at::Tensor ctc_loss_backward_cpu(const at::Tensor& grad_nll, const at::Tensor& log_probs, const at::Tensor& targets,
                                 const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                 const at::Tensor& nll, const at::Tensor& log_alpha, int64_t blank) {
  const Batch b = read_batch(log_probs, targets, input_lengths, target_lengths, blank);
  check_loss_saved(b, log_probs, grad_nll, nll, log_alpha);
  const at::Tensor lp = log_probs.contiguous();
  const at::Tensor go = grad_nll.contiguous(), nll_c = nll.contiguous(), alpha = log_alpha.contiguous();
  at::Tensor grad = at::zeros_like(lp);
  AT_DISPATCH_FLOATING_TYPES(lp.scalar_type(), "ctc_loss_backward_cpu", [&] {
    const scalar_t* lp_p = lp.data_ptr<scalar_t>();
    const scalar_t* alpha_p = alpha.data_ptr<scalar_t>();
    const scalar_t* go_p = go.data_ptr<scalar_t>();
    const scalar_t* nll_p = nll_c.data_ptr<scalar_t>();
    scalar_t* grad_p = grad.data_ptr<scalar_t>();
    at::parallel_for(0, b.N, 1, [&](int64_t n0, int64_t n1) {
      backward_sequences<scalar_t>(b, n0, n1, lp_p, alpha_p, nll_p, go_p, grad_p, blank);
    });
  });
  return grad;
}

}  // namespace
}  // namespace pyseq

TORCH_LIBRARY_IMPL(pyseq, CPU, m) {
  m.impl("ctc_loss", PYSEQ_FLOAT32_RESULTS(pyseq::ctc_loss_cpu));
  m.impl("ctc_loss_backward", PYSEQ_FLOAT32_RESULTS(pyseq::ctc_loss_backward_cpu));
}
