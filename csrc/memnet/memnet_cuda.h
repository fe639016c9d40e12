// Launchers of the memory-network CUDA kernels (csrc/memnet/memnet_cuda.cu), queued on `stream` (a cudaStream_t).
// Torch-free: the glue (memnet_cuda.cpp) passes device pointers.
#pragma once

#include "memnet_elements.h"

namespace pyseq {

// The most sentences the hops' kernels take: a block keeps a value per sentence in shared memory.
constexpr int64_t kMemnetCudaMaxSentences = 4096;

#define PYSEQ_DECLARE_MEMNET_LAUNCHERS(T)                                                                      \
  /* The bags a.out: a thread per output element. */                                                         \
  void launch_bag(const BagArgs<T>& a, void* stream);                                                         \
  /* The position weights' gradient a.d_weights: a thread per element. */                                     \
  void launch_bag_weight_gradients(const BagArgs<T>& a, void* stream);                                        \
  /* The table's gradient, the rows of the words the sentences hold: a thread per element. */                 \
  void launch_bag_table_gradient(const BagTableGradientArgs<T>& a, void* stream);                             \
  /* The hops: a block per batch entry. */                                                                    \
  void launch_hops(const HopArgs<T>& a, void* stream);                                                        \
  /* The hops' backward: a block per batch entry, the hops last first. */                                     \
  void launch_hops_backward(const HopArgs<T>& a, void* stream);
PYSEQ_DECLARE_MEMNET_LAUNCHERS(float)
PYSEQ_DECLARE_MEMNET_LAUNCHERS(double)
#undef PYSEQ_DECLARE_MEMNET_LAUNCHERS

}  // namespace pyseq
