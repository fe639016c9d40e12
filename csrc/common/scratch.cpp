#include "scratch.h"

namespace pyseq {

at::Tensor scratch(Scratch slot, std::initializer_list<int64_t> sizes, const at::TensorOptions& options) {
  thread_local at::Tensor buffers[3];
  int64_t numel = 1;
  for (int64_t s : sizes) numel *= s;
  if (numel * static_cast<int64_t>(options.dtype().itemsize()) > kScratchCap) return at::empty(sizes, options);
  at::Tensor& buffer = buffers[static_cast<int>(slot)];
  if (!buffer.defined() || buffer.numel() < numel || buffer.dtype() != options.dtype()) {
    buffer = at::empty({numel}, options);
  }
  return buffer.narrow(0, 0, numel).view(sizes);
}

}  // namespace pyseq
