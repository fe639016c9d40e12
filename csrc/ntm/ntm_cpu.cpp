// NTM memory on the CPU: a head's addressing in one pass over the memory for the similarities and the rest on N-long
// rows in cache, the write in one pass over the memory; the backwards recompute the addressing's intermediates per
// head. Parallel over the batch (the heads of one batch entry share, and add into, its memory gradient).
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../common/checks.h"
#include "ntm.h"

namespace pyseq {
namespace {

struct AddressShape {
  int64_t B, N, M, H, S;
};

AddressShape check_address(const at::Tensor& memory, const at::Tensor& key, const at::Tensor& beta,
                           const at::Tensor& gate, const at::Tensor& shift, const at::Tensor& gamma,
                           const at::Tensor& prev_weights) {
  check_dim(memory, "memory", 3, "(batch, memory_size, memory_width)");
  check_floating(memory, "memory");
  TORCH_CHECK(memory.device().is_cpu(), "memory must be on the CPU, got ", memory.device());
  check_dim(key, "key", 3, "(batch, heads, memory_width)");
  const AddressShape s{memory.size(0), memory.size(1), memory.size(2), key.size(1), shift.dim() == 3 ? shift.size(2) : 0};
  TORCH_CHECK_VALUE(s.N >= 1, "memory must have at least one row, got memory_size = 0");
  check_shape(key, "key", {s.B, s.H, s.M});
  check_shape(beta, "beta", {s.B, s.H});
  check_shape(gate, "gate", {s.B, s.H});
  check_shape(gamma, "gamma", {s.B, s.H});
  check_dim(shift, "shift", 3, "(batch, heads, shifts)");
  check_shape(shift, "shift", {s.B, s.H, s.S});
  TORCH_CHECK_VALUE(s.S % 2 == 1, "shift must hold an odd number of shifts (2 r + 1, centred), got ", s.S);
  check_shape(prev_weights, "prev_weights", {s.B, s.H, s.N});
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{key, "key"}, {beta, "beta"}, {gate, "gate"},
                                {shift, "shift"}, {gamma, "gamma"}, {prev_weights, "prev_weights"}}) {
    check_like(t, name, memory, "memory");
  }
  return s;
}

// One head's addressing, forward, with the intermediates the backward needs. Vectors of N (or M) entries.
template <typename T>
struct Head {
  std::vector<T> sim, wc, wg, ws, p;
  T key_norm = 0, z = 0;  // max(|key|, eps); sum of p

  explicit Head(int64_t N) : sim(N), wc(N), wg(N), ws(N), p(N) {}

  // mem [N, M] with row norms row_norm [N] (each max(|m_i|, eps)); key [M]; shift [S]; prev [N].
  void forward(const T* mem, const T* row_norm, const T* key, T beta, T gate, const T* shift, T gamma,
               const T* prev, int64_t N, int64_t M, int64_t S) {
    T kk = 0;
    for (int64_t c = 0; c < M; ++c) kk += key[c] * key[c];
    key_norm = std::max(std::sqrt(kk), T(kNtmCosineEps));
    T top = -std::numeric_limits<T>::infinity();
    for (int64_t i = 0; i < N; ++i) {
      const T* row = mem + i * M;
      T dot = 0;
      for (int64_t c = 0; c < M; ++c) dot += key[c] * row[c];
      sim[i] = dot / (key_norm * row_norm[i]);
      top = std::max(top, beta * sim[i]);
    }
    T total = 0;
    for (int64_t i = 0; i < N; ++i) total += (wc[i] = std::exp(beta * sim[i] - top));
    for (int64_t i = 0; i < N; ++i) {
      wc[i] /= total;
      wg[i] = gate * wc[i] + (T(1) - gate) * prev[i];
    }
    const int64_t r = (S - 1) / 2;
    z = 0;
    for (int64_t i = 0; i < N; ++i) {
      T acc = 0;
      for (int64_t s = 0; s < S; ++s) acc += shift[s] * wg[(((i - s + r) % N) + N) % N];
      ws[i] = acc;
      z += (p[i] = std::pow(acc, gamma));
    }
  }
};

template <typename T>
void row_norms(const T* mem, int64_t N, int64_t M, T* out) {
  for (int64_t i = 0; i < N; ++i) {
    T nn = 0;
    for (int64_t c = 0; c < M; ++c) nn += mem[i * M + c] * mem[i * M + c];
    out[i] = std::max(std::sqrt(nn), T(kNtmCosineEps));
  }
}

