// CTC loss on the CPU: one sequence per task (parallel over the batch), log-space recursions restricted to the band
// of lattice cells that lie on some complete alignment. The forward keeps the alpha table (the one T x (2S + 1)
// table per sequence); the backward runs beta with two rolling rows and accumulates the gradient as it goes.
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "../common/checks.h"
#include "ctc.h"
#include "ctc_math.h"

namespace pyseq {
namespace {

struct Batch {
  int64_t T, N, C, S_max;
  std::vector<int64_t> input_lengths, target_lengths, target_offsets;
  at::Tensor targets;  // contiguous int64
};

std::vector<int64_t> read_lengths(const at::Tensor& lengths, const char* name, int64_t N) {
  check_dim(lengths, name, 1, "(N,)");
  TORCH_CHECK_TYPE(lengths.scalar_type() == at::kLong, name, " must be int64, got ", lengths.scalar_type());
  TORCH_CHECK(lengths.device().is_cpu(), name, " must be on the CPU, got ", lengths.device());
  TORCH_CHECK(lengths.size(0) == N, name, " must have one entry per sequence (N = ", N, "), got ", lengths.size(0));
  const at::Tensor c = lengths.contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + N);
}

Batch read_batch(const at::Tensor& log_probs, const at::Tensor& targets, const at::Tensor& input_lengths,
                 const at::Tensor& target_lengths, int64_t blank) {
  check_dim(log_probs, "log_probs", 3, "(T, N, C)");
  check_floating(log_probs, "log_probs");
  TORCH_CHECK(log_probs.device().is_cpu(), "log_probs must be on the CPU, got ", log_probs.device());
  Batch b;
  b.T = log_probs.size(0);
  b.N = log_probs.size(1);
  b.C = log_probs.size(2);
  TORCH_CHECK_VALUE(blank >= 0 && blank < b.C, "blank must be in [0, C) = [0, ", b.C, "), got ", blank);
  b.input_lengths = read_lengths(input_lengths, "input_lengths", b.N);
  b.target_lengths = read_lengths(target_lengths, "target_lengths", b.N);
  for (int64_t n = 0; n < b.N; ++n) {
    TORCH_CHECK(b.input_lengths[n] >= 0 && b.input_lengths[n] <= b.T, "input_lengths must be in [0, T = ", b.T,
                "], got ", b.input_lengths[n], " for sequence ", n);
    TORCH_CHECK(b.target_lengths[n] >= 0, "target_lengths must be non-negative, got ", b.target_lengths[n],
                " for sequence ", n);
  }
  TORCH_CHECK_TYPE(targets.scalar_type() == at::kLong || targets.scalar_type() == at::kInt,
                   "targets must be int32 or int64, got ", targets.scalar_type());
  TORCH_CHECK(targets.device().is_cpu(), "targets must be on the CPU, got ", targets.device());
  b.targets = targets.to(at::kLong).contiguous();
  b.target_offsets.resize(b.N);
  if (targets.dim() == 2) {
    TORCH_CHECK(targets.size(0) == b.N, "targets must have one row per sequence (N = ", b.N, "), got ",
                targets.size(0));
    b.S_max = targets.size(1);
    for (int64_t n = 0; n < b.N; ++n) {
      TORCH_CHECK(b.target_lengths[n] <= b.S_max, "target_lengths must be at most S = ", b.S_max, " (targets ",
                  shape_str(targets.sizes()), "), got ", b.target_lengths[n], " for sequence ", n);
      b.target_offsets[n] = n * b.S_max;
    }
  } else {
    TORCH_CHECK(targets.dim() == 1, "targets must be 2-D (N, S) or 1-D (sum(target_lengths),), got ", targets.dim(),
                "-D");
    int64_t offset = 0;
    b.S_max = 0;
    for (int64_t n = 0; n < b.N; ++n) {
      b.target_offsets[n] = offset;
      offset += b.target_lengths[n];
      b.S_max = std::max(b.S_max, b.target_lengths[n]);
    }
    TORCH_CHECK(offset <= targets.size(0), "targets (1-D) must hold sum(target_lengths) = ", offset,
                " labels, got ", targets.size(0));
  }
  const int64_t* tg = b.targets.data_ptr<int64_t>();
  for (int64_t n = 0; n < b.N; ++n) {
    for (int64_t i = 0; i < b.target_lengths[n]; ++i) {
      const int64_t label = tg[b.target_offsets[n] + i];
      TORCH_CHECK(label >= 0 && label < b.C && label != blank, "targets must be in [0, C = ", b.C,
                  ") and differ from the blank (", blank, "), got ", label, " at position ", i, " of sequence ", n);
    }
  }
  return b;
}

// Cells s of the lattice at time t (of a sequence of `steps` frames and L = 2S + 1 labels) that lie on a complete
// alignment: reachable from the start (s <= 2t + 1) and still able to reach the end (s >= L - 2 (steps - t)).
struct Band {
  int64_t lo, hi;  // [lo, hi)
};
Band band(int64_t t, int64_t steps, int64_t L) {
  return {std::max<int64_t>(0, L - 2 * (steps - t)), std::min<int64_t>(L, 2 * t + 2)};
}

template <typename T>
void forward_sequence(const Batch& b, int64_t n, const T* lp, T* alpha, T* nll, int64_t blank) {
  const int64_t steps = b.input_lengths[n], S = b.target_lengths[n], L = 2 * S + 1, Lmax = 2 * b.S_max + 1;
  const int64_t* target = b.targets.data_ptr<int64_t>() + b.target_offsets[n];
  const int64_t lp_t = b.N * b.C;  // stride of t in log_probs
  const T* lp_n = lp + n * b.C;
  std::fill(alpha, alpha + b.T * Lmax, neg_inf<T>());
  if (steps == 0) {
    *nll = S == 0 ? T(0) : std::numeric_limits<T>::infinity();
    return;
  }
  for (int64_t t = 0; t < steps; ++t) {
    const T* lp_nt = lp_n + t * lp_t;
    T* row = alpha + t * Lmax;
    const T* prev = row - Lmax;
    const Band bd = band(t, steps, L);
    for (int64_t s = bd.lo; s < bd.hi; ++s) {
      T a;
      if (t == 0) {
        a = T(0);
      } else {
        a = prev[s];
        if (s >= 1) a = log_add_exp(a, prev[s - 1]);
        if (can_skip(target, s)) a = log_add_exp(a, prev[s - 2]);
      }
      row[s] = a + lp_nt[extended_label(target, s, blank)];
    }
  }
  const T* last = alpha + (steps - 1) * Lmax;
  const T ll = L > 1 ? log_add_exp(last[L - 1], last[L - 2]) : last[0];
  *nll = -ll;
}

template <typename T>
void backward_sequence(const Batch& b, int64_t n, const T* lp, const T* alpha, T nll, T grad_out, T* grad,
                       int64_t blank, std::vector<T>& beta_cur, std::vector<T>& beta_next) {
  const int64_t steps = b.input_lengths[n], S = b.target_lengths[n], L = 2 * S + 1, Lmax = 2 * b.S_max + 1;
  if (steps == 0 || !std::isfinite(nll) || grad_out == T(0)) return;
  const int64_t* target = b.targets.data_ptr<int64_t>() + b.target_offsets[n];
  const int64_t lp_t = b.N * b.C;
  beta_cur.assign(L, neg_inf<T>());
  beta_next.assign(L, neg_inf<T>());
  for (int64_t t = steps - 1; t >= 0; --t) {
    const T* lp_nt = lp + t * lp_t + n * b.C;
    T* grad_nt = grad + t * lp_t + n * b.C;
    const T* alpha_t = alpha + t * Lmax;
    const Band bd = band(t, steps, L);
    std::fill(beta_cur.begin(), beta_cur.end(), neg_inf<T>());
    for (int64_t s = bd.lo; s < bd.hi; ++s) {
      T be;
      if (t == steps - 1) {
        be = T(0);  // the band holds exactly the two final cells here
      } else {
        be = beta_next[s];
        if (s + 1 < L) be = log_add_exp(be, beta_next[s + 1]);
        if (s + 2 < L && can_skip(target, s + 2)) be = log_add_exp(be, beta_next[s + 2]);
      }
      const int64_t label = extended_label(target, s, blank);
      beta_cur[s] = be + lp_nt[label];
      // Posterior occupancy of cell (t, s): alpha + beta counts the emission at t twice.
      if (alpha_t[s] != neg_inf<T>() && be != neg_inf<T>()) {
        grad_nt[label] -= grad_out * std::exp(alpha_t[s] + be + nll);
      }
    }
    std::swap(beta_cur, beta_next);
  }
}

}  // namespace

