// End-to-end memory networks (Sukhbaatar et al. 2015) as the work of one element: __host__ __device__ functions that
// the CPU kernels call in loops (memnet_cpu.cpp: one batch entry, or one range of columns, per thread) and a CUDA
// thread runs (memnet_cuda.cu: one block per batch entry for the hops, a thread per output element for the bags).
// Torch-free, so that nvcc compiles it without torch headers.
//
// The sums over sentences between the phases of a hop (the softmax's maximum and normalizer, the softmax backward's
// inner product) are the caller's, each in a fixed order (a loop on the CPU, a tree on CUDA).
#pragma once

#include <cstdint>

#include "../common/math.h"

namespace pyseq {

// The position-encoded bags of words of B x S sentences of at most W words each:
//   out[b, s, :] = sum_{j < lengths[b, s]} weights[j, :] * table[indices[b, s, j], :].
template <typename T>
struct BagArgs {
  int64_t rows, W, D, V;   // rows = B * S sentences, D the embedding size, V the table's rows
  const T* table;          // [V, D]
  const int64_t* indices;  // [rows, W]
  const T* weights;        // [W, D]
  const int64_t* lengths;  // [rows], each in [0, W]
  T* out;                  // [rows, D]
  // backward
  const T* grad;           // [rows, D]
  T* d_weights;            // [W, D]
};

// out[row, c] for the columns c in [c0, c1): the sentence's words in order, each adding its weighted vector. A CUDA
// thread takes one column; the CPU takes the whole row, vectorized over the columns (the same sums in the same order).
template <typename T>
PYSEQ_HD void bag_columns(const BagArgs<T>& a, int64_t row, int64_t c0, int64_t c1) {
  T* out = a.out + row * a.D;
  for (int64_t c = c0; c < c1; ++c) out[c] = 0;
  const int64_t* idx = a.indices + row * a.W;
  for (int64_t j = 0; j < a.lengths[row]; ++j) {
    const T* weight = a.weights + j * a.D;
    const T* vector = a.table + idx[j] * a.D;
    for (int64_t c = c0; c < c1; ++c) out[c] += weight[c] * vector[c];
  }
}

// d_weights[j, c] for c in [c0, c1): over the sentences that have a word j, in order, grad times that word's vector.
template <typename T>
PYSEQ_HD void bag_weight_gradient_columns(const BagArgs<T>& a, int64_t j, int64_t c0, int64_t c1) {
  T* d = a.d_weights + j * a.D;
  for (int64_t c = c0; c < c1; ++c) d[c] = 0;
  for (int64_t row = 0; row < a.rows; ++row) {
    if (j >= a.lengths[row]) continue;
    const T* grad = a.grad + row * a.D;
    const T* vector = a.table + a.indices[row * a.W + j] * a.D;
    for (int64_t c = c0; c < c1; ++c) d[c] += grad[c] * vector[c];
  }
}

// The table's gradient, row by row: the word positions p = row * W + j (j < lengths[row]) sorted by the word they
// hold, in their order within each word (a stable sort), each word's run [first[u], first[u] + count[u]).
template <typename T>
struct BagTableGradientArgs {
  int64_t words, D;        // words: how many distinct words the sentences hold
  const int64_t* word;     // [words]: the table row of each
  const int64_t* first;    // [words]
  const int64_t* count;    // [words]
  const int64_t* position; // the sorted word positions
  int64_t W;
  const T* weights;        // [W, D]
  const T* grad;           // [rows, D]
  T* d_table;              // [V, D], rows no sentence uses left as they are (zero)
};

// d_table[word[u], c] for c in [c0, c1): over the positions p of word u, in order, weights[p % W] * grad[p / W].
template <typename T>
PYSEQ_HD void bag_table_gradient_columns(const BagTableGradientArgs<T>& a, int64_t u, int64_t c0, int64_t c1) {
  T* d = a.d_table + a.word[u] * a.D;
  for (int64_t c = c0; c < c1; ++c) d[c] = 0;
  for (int64_t e = a.first[u]; e < a.first[u] + a.count[u]; ++e) {
    const int64_t p = a.position[e];
    const T* weight = a.weights + (p % a.W) * a.D;
    const T* grad = a.grad + (p / a.W) * a.D;
    for (int64_t c = c0; c < c1; ++c) d[c] += weight[c] * grad[c];
  }
}

// K hops of attention over S memories of size D, per batch entry b:
//   scores_i = m_i . u_k (m_i: memory_in of hop k, sentence i), p = softmax over the sentences the mask keeps (or
//   the scores themselves, 0 where the mask drops a sentence, without the softmax),
//   o = sum_i p_i c_i (c_i: memory_out of hop k), u_{k+1} = H u_k + o (or u_k + o without H).
// A batch entry whose mask keeps no sentence reads nothing: p = 0, o = 0.
template <typename T>
struct HopArgs {
  int64_t K, B, S, D;
  const T* memory_in;    // [K or 1, B, S, D]
  const T* memory_out;   // the same shape
  int64_t hop_stride;    // B S D, or 0: every hop reads the same memories
  const uint8_t* mask;   // [B, S], nonzero = keep; nullptr: every sentence
  const T* H;            // [D, D] or nullptr
  bool softmax;          // false: p = the scores (0 where the mask drops a sentence), the paper's linear start
  T* states;             // [K + 1, B, D]: u_0 (the query) .. u_K
  T* weights;            // [K, B, S]: p of every hop
  // backward
  const T* grad_states;  // [K + 1, B, D]: the incoming gradients of the states
  const T* grad_weights; // [K, B, S] or nullptr
  T* d_states;           // [K, B, D]: d loss / d u_{k+1} of each hop, all paths (the H gradient's GEMM reads them)
  T* d_query;            // [B, D]: d loss / d u_0
  T* d_memory_in;        // like memory_in (summed over the hops where they share it)
  T* d_memory_out;
};

template <typename T>
PYSEQ_HD const T* hop_memory_in(const HopArgs<T>& a, int64_t k, int64_t b) {
  return a.memory_in + k * a.hop_stride + b * a.S * a.D;
}
template <typename T>
PYSEQ_HD const T* hop_memory_out(const HopArgs<T>& a, int64_t k, int64_t b) {
  return a.memory_out + k * a.hop_stride + b * a.S * a.D;
}
template <typename T>
PYSEQ_HD bool hop_keeps(const HopArgs<T>& a, int64_t b, int64_t i) {
  return a.mask == nullptr || a.mask[b * a.S + i] != 0;
}

// The score of sentence i at hop k (-inf where the mask drops it).
template <typename T>
PYSEQ_HD T hop_score(const HopArgs<T>& a, int64_t k, int64_t b, int64_t i) {
  if (!hop_keeps(a, b, i)) return -std::numeric_limits<T>::infinity();
  const T* m = hop_memory_in(a, k, b) + i * a.D;
  const T* u = a.states + (k * a.B + b) * a.D;
  T sum = 0;
  for (int64_t c = 0; c < a.D; ++c) sum += m[c] * u[c];
  return sum;
}

// Without the softmax, the weight is the score; 0 where the mask drops the sentence.
template <typename T>
PYSEQ_HD T hop_linear(T score) {
  return score == -std::numeric_limits<T>::infinity() ? T(0) : score;
}

// exp(score - top), the unnormalized weight; 0 where the mask drops the sentence.
template <typename T>
PYSEQ_HD T hop_unnormalized(T score, T top) {
  return score == -std::numeric_limits<T>::infinity() ? T(0) : exp_or_zero(score - top);
}

// u_{k+1}[c] for c in [c0, c1), from the weights of hop k (normalized): o (the sentences in order) plus H u_k (the
// elements of u_k in order), or plus u_k.
template <typename T>
PYSEQ_HD void hop_update_columns(const HopArgs<T>& a, int64_t k, int64_t b, int64_t c0, int64_t c1) {
  const T* p = a.weights + (k * a.B + b) * a.S;
  const T* out = hop_memory_out(a, k, b);
  const T* u = a.states + (k * a.B + b) * a.D;
  T* next = a.states + ((k + 1) * a.B + b) * a.D;
  for (int64_t c = c0; c < c1; ++c) next[c] = 0;
  for (int64_t i = 0; i < a.S; ++i) {
    for (int64_t c = c0; c < c1; ++c) next[c] += p[i] * out[i * a.D + c];
  }
  for (int64_t c = c0; c < c1; ++c) {
    T carried = u[c];
    if (a.H != nullptr) {
      carried = 0;
      for (int64_t l = 0; l < a.D; ++l) carried += a.H[c * a.D + l] * u[l];
    }
    next[c] += carried;
  }
}

// Backward of hop k, given du = d loss / d u_{k+1} [D] (in a.d_states): d loss / d p_i = c_i . du + grad_weights.
template <typename T>
PYSEQ_HD T hop_weight_gradient(const HopArgs<T>& a, int64_t k, int64_t b, int64_t i) {
  const T* out = hop_memory_out(a, k, b) + i * a.D;
  const T* du = a.d_states + (k * a.B + b) * a.D;
  T sum = a.grad_weights != nullptr ? a.grad_weights[(k * a.B + b) * a.S + i] : T(0);
  for (int64_t c = 0; c < a.D; ++c) sum += out[c] * du[c];
  return sum;
}

// d loss / d score_i from dp = d loss / d p_i: through the softmax, p_i (dp - inner) with inner = sum_l p_l dp_l;
// without it, dp itself where the mask keeps the sentence.
template <typename T>
PYSEQ_HD T hop_score_gradient(const HopArgs<T>& a, int64_t b, int64_t i, T p, T dp, T inner) {
  if (a.softmax) return p * (dp - inner);
  return hop_keeps(a, b, i) ? dp : T(0);
}

// The memories' gradients of sentence i, element c, at hop k: d c_i = p_i du, d m_i = ds_i u_k, added to what the
// later hops left where the hops share the memories (the backward runs the hops last first). ds: d loss / d score_i.
template <typename T>
PYSEQ_HD void hop_memory_gradients(const HopArgs<T>& a, int64_t k, int64_t b, int64_t i, int64_t c, T ds) {
  const bool first_write = a.hop_stride != 0 || k == a.K - 1;
  const int64_t e = (a.hop_stride == 0 ? 0 : k * a.B * a.S * a.D) + (b * a.S + i) * a.D + c;
  const T p = a.weights[(k * a.B + b) * a.S + i];
  const T d_out = p * a.d_states[(k * a.B + b) * a.D + c];
  const T d_in = ds * a.states[(k * a.B + b) * a.D + c];
  a.d_memory_out[e] = first_write ? d_out : a.d_memory_out[e] + d_out;
  a.d_memory_in[e] = first_write ? d_in : a.d_memory_in[e] + d_in;
}

// d loss / d u_k [c] for c in [c0, c1) into out: (H^T du)[c] (the elements of du in order; du[c] without H) +
// sum_i ds_i m_i[c] (the sentences in order) + grad_states[k, b, c], du the gradient of u_{k+1}. ds: [S].
template <typename T>
PYSEQ_HD void hop_state_gradient_columns(const HopArgs<T>& a, int64_t k, int64_t b, const T* ds, T* out, int64_t c0,
                                         int64_t c1) {
  const T* du = a.d_states + (k * a.B + b) * a.D;
  if (a.H != nullptr) {
    for (int64_t c = c0; c < c1; ++c) out[c] = 0;
    for (int64_t l = 0; l < a.D; ++l) {
      for (int64_t c = c0; c < c1; ++c) out[c] += a.H[l * a.D + c] * du[l];
    }
  } else {
    for (int64_t c = c0; c < c1; ++c) out[c] = du[c];
  }
  const T* m = hop_memory_in(a, k, b);
  for (int64_t i = 0; i < a.S; ++i) {
    for (int64_t c = c0; c < c1; ++c) out[c] += ds[i] * m[i * a.D + c];
  }
  const T* grad = a.grad_states + (k * a.B + b) * a.D;
  for (int64_t c = c0; c < c1; ++c) out[c] += grad[c];
}

// Where hop_state_gradient_columns writes: the gradient of u_{k+1} of the hop before (k > 0), or of the query's.
template <typename T>
PYSEQ_HD T* hop_state_gradient_out(const HopArgs<T>& a, int64_t k, int64_t b) {
  return k > 0 ? a.d_states + ((k - 1) * a.B + b) * a.D : a.d_query + b * a.D;
}

}  // namespace pyseq
