// Launchers of the NTM CUDA kernels (csrc/ntm/ntm_cuda.cu), queued on `stream` (a cudaStream_t). Torch-free: the glue
// (ntm_cuda.cpp) fills the argument structs of ntm_rows.h with device pointers.
#pragma once

#include "ntm_rows.h"

namespace pyseq {

#define PYSEQ_DECLARE_NTM_LAUNCHERS(T)                                                                           \
  /* The addressing of every head into a.weights; scratch: [B, kNtmHeadVectors, N]. */                         \
  void launch_ntm_address(const NtmAddressArgs<T>& a, T* scratch, void* stream);                                \
  /* Its gradients; scratch as above. */                                                                        \
  void launch_ntm_address_backward(const NtmAddressArgs<T>& a, T* scratch, void* stream);                       \
  /* The new memory into a.out. */                                                                              \
  void launch_ntm_write(const NtmWriteArgs<T>& a, void* stream);                                                \
  /* The write's gradients. */                                                                                   \
  void launch_ntm_write_backward(const NtmWriteArgs<T>& a, void* stream);
PYSEQ_DECLARE_NTM_LAUNCHERS(float)
PYSEQ_DECLARE_NTM_LAUNCHERS(double)
#undef PYSEQ_DECLARE_NTM_LAUNCHERS

}  // namespace pyseq
