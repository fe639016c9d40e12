// The pybind11 module for what is not a torch op: build information, kernel switches, and the decoders that return
// Python objects or lists. The ops are registered with torch in each family's <family>_ops.cpp.
#include <torch/extension.h>

#include "common/cpu_dispatch.h"
#include "common/parallel.h"
#include "common/scratch.h"
#include "ctc/ctc.h"
#include "rnn/packed_cpu.h"
#include "rnn/rnn.h"

#ifdef PYSEQ_WITH_CUDA
#include "common/cuda_info.h"
#endif
#ifdef PYSEQ_CUDA_EMULATION
#include "common/cuda_emulation/introspection.h"
#endif

namespace py = pybind11;

namespace {

void register_build_info(py::module_& m) {
  m.attr("built_for_torch") = PYSEQ_TORCH_VERSION;  // torch.__version__ of the torch this build compiled against
  m.def("usable_cores", &pyseq::usable_cores,
        "The cores this process may run on (CPU affinity and cgroup quota): the most threads a recurrent layer's "
        "thread team uses, whatever torch.get_num_threads() says.");
  m.def("team_barrier_check", &pyseq::team_barrier_check, py::call_guard<py::gil_scoped_release>(),
        "Test hook: rounds of the thread team's barrier on plain threads; returns how many went wrong.");
  m.def("cpu_isa", &pyseq::cpu_isa, "The ISA the CPU kernels' runtime dispatch picked: avx512, avx2 or baseline.");
  m.def("set_avx512_helpers", &pyseq::set_avx512_helpers,
        "Switch the AVX-512 intrinsic helpers off or on (tests: cover the portable paths on an AVX-512 machine).");
  m.def("set_scratch_limit", &pyseq::set_scratch_limit,
        "Bound the bytes of scratch buffers that threads keep between calls (all threads together).");
  m.def("scratch_limit", &pyseq::scratch_limit, "The bound of set_scratch_limit, in bytes.");
  m.def("scratch_bytes", &pyseq::scratch_bytes, "Bytes of scratch buffers kept between calls now.");
  m.def("release_scratch", &pyseq::release_scratch, "Free the scratch buffers every thread keeps between calls.");
#if defined(PYSEQ_CUDA_EMULATION)
  // The CUDA glue and kernels run on the CPU through the emulator, as the pyseq_emulated ops (make cuda-emulate).
  m.attr("with_cuda") = false;
  m.attr("cuda_emulation") = true;
  m.def("cuda_emulation_launched_kernels", &pyseq_emulation::launched_kernels,
        "The names of the CUDA kernels the emulator ran since the last cuda_emulation_forget_launched_kernels().");
  m.def("cuda_emulation_forget_launched_kernels", &pyseq_emulation::forget_launched_kernels);
#elif defined(PYSEQ_WITH_CUDA)
  m.attr("with_cuda") = true;
  m.attr("cuda_emulation") = false;
  m.def("cuda_runtime_version", &pyseq::cuda_runtime_version, "CUDA runtime version pyseq was built against.");
#else
  m.attr("with_cuda") = false;
  m.attr("cuda_emulation") = false;
#endif
}

void register_rnn(py::module_& m) {
  m.def(
      "rnn_workspace_columns",
      [](int64_t mode, int64_t H, int64_t Hr) {
        return pyseq::rnn_workspace_columns(static_cast<pyseq::CellMode>(mode), H, Hr);
      },
      "Columns of the saved-for-backward workspace of pyseq::rnn_layer.");
  m.def("set_cuda_recurrent_kernel", &pyseq::set_cuda_recurrent_kernel,
        "The forward of the CUDA recurrent layers: steps (default) or persistent (small batches).");
  m.def("cuda_recurrent_kernel", &pyseq::cuda_recurrent_kernel_name, "The CUDA recurrent-kernel setting.");
  m.def("set_recurrent_kernel", &pyseq::set_recurrent_kernel,
        "Force the CPU recurrent kernel: auto, aten, portable, avx2 or avx512 (for tests and measurements).");
  m.def("recurrent_kernel", &pyseq::recurrent_kernel_name, "The recurrent-kernel setting.");
  m.def("set_bf16_recurrent_kernel", &pyseq::set_bf16_recurrent_kernel,
        "What bfloat16 recurrent layers run on the CPU: auto, avx512_bf16 or float32 (tests and measurements).");
  m.def("bf16_recurrent_kernel", &pyseq::bf16_recurrent_kernel,
        "What a bfloat16 recurrent layer without projection runs: avx512_bf16 or float32.");
  m.def(
      "recurrent_kernel_in_use",
      [] { return std::string(pyseq::name_of(pyseq::resolved_recurrent_kernel())); },
      "The kernel a float32 recurrent layer without projection runs under the current setting.");
}

void register_ctc(py::module_& m) {
  m.def(
      "ctc_beam_search",
      [](const at::Tensor& log_probs, const at::Tensor& input_lengths, int64_t beam_width, int64_t blank,
         int64_t nbest, int64_t top_k, double threshold, pyseq::Ngrams lm_log_probs, pyseq::Ngrams lm_backoffs,
         int64_t lm_order, double lm_unk, double lm_weight, double insertion_bonus) {
        const pyseq::CtcLanguageModel lm{std::move(lm_log_probs), std::move(lm_backoffs), lm_order, lm_unk,
                                         lm_weight, insertion_bonus};
        return pyseq::ctc_beam_search_cpu(log_probs, input_lengths, beam_width, blank, nbest, top_k, threshold, lm);
      },
      py::call_guard<py::gil_scoped_release>(),
      "CTC prefix beam search: per sequence a list of (tokens, log-prob). See csrc/ctc/ctc.h.");
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "pyseq native kernels";
  register_build_info(m);
  register_rnn(m);
  register_ctc(m);
}
