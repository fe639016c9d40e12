// The CPU kernels' addressing of one batch entry (every head; ntm_cpu.cpp), shared by the addressing ops and the
// fused step (ntm_step_cpu.cpp).
#pragma once

#include <cstdint>
#include <vector>

#include "ntm_rows.h"

namespace pyseq {

// A thread's scratch for a batch entry's addressing: one head's rows, and every head's dot products with the
// entry's memory rows ([H, N]) beside the rows' squared norms ([N]), computed in one pass over the memory.
template <typename T>
struct NtmEntryScratch {
  std::vector<T> buffer;
  NtmHeadRows<T> v;
  T *dots, *sq;
  NtmEntryScratch(int64_t N, int64_t H)
      : buffer((kNtmHeadVectors + H + 1) * N),
        v(buffer.data(), N),
        dots(buffer.data() + kNtmHeadVectors * N),
        sq(dots + H * N) {}
};

// The weights of every head of batch entry b into a.weights (when set).
void ntm_address_entry(const NtmAddressArgs<float>& a, const NtmEntryScratch<float>& s, int64_t b);
void ntm_address_entry(const NtmAddressArgs<double>& a, const NtmEntryScratch<double>& s, int64_t b);

// The gradients of every head of batch entry b (recomputing each head's forward first).
void ntm_address_entry_backward(const NtmAddressArgs<float>& a, const NtmEntryScratch<float>& s, int64_t b);
void ntm_address_entry_backward(const NtmAddressArgs<double>& a, const NtmEntryScratch<double>& s, int64_t b);

}  // namespace pyseq
