// The Clockwork RNN's time loops on the CPU (clockwork_cpu.cpp) as the `Kernels` of clockwork_schedule.h, for the
// Clockwork RNN's ops and for the SCRN's hidden layer (csrc/scrn).
#pragma once

#include <ATen/ATen.h>

#include "clockwork_elements.h"

namespace pyseq {

struct ClockworkCpuKernels {
  c10::DeviceType device() const { return c10::DeviceType::CPU; }
  at::Tensor lengths_on_device(const at::Tensor& lengths, const at::Tensor&) const { return lengths; }
  void forward(const ClockworkArgs<float>& a) const;
  void forward(const ClockworkArgs<double>& a) const;
  void backward(const ClockworkArgs<float>& a) const;
  void backward(const ClockworkArgs<double>& a) const;
};

}  // namespace pyseq
