// Host-side CUDA queries, compiled by nvcc without torch headers (see CMakeLists.txt: a CPU-only build
// compile-checks every .cu file, and torch's CUDA headers are not available there).
#pragma once

namespace pyseq {

// cudaRuntimeGetVersion(), e.g. 13000 for CUDA 13.0.
int cuda_runtime_version();

}  // namespace pyseq
