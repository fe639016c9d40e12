"""pyseq: fused C++ kernels for sequence models in PyTorch.

Recurrent layers (``pyseq.nn.LSTM``, ``GRU``, ``RNN``) are drop-in replacements for ``torch.nn``'s;
``pyseq.functional`` holds the same operations for users who keep their own weights.
"""

import torch  # loads libtorch before the extension that links against it

try:
    from . import _C
except ImportError as error:  # most often a torch other than the one pyseq was built against (a C++ ABI break)
    raise ImportError(
        f"pyseq's compiled extension does not load with torch {torch.__version__}: {error}. pyseq is compiled "
        "against one torch release; rebuild it against this one (pip install --no-build-isolation .) or install "
        "the torch it was built for."
    ) from error


def _release(version: str) -> tuple[int, ...]:
    """(major, minor) of a torch version string such as '2.13.0+cpu': releases that share them share the C++ ABI."""
    return tuple(int(part) for part in version.split("+")[0].split(".")[:2])


if _release(_C.built_for_torch) != _release(torch.__version__):
    raise ImportError(
        f"pyseq was built for torch {_C.built_for_torch}, but torch {torch.__version__} is installed; their C++ "
        "ABIs differ. Rebuild pyseq against this torch (pip install --no-build-isolation .) or install torch "
        f"{'.'.join(map(str, _release(_C.built_for_torch)))}."
    )

from . import _ops  # noqa: E402,F401  (registers the custom ops)
from . import audio, crf, ctc, functional, nn, seq2seq  # noqa: E402

__version__ = "0.1.0"


def build_info() -> dict:
    """What this build of pyseq contains: ``version``, ``torch`` (the torch it was built for), ``torch_running``
    (the torch imported now: the same release, or pyseq would not have imported), ``cuda`` (whether CUDA sources were
    compiled in), ``cuda_runtime`` (their CUDA runtime version, or None), ``cuda_emulation`` (whether this is the
    build of ``make cuda-emulate``, whose CUDA kernels run on the CPU: :mod:`pyseq.cuda_emulation`), ``cpu_isa``
    (the instruction set that the CPU kernels' runtime dispatch chose on this machine: ``avx512``, ``avx2`` or
    ``baseline``) and
    ``recurrent_kernel`` (what float32 recurrent layers run: ``avx512``, ``avx2`` or ``portable`` packed-weight
    kernels, or ``aten`` when forced with :func:`set_recurrent_kernel`), ``bf16_recurrent_kernel`` (what bfloat16
    recurrent layers run on the CPU: ``avx512_bf16`` kernels or ``float32``, converted, see
    :func:`set_bf16_recurrent_kernel`) and ``cuda_recurrent_kernel`` (the forward the CUDA recurrent layers run, see
    :func:`set_cuda_recurrent_kernel`)."""
    return {
        "version": __version__,
        "torch": _C.built_for_torch,
        "torch_running": torch.__version__,
        "cuda": bool(_C.with_cuda),
        "cuda_runtime": _C.cuda_runtime_version() if _C.with_cuda else None,
        "cuda_emulation": bool(_C.cuda_emulation),
        "cpu_isa": _C.cpu_isa(),
        "recurrent_kernel": _C.recurrent_kernel_in_use(),
        "bf16_recurrent_kernel": _C.bf16_recurrent_kernel(),
        "cuda_recurrent_kernel": _C.cuda_recurrent_kernel(),
    }


def set_recurrent_kernel(name: str) -> None:
    """Chooses the CPU recurrent kernel: ``"auto"`` (default: the packed-weight kernel at the best instruction set
    this CPU has), ``"avx512"``, ``"avx2"``, ``"portable"`` (the packed kernel at that instruction set; ValueError if
    the CPU lacks it) or ``"aten"`` (per-step GEMM library calls). For float32 layers without a projection; float64
    and LSTM projections always take the ``aten`` path. Meant for tests and measurements; process-wide."""
    _C.set_recurrent_kernel(name)


def set_bf16_recurrent_kernel(name: str) -> None:
    """Chooses what bfloat16 recurrent layers (under CPU autocast, or converted with ``.to(torch.bfloat16)``) run on
    the CPU: ``"auto"`` (default: ``"avx512_bf16"`` where the CPU has AVX512-BF16), ``"avx512_bf16"`` (the forward's
    products on bfloat16 operands by the ``vdpbf16ps`` dot product with float32 accumulation; ValueError if the CPU
    lacks it) or ``"float32"`` (the portable path: tensors converted to float32 and the float32 kernels run). The
    bfloat16 kernel serves the forward of layers without a projection, of 8 steps or more (as the float32 packed
    kernel); the rest, and every backward, runs the float32 path. Meant for tests and measurements; process-wide."""
    _C.set_bf16_recurrent_kernel(name)


def set_cuda_recurrent_kernel(name: str) -> None:
    """Chooses the forward of the CUDA recurrent layers: ``"steps"`` (default: per step a cuBLAS recurrent product
    and one fused cell-update kernel) or ``"persistent"``: one kernel for the whole time loop that keeps W_hh in
    shared memory and synchronises the grid once per step, for padded input without projection, batch <= 16, in
    float32, bfloat16 or float16, where the weights fit (the step schedule elsewhere; the backward always runs the
    step schedule). Not yet run on a GPU, so not the default; process-wide."""
    _C.set_cuda_recurrent_kernel(name)


def empty_cache() -> None:
    """Frees the scratch buffers that pyseq's threads keep between calls (recurrent layers keep the input
    projection, the gate gradients and the packed recurrent weights of their last call, so that the next call does
    not pay a page fault per 4 KB). A buffer that a running call still uses is freed when that call ends."""
    _C.release_scratch()


def set_scratch_limit(nbytes: int) -> None:
    """Bounds the bytes of scratch buffers kept between calls by all threads together (default 64 MiB). A call that
    needs more than is left allocates afresh and frees on return. Lowering the bound frees nothing by itself; call
    :func:`empty_cache` too."""
    _C.set_scratch_limit(int(nbytes))


def scratch_info() -> dict:
    """``{"bytes": kept now, "limit": the bound}`` of the scratch buffers kept between calls."""
    return {"bytes": _C.scratch_bytes(), "limit": _C.scratch_limit()}


__all__ = [
    "audio",
    "nn",
    "functional",
    "seq2seq",
    "ctc",
    "crf",
    "build_info",
    "set_recurrent_kernel",
    "set_bf16_recurrent_kernel",
    "set_cuda_recurrent_kernel",
    "empty_cache",
    "set_scratch_limit",
    "scratch_info",
    "__version__",
]