template <typename T>
void address_forward(const AddressShape& s, const T* memory, const T* key, const T* beta, const T* gate,
                     const T* shift, const T* gamma, const T* prev, T* out) {
  at::parallel_for(0, s.B, 1, [&](int64_t b0, int64_t b1) {
    Head<T> head(s.N);
    std::vector<T> norms(s.N);
    for (int64_t b = b0; b < b1; ++b) {
      const T* mem = memory + b * s.N * s.M;
      row_norms(mem, s.N, s.M, norms.data());
      for (int64_t h = 0; h < s.H; ++h) {
        const int64_t bh = b * s.H + h;
        head.forward(mem, norms.data(), key + bh * s.M, beta[bh], gate[bh], shift + bh * s.S, gamma[bh],
                     prev + bh * s.N, s.N, s.M, s.S);
        for (int64_t i = 0; i < s.N; ++i) out[bh * s.N + i] = head.p[i] / head.z;
      }
    }
  });
}

// Gradient pointers of the addressing's inputs, [B, ...] each; d_memory accumulates over the heads.
template <typename T>
struct AddressGrads {
  T *memory, *key, *beta, *gate, *shift, *gamma, *prev;
};

template <typename T>
void address_backward(const AddressShape& s, const T* grad, const T* memory, const T* key, const T* beta,
                      const T* gate, const T* shift, const T* gamma, const T* prev, const AddressGrads<T>& d) {
  at::parallel_for(0, s.B, 1, [&](int64_t b0, int64_t b1) {
    Head<T> head(s.N);
    std::vector<T> norms(s.N), dws(s.N), dwc(s.N), dz(s.N);
    const int64_t r = (s.S - 1) / 2;
    for (int64_t b = b0; b < b1; ++b) {
      const T* mem = memory + b * s.N * s.M;
      T* dmem = d.memory + b * s.N * s.M;
      row_norms(mem, s.N, s.M, norms.data());
      for (int64_t h = 0; h < s.H; ++h) {
        const int64_t bh = b * s.H + h;
        const T g = gate[bh], bt = beta[bh], gm = gamma[bh];
        const T* k = key + bh * s.M;
        const T* sh = shift + bh * s.S;
        head.forward(mem, norms.data(), k, bt, g, sh, gm, prev + bh * s.N, s.N, s.M, s.S);
        const T* gw = grad + bh * s.N;
        // w = p / z: d p_i = (gw_i - sum_j gw_j w_j) / z; p = ws^gamma
        T inner = 0;
        for (int64_t i = 0; i < s.N; ++i) inner += gw[i] * head.p[i] / head.z;
        T dgamma = 0;
        for (int64_t i = 0; i < s.N; ++i) {
          const T dp = (gw[i] - inner) / head.z;
          if (head.ws[i] > T(0)) dgamma += dp * head.p[i] * std::log(head.ws[i]);
          dws[i] = dp * gm * std::pow(head.ws[i], gm - T(1));
        }
        d.gamma[bh] = dgamma;
        // ws[i] = sum_s shift[s] wg[i - s + r]
        for (int64_t t = 0; t < s.S; ++t) {
          T acc = 0;
          for (int64_t j = 0; j < s.N; ++j) acc += head.wg[j] * dws[(((j + t - r) % s.N) + s.N) % s.N];
          d.shift[bh * s.S + t] = acc;
        }
        T dgate = 0, wc_dot = 0;
        for (int64_t j = 0; j < s.N; ++j) {
          T dwg = 0;
          for (int64_t t = 0; t < s.S; ++t) dwg += sh[t] * dws[(((j + t - r) % s.N) + s.N) % s.N];
          dwc[j] = g * dwg;
          d.prev[bh * s.N + j] = (T(1) - g) * dwg;
          dgate += (head.wc[j] - prev[bh * s.N + j]) * dwg;
          wc_dot += head.wc[j] * dwc[j];
        }
        d.gate[bh] = dgate;
        // w_c = softmax(beta sim)
        T dbeta = 0;
        for (int64_t i = 0; i < s.N; ++i) {
          dz[i] = head.wc[i] * (dwc[i] - wc_dot);
          dbeta += dz[i] * head.sim[i];
        }
        d.beta[bh] = dbeta;
        // sim_i = k . m_i / (key_norm row_norm_i); the norms are max(|.|, eps), constant below eps
        T* dk = d.key + bh * s.M;
        std::fill(dk, dk + s.M, T(0));
        const bool key_above_eps = head.key_norm > T(kNtmCosineEps);
        for (int64_t i = 0; i < s.N; ++i) {
          const T dsim = bt * dz[i];
          if (dsim == T(0)) continue;
          const T* row = mem + i * s.M;
          T* drow = dmem + i * s.M;
          const T scale = dsim / (head.key_norm * norms[i]);
          const T key_term = key_above_eps ? dsim * head.sim[i] / (head.key_norm * head.key_norm) : T(0);
          const T row_term = norms[i] > T(kNtmCosineEps) ? dsim * head.sim[i] / (norms[i] * norms[i]) : T(0);
          for (int64_t c = 0; c < s.M; ++c) {
            dk[c] += scale * row[c] - key_term * k[c];
            drow[c] += scale * k[c] - row_term * row[c];
          }
        }
      }
    }
  });
}

