// The CPU kernels' addressing of one batch entry (every head; ntm_cpu.cpp), shared by the addressing ops and the
// fused step (ntm_step_cpu.cpp).
#pragma once

#include <cstdint>

#include "ntm_rows.h"

namespace pyseq {

// The weights of every head of batch entry b into a.weights (when set), v: one head's scratch rows.
void ntm_address_entry(const NtmAddressArgs<float>& a, const NtmHeadRows<float>& v, int64_t b);
void ntm_address_entry(const NtmAddressArgs<double>& a, const NtmHeadRows<double>& v, int64_t b);

// The gradients of every head of batch entry b (recomputing each head's forward first).
void ntm_address_entry_backward(const NtmAddressArgs<float>& a, const NtmHeadRows<float>& v, int64_t b);
void ntm_address_entry_backward(const NtmAddressArgs<double>& a, const NtmHeadRows<double>& v, int64_t b);

}  // namespace pyseq
