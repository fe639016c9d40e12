// The CTC ops (Graves et al. 2006), called through the dispatcher: each function runs pyseq::<its name> on the
// kernel of its tensors' device. Schemas and the loss's autograd: ctc_ops.cpp; kernels: ctc_cpu.cpp,
// ctc_decode_cpu.cpp, ctc_cuda.cpp.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace pyseq {

// log_probs: [T, N, C] float32/float64 (16-bit computed in float32); targets: [N, S] padded or
// [sum(target_lengths)] concatenated, int64; input_lengths, target_lengths: [N] int64.
// Returns nll: [N] (-log p(target | input), +inf where no alignment exists) and log_alpha: [N, T, 2 * S_max + 1]
// (the forward variables, kept for the backward; -inf outside each sequence's lattice).
std::tuple<at::Tensor, at::Tensor> ctc_loss(const at::Tensor& log_probs, const at::Tensor& targets,
                                            const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                            int64_t blank);

// grad_nll: [N]. Returns d(sum_n grad_nll[n] * nll[n]) / d log_probs: [T, N, C], which is -grad_nll[n] times the
// posterior occupancy of each (t, class): the gradient with respect to the log-probs as given (not torch's
// exp(log_probs) - posterior, which is only right after a log_softmax). Sequences with an infinite nll get a zero
// gradient.
at::Tensor ctc_loss_backward(const at::Tensor& grad_nll, const at::Tensor& log_probs, const at::Tensor& targets,
                             const at::Tensor& input_lengths, const at::Tensor& target_lengths, const at::Tensor& nll,
                             const at::Tensor& log_alpha, int64_t blank);

// Best-path decoding: per frame the most likely class, repeats collapsed, blanks removed. log_probs: [T, N, C];
// input_lengths: [N] int64. Returns tokens: [N, T] int64, the class ids of each sequence first, then -1; and
// counts: [N] int64, how many each sequence has.
std::tuple<at::Tensor, at::Tensor> ctc_greedy_decode(const at::Tensor& log_probs, const at::Tensor& input_lengths,
                                                     int64_t blank);

// Viterbi alignment over the CTC topology for a batch. targets: [N, S] int64 padded. Returns labels: [N, T] int64
// (the class each frame is aligned to; blank past each input's length) and scores: [N, T] (the log-prob of that
// class at that frame; 0 past the length). Raises ValueError when a target cannot be aligned.
std::tuple<at::Tensor, at::Tensor> ctc_forced_align(const at::Tensor& log_probs, const at::Tensor& targets,
                                                    const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                                    int64_t blank);

}  // namespace pyseq