void check_write(const at::Tensor& memory, const at::Tensor& weights, const at::Tensor& erase, const at::Tensor& add) {
  check_dim(memory, "memory", 3, "(batch, memory_size, memory_width)");
  check_floating(memory, "memory");
  TORCH_CHECK(memory.device().is_cpu(), "memory must be on the CPU, got ", memory.device());
  const int64_t B = memory.size(0), N = memory.size(1), M = memory.size(2);
  check_shape(weights, "weights", {B, N});
  check_shape(erase, "erase", {B, M});
  check_shape(add, "add", {B, M});
  check_like(weights, "weights", memory, "memory");
  check_like(erase, "erase", memory, "memory");
  check_like(add, "add", memory, "memory");
}

}  // namespace

at::Tensor ntm_address_cpu(const at::Tensor& memory, const at::Tensor& key, const at::Tensor& beta,
                           const at::Tensor& gate, const at::Tensor& shift, const at::Tensor& gamma,
                           const at::Tensor& prev_weights) {
  const AddressShape s = check_address(memory, key, beta, gate, shift, gamma, prev_weights);
  at::Tensor out = at::empty({s.B, s.H, s.N}, memory.options());
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "ntm_address_cpu", [&] {
    using T = scalar_t;
    const at::Tensor m = memory.contiguous(), k = key.contiguous(), bt = beta.contiguous(), g = gate.contiguous(),
                     sh = shift.contiguous(), gm = gamma.contiguous(), p = prev_weights.contiguous();
    address_forward<T>(s, m.data_ptr<T>(), k.data_ptr<T>(), bt.data_ptr<T>(), g.data_ptr<T>(), sh.data_ptr<T>(),
                       gm.data_ptr<T>(), p.data_ptr<T>(), out.data_ptr<T>());
  });
  return out;
}

std::vector<at::Tensor> ntm_address_backward_cpu(const at::Tensor& grad_weights, const at::Tensor& memory,
                                                 const at::Tensor& key, const at::Tensor& beta, const at::Tensor& gate,
                                                 const at::Tensor& shift, const at::Tensor& gamma,
                                                 const at::Tensor& prev_weights) {
  const AddressShape s = check_address(memory, key, beta, gate, shift, gamma, prev_weights);
  check_shape(grad_weights, "grad_weights", {s.B, s.H, s.N});
  check_like(grad_weights, "grad_weights", memory, "memory");
  const auto opts = memory.options();
  at::Tensor d_memory = at::zeros({s.B, s.N, s.M}, opts), d_key = at::empty({s.B, s.H, s.M}, opts);
  at::Tensor d_beta = at::empty({s.B, s.H}, opts), d_gate = at::empty({s.B, s.H}, opts);
  at::Tensor d_shift = at::empty({s.B, s.H, s.S}, opts), d_gamma = at::empty({s.B, s.H}, opts);
  at::Tensor d_prev = at::empty({s.B, s.H, s.N}, opts);
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "ntm_address_backward_cpu", [&] {
    using T = scalar_t;
    const at::Tensor gw = grad_weights.contiguous(), m = memory.contiguous(), k = key.contiguous(),
                     bt = beta.contiguous(), g = gate.contiguous(), sh = shift.contiguous(), gm = gamma.contiguous(),
                     p = prev_weights.contiguous();
    const AddressGrads<T> d{d_memory.data_ptr<T>(), d_key.data_ptr<T>(), d_beta.data_ptr<T>(), d_gate.data_ptr<T>(),
                            d_shift.data_ptr<T>(), d_gamma.data_ptr<T>(), d_prev.data_ptr<T>()};
    address_backward<T>(s, gw.data_ptr<T>(), m.data_ptr<T>(), k.data_ptr<T>(), bt.data_ptr<T>(), g.data_ptr<T>(),
                        sh.data_ptr<T>(), gm.data_ptr<T>(), p.data_ptr<T>(), d);
  });
  return {d_memory, d_key, d_beta, d_gate, d_shift, d_gamma, d_prev};
}

