// One step of an NTM's heads on the CPU, fused: per batch entry (one per thread), the activations of the heads'
// parameters, the addressing of every head (ntm_cpu.cpp's head loops over the row functions of ntm_rows.h), the
// reads and the writes, then in the backward all of their gradients, in loops over the entry's rows: no ATen op
// between the phases, no intermediate tensor. (The CUDA kernel is the composite of ntm_step.cpp.)
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../common/checks.h"
#include "../common/float32_compute.h"
#include "../common/math.h"
#include "ntm.h"
#include "ntm_cpu_heads.h"

namespace pyseq {
namespace {

// softplus as torch.nn.functional.softplus's defaults, and its slope.
template <typename T>
T softplus(T x) {
  return x > T(kNtmSoftplusThreshold) ? x : std::log1p(std::exp(x));
}
template <typename T>
T softplus_slope(T x) {
  return x > T(kNtmSoftplusThreshold) ? T(1) : T(1) / (T(1) + std::exp(-x));
}
template <typename T>
T logistic(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// One batch entry's activated head parameters, and the addressing arguments of that entry (a batch of one).
template <typename T>
struct EntryHeads {
  const NtmStepShape& s;
  std::vector<T> key, beta, gate, gamma, shift, erase, add;  // [H, M], [H] x 3, [H, S], [W, M] x 2

  explicit EntryHeads(const NtmStepShape& shape)
      : s(shape),
        key(shape.heads() * shape.M),
        beta(shape.heads()),
        gate(shape.heads()),
        gamma(shape.heads()),
        shift(shape.heads() * shape.S),
        erase(shape.W * shape.M),
        add(shape.W * shape.M) {}

  // params: the entry's row (see ntm.h for its layout).
  void activate(const T* params) {
    const int64_t M = s.M, S = s.S;
    for (int64_t h = 0; h < s.heads(); ++h) {
      const T* p = params + h * s.per_head();
      std::copy(p, p + M, key.begin() + h * M);
      beta[h] = softplus(p[M]);
      gate[h] = logistic(p[M + 1]);
      gamma[h] = 1 + softplus(p[M + 2]);
      const T* logits = p + M + 3;
      const T top = *std::max_element(logits, logits + S);
      T total = 0;
      for (int64_t t = 0; t < S; ++t) total += (shift[h * S + t] = std::exp(logits[t] - top));
      for (int64_t t = 0; t < S; ++t) shift[h * S + t] /= total;
    }
    const T* ea = params + s.heads() * s.per_head();
    for (int64_t w = 0; w < s.W; ++w) {
      for (int64_t c = 0; c < M; ++c) {
        erase[w * M + c] = logistic(ea[(2 * w) * M + c]);
        add[w * M + c] = std::tanh(ea[(2 * w + 1) * M + c]);
      }
    }
  }

  NtmAddressArgs<T> address_args(const T* memory, const T* prev) const {
    NtmAddressArgs<T> a{};
    a.B = 1, a.N = s.N, a.M = s.M, a.H = s.heads(), a.S = s.S;
    a.memory = memory;
    a.key = key.data();
    a.beta = beta.data();
    a.gate = gate.data();
    a.gamma = gamma.data();
    a.shift = shift.data();
    a.prev = prev;
    return a;
  }

  // Write head w of the entry: from memory `from` to `to` (which may be `from`: each row reads its own row only).
  NtmWriteArgs<T> write_args(int64_t w, const T* weights, const T* from, T* to) const {
    NtmWriteArgs<T> a{};
    a.B = 1, a.N = s.N, a.M = s.M;
    a.memory = from;
    a.weights = weights + (s.R + w) * s.N;  // a batch of one: weights_stride unused
    a.erase = erase.data() + w * s.M;
    a.add = add.data() + w * s.M;
    a.out = to;
    return a;
  }
};

template <typename T>
void step_forward(const NtmStepShape& s, const T* memory, const T* params, const T* prev, T* weights, T* reads,
                  T* written) {
  const int64_t N = s.N, M = s.M, NM = N * M, H = s.heads(), P = H * s.per_head() + s.W * 2 * M;
  at::parallel_for(0, s.B, 1, [&](int64_t b0, int64_t b1) {
    EntryHeads<T> e(s);
    NtmEntryScratch<T> scratch(N, H);  // written through its pointers
    for (int64_t b = b0; b < b1; ++b) {
      const T *mem = memory + b * NM, *w = weights + b * H * N;
      e.activate(params + b * P);
      NtmAddressArgs<T> a = e.address_args(mem, prev + b * H * N);
      a.weights = weights + b * H * N;
      ntm_address_entry(a, scratch, 0);
      T* read = reads + b * s.R * M;  // weights[:R] @ memory, each sum over the rows in row order
      std::fill(read, read + s.R * M, T(0));
      for (int64_t r = 0; r < s.R; ++r) {
        for (int64_t i = 0; i < N; ++i) {
          for (int64_t c = 0; c < M; ++c) read[r * M + c] += w[r * N + i] * mem[i * M + c];
        }
      }
      T* out = written + b * NM;
      if (s.W == 0) std::copy(mem, mem + NM, out);
      for (int64_t k = 0; k < s.W; ++k) {
        const NtmWriteArgs<T> wa = e.write_args(k, w, k == 0 ? mem : out, out);
        for (int64_t i = 0; i < N; ++i) ntm_write_row(wa, 0, i);
      }
    }
  });
}

template <typename T>
struct StepGrads {
  const T *grad_weights, *grad_reads, *grad_memory;  // [B, H, N], [B, R, M], [B, N, M]
  T *d_memory, *d_params, *d_prev;                   // [B, N, M], [B, P], [B, H, N]
};

template <typename T>
void step_backward(const NtmStepShape& s, const T* memory, const T* params, const T* prev, const T* weights,
                   const StepGrads<T>& g) {
  const int64_t N = s.N, M = s.M, NM = N * M, H = s.heads(), S = s.S, R = s.R, W = s.W;
  const int64_t P = H * s.per_head() + W * 2 * M;
  at::parallel_for(0, s.B, 1, [&](int64_t b0, int64_t b1) {
    EntryHeads<T> e(s);
    NtmEntryScratch<T> scratch(N, H);  // written through its pointers
    std::vector<T> given(std::max<int64_t>(W - 1, 0) * NM), grad_in(NM), d_write_weights(N);
    std::vector<T> d_weights(H * N), d_key(H * M), d_beta(H), d_gate(H), d_gamma(H), d_shift(H * S);
    std::vector<T> d_erase(W * M), d_add(W * M);
    for (int64_t b = b0; b < b1; ++b) {
      const T *mem = memory + b * NM, *w = weights + b * H * N, *param = params + b * P;
      e.activate(param);
      // The memories the writes were given: the entry's memory, then each write's result but the last.
      for (int64_t k = 0; k + 1 < W; ++k) {
        const NtmWriteArgs<T> wa = e.write_args(k, w, k == 0 ? mem : given.data() + (k - 1) * NM,
                                                given.data() + k * NM);
        for (int64_t i = 0; i < N; ++i) ntm_write_row(wa, 0, i);
      }
      // The writes, last first: the memory's gradient passes from grad_in to d_mem (and back, for the next).
      T* d_mem = g.d_memory + b * NM;
      std::copy(g.grad_memory + b * NM, g.grad_memory + (b + 1) * NM, d_mem);
      std::copy(g.grad_weights + b * H * N, g.grad_weights + (b + 1) * H * N, d_weights.begin());
      for (int64_t k = W - 1; k >= 0; --k) {
        std::copy(d_mem, d_mem + NM, grad_in.begin());
        NtmWriteArgs<T> wa = e.write_args(k, w, k == 0 ? mem : given.data() + (k - 1) * NM, nullptr);
        wa.grad = grad_in.data();
        wa.d_memory = d_mem;
        wa.d_weights = d_write_weights.data();
        wa.d_erase = d_erase.data() + k * M;
        wa.d_add = d_add.data() + k * M;
        ntm_write_backward_entry(wa, 0);
        for (int64_t i = 0; i < N; ++i) d_weights[(R + k) * N + i] += d_write_weights[i];
      }
      // reads = weights[:R] @ memory
      const T* grad_read = g.grad_reads + b * R * M;
      for (int64_t r = 0; r < R; ++r) {
        for (int64_t i = 0; i < N; ++i) {
          const T wi = w[r * N + i];
          T dw = 0;
          for (int64_t c = 0; c < M; ++c) {
            dw += grad_read[r * M + c] * mem[i * M + c];
            d_mem[i * M + c] += wi * grad_read[r * M + c];
          }
          d_weights[r * N + i] += dw;
        }
      }
      // The addressing, its memory gradient added to d_mem.
      NtmAddressArgs<T> a = e.address_args(mem, prev + b * H * N);
      a.grad = d_weights.data();
      a.d_memory = d_mem;
      a.add_memory_gradient = true;
      a.d_key = d_key.data();
      a.d_beta = d_beta.data();
      a.d_gate = d_gate.data();
      a.d_gamma = d_gamma.data();
      a.d_shift = d_shift.data();
      a.d_prev = g.d_prev + b * H * N;
      ntm_address_entry_backward(a, scratch, 0);
      // The activations.
      T* d_param = g.d_params + b * P;
      for (int64_t h = 0; h < H; ++h) {
        const T* p = param + h * s.per_head();
        T* d = d_param + h * s.per_head();
        std::copy(d_key.begin() + h * M, d_key.begin() + (h + 1) * M, d);
        d[M] = d_beta[h] * softplus_slope(p[M]);
        d[M + 1] = d_gate[h] * e.gate[h] * (T(1) - e.gate[h]);
        d[M + 2] = d_gamma[h] * softplus_slope(p[M + 2]);
        const T* sh = e.shift.data() + h * S;
        T inner = 0;
        for (int64_t t = 0; t < S; ++t) inner += d_shift[h * S + t] * sh[t];
        for (int64_t t = 0; t < S; ++t) d[M + 3 + t] = sh[t] * (d_shift[h * S + t] - inner);
      }
      T* d_ea = d_param + H * s.per_head();
      for (int64_t k = 0; k < W; ++k) {
        for (int64_t c = 0; c < M; ++c) {
          const T er = e.erase[k * M + c], ad = e.add[k * M + c];
          d_ea[(2 * k) * M + c] = d_erase[k * M + c] * er * (T(1) - er);
          d_ea[(2 * k + 1) * M + c] = d_add[k * M + c] * (T(1) - ad * ad);
        }
      }
    }
  });
}

NtmStepTensors ntm_step_cpu(const at::Tensor& memory, const at::Tensor& params, const at::Tensor& prev_weights,
                            int64_t read_heads, int64_t write_heads) {
  const NtmStepShape s = check_ntm_step(memory, params, read_heads, write_heads);
  check_floating(memory, "memory");
  check_shape(prev_weights, "prev_weights", {s.B, s.heads(), s.N});
  check_like(prev_weights, "prev_weights", memory, "memory");
  const auto opts = memory.options();
  at::Tensor weights = at::empty({s.B, s.heads(), s.N}, opts), reads = at::empty({s.B, s.R, s.M}, opts);
  at::Tensor written = at::empty({s.B, s.N, s.M}, opts);
  const at::Tensor m = memory.contiguous(), p = params.contiguous(), prev = prev_weights.contiguous();
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "ntm_step_cpu", [&] {
    step_forward<scalar_t>(s, m.data_ptr<scalar_t>(), p.data_ptr<scalar_t>(), prev.data_ptr<scalar_t>(),
                           weights.data_ptr<scalar_t>(), reads.data_ptr<scalar_t>(), written.data_ptr<scalar_t>());
  });
  return {weights, reads, written};
}

NtmStepTensors ntm_step_backward_cpu(const at::Tensor& grad_weights, const at::Tensor& grad_reads,
                                     const at::Tensor& grad_memory, const at::Tensor& memory,
                                     const at::Tensor& params, const at::Tensor& prev_weights,
                                     const at::Tensor& weights, int64_t read_heads, int64_t write_heads) {
  const NtmStepShape s = check_ntm_step(memory, params, read_heads, write_heads);
  check_floating(memory, "memory");
  for (const auto& [t, name, shape] :
       {std::tuple<const at::Tensor&, const char*, std::vector<int64_t>>{prev_weights, "prev_weights",
                                                                         {s.B, s.heads(), s.N}},
        {weights, "weights", {s.B, s.heads(), s.N}},
        {grad_weights, "grad_weights", {s.B, s.heads(), s.N}},
        {grad_reads, "grad_reads", {s.B, s.R, s.M}},
        {grad_memory, "grad_memory", {s.B, s.N, s.M}}}) {
    check_shape(t, name, shape);
    check_like(t, name, memory, "memory");
  }
  const auto opts = memory.options();
  at::Tensor d_memory = at::empty({s.B, s.N, s.M}, opts), d_params = at::empty(params.sizes(), opts);
  at::Tensor d_prev = at::empty({s.B, s.heads(), s.N}, opts);
  const at::Tensor m = memory.contiguous(), p = params.contiguous(), prev = prev_weights.contiguous(),
                   w = weights.contiguous(), gw = grad_weights.contiguous(), gr = grad_reads.contiguous(),
                   gm = grad_memory.contiguous();
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "ntm_step_backward_cpu", [&] {
    using T = scalar_t;
    const StepGrads<T> g{gw.data_ptr<T>(),       gr.data_ptr<T>(),       gm.data_ptr<T>(),
                         d_memory.data_ptr<T>(), d_params.data_ptr<T>(), d_prev.data_ptr<T>()};
    step_backward<T>(s, m.data_ptr<T>(), p.data_ptr<T>(), prev.data_ptr<T>(), w.data_ptr<T>(), g);
  });
  return {d_memory, d_params, d_prev};
}

}  // namespace
}  // namespace pyseq

TORCH_LIBRARY_IMPL(pyseq, CPU, m) {
  m.impl("ntm_step", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::ntm_step_cpu));
  m.impl("ntm_step_backward", PYSEQ_INPUT_DTYPE_RESULTS(pyseq::ntm_step_backward_cpu));
}
