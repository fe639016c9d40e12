// Host-side CUDA queries, compiled by nvcc without torch headers (see CMakeLists.txt: a CPU-only build
// compile-checks every .cu file, and torch's CUDA headers are not available there).
#pragma once

namespace pyseq {

// cudaRuntimeGetVersion(), e.g. 13000 for CUDA 13.0.
int cuda_runtime_version();

// The last error of the CUDA runtime on this thread as a message (and clears it), or nullptr when there is none.
// Checked after each kernel launch: a launch error (a bad configuration, no kernel image for this GPU) shows there,
// without waiting for the stream.
const char* cuda_last_error();

}  // namespace pyseq