at::Tensor ntm_write_cpu(const at::Tensor& memory, const at::Tensor& weights, const at::Tensor& erase,
                         const at::Tensor& add) {
  check_write(memory, weights, erase, add);
  const int64_t B = memory.size(0), N = memory.size(1), M = memory.size(2);
  at::Tensor out = at::empty({B, N, M}, memory.options());
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "ntm_write_cpu", [&] {
    using T = scalar_t;
    const at::Tensor m = memory.contiguous(), w = weights.contiguous(), e = erase.contiguous(), a = add.contiguous();
    const T *mp = m.data_ptr<T>(), *wp = w.data_ptr<T>(), *ep = e.data_ptr<T>(), *ap = a.data_ptr<T>();
    T* op = out.data_ptr<T>();
    at::parallel_for(0, B * N, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, M)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / N;
        const T wi = wp[r];
        const T *e_b = ep + b * M, *a_b = ap + b * M, *row = mp + r * M;
        for (int64_t c = 0; c < M; ++c) op[r * M + c] = row[c] * (T(1) - wi * e_b[c]) + wi * a_b[c];
      }
    });
  });
  return out;
}

std::vector<at::Tensor> ntm_write_backward_cpu(const at::Tensor& grad_memory, const at::Tensor& memory,
                                               const at::Tensor& weights, const at::Tensor& erase,
                                               const at::Tensor& add) {
  check_write(memory, weights, erase, add);
  const int64_t B = memory.size(0), N = memory.size(1), M = memory.size(2);
  check_shape(grad_memory, "grad_memory", {B, N, M});
  check_like(grad_memory, "grad_memory", memory, "memory");
  const auto opts = memory.options();
  at::Tensor d_memory = at::empty({B, N, M}, opts), d_weights = at::empty({B, N}, opts);
  at::Tensor d_erase = at::empty({B, M}, opts), d_add = at::empty({B, M}, opts);
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "ntm_write_backward_cpu", [&] {
    using T = scalar_t;
    const at::Tensor go = grad_memory.contiguous(), m = memory.contiguous(), w = weights.contiguous(),
                     e = erase.contiguous(), a = add.contiguous();
    const T *gp = go.data_ptr<T>(), *mp = m.data_ptr<T>(), *wp = w.data_ptr<T>(), *ep = e.data_ptr<T>(),
            *ap = a.data_ptr<T>();
    T *dm = d_memory.data_ptr<T>(), *dw = d_weights.data_ptr<T>(), *de = d_erase.data_ptr<T>(),
      *da = d_add.data_ptr<T>();
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const T *e_b = ep + b * M, *a_b = ap + b * M;
        T *de_b = de + b * M, *da_b = da + b * M;
        std::fill(de_b, de_b + M, T(0));
        std::fill(da_b, da_b + M, T(0));
        for (int64_t i = 0; i < N; ++i) {
          const int64_t r = b * N + i;
          const T wi = wp[r];
          const T *g = gp + r * M, *row = mp + r * M;
          T dwi = 0;
          for (int64_t c = 0; c < M; ++c) {
            dm[r * M + c] = g[c] * (T(1) - wi * e_b[c]);
            dwi += g[c] * (a_b[c] - e_b[c] * row[c]);
            de_b[c] -= g[c] * wi * row[c];
            da_b[c] += g[c] * wi;
          }
          dw[r] = dwi;
        }
      }
    });
  });
  return {d_memory, d_weights, d_erase, d_add};
}

}  // namespace pyseq