std::vector<at::Tensor> ctc_loss_forward_cpu(const at::Tensor& log_probs, const at::Tensor& targets,
                                             const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                             int64_t blank) {
  const Batch b = read_batch(log_probs, targets, input_lengths, target_lengths, blank);
  const at::Tensor lp = log_probs.contiguous();
  const int64_t Lmax = 2 * b.S_max + 1;
  at::Tensor nll = at::empty({b.N}, lp.options());
  at::Tensor log_alpha = at::empty({b.N, b.T, Lmax}, lp.options());
  AT_DISPATCH_FLOATING_TYPES(lp.scalar_type(), "ctc_loss_forward_cpu", [&] {
    const scalar_t* lp_p = lp.data_ptr<scalar_t>();
    scalar_t* alpha_p = log_alpha.data_ptr<scalar_t>();
    scalar_t* nll_p = nll.data_ptr<scalar_t>();
    at::parallel_for(0, b.N, 1, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        forward_sequence<scalar_t>(b, n, lp_p, alpha_p + n * b.T * Lmax, nll_p + n, blank);
      }
    });
  });
  return {nll, log_alpha};
}

at::Tensor ctc_loss_backward_cpu(const at::Tensor& grad_nll, const at::Tensor& log_probs, const at::Tensor& targets,
                                 const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                 const at::Tensor& nll, const at::Tensor& log_alpha, int64_t blank) {
  const Batch b = read_batch(log_probs, targets, input_lengths, target_lengths, blank);
  const int64_t Lmax = 2 * b.S_max + 1;
  check_like(grad_nll, "grad_nll", log_probs, "log_probs");
  check_like(nll, "nll", log_probs, "log_probs");
  check_like(log_alpha, "log_alpha", log_probs, "log_probs");
  check_shape(grad_nll, "grad_nll", {b.N});
  check_shape(nll, "nll", {b.N});
  check_shape(log_alpha, "log_alpha", {b.N, b.T, Lmax});
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
      std::vector<scalar_t> beta_cur, beta_next;
      for (int64_t n = n0; n < n1; ++n) {
        backward_sequence<scalar_t>(b, n, lp_p, alpha_p + n * b.T * Lmax, nll_p[n], go_p[n], grad_p, blank,
                                    beta_cur, beta_next);
      }
    });
  });
  return grad;
}

}  // namespace pyseq
