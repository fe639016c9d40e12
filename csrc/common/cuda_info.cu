#include <cuda_runtime.h>

#include "cuda_info.h"

namespace pyseq {

int cuda_runtime_version() {
  int version = 0;
  cudaRuntimeGetVersion(&version);
  return version;
}

}  // namespace pyseq
