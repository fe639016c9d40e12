// What the CUDA emulator tells the Python bindings (plain C++: no CUDA names).
#pragma once

#include <string>
#include <vector>

namespace pyseq_emulation {

// The names of the kernels launched since the last forget_launched_kernels() (or the start), sorted.
std::vector<std::string> launched_kernels();
void forget_launched_kernels();

}  // namespace pyseq_emulation
