"""pyseq's CUDA code run on the CPU: test tooling for the build of ``make cuda-emulate``.

That build compiles every CUDA kernel file as C++ against pyseq's CUDA emulator (each GPU thread a fiber; see
``csrc/common/cuda_emulation/emulation.h``) and registers the CUDA glue, which prepares the kernels' arguments and
launches them, as the ``pyseq_emulated::<op>`` ops for CPU tensors, with the schemas of ``pyseq::<op>``. Under
:class:`emulate`, every pyseq op that has a CUDA kernel runs through them instead of the CPU kernels, autograd
included, under several thread schedules whose results must agree bit for bit. Other builds have no emulated ops:
:func:`available` says which this is.
"""

from __future__ import annotations

import contextlib
import os

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from . import _C

__all__ = ["SCHEDULES", "available", "emulate", "emulated_ops", "launched_kernels", "schedule"]

#: The thread schedules each emulated op runs under: the threads between two barriers (or warp intrinsics) in
#: increasing order, decreasing order, and an order drawn at random. A kernel missing a barrier gives different
#: results under some of them.
SCHEDULES = ("forward", "reverse", "random:20261206")

_SCHEDULE_VARIABLE = "PYSEQ_CUDA_EMULATION_SCHEDULE"
_library = None
_ops: tuple[str, ...] = ()


def available() -> bool:
    """Whether this build of pyseq carries the emulated CUDA kernels (``make cuda-emulate``)."""
    return bool(_C.cuda_emulation)


def emulated_ops() -> tuple[str, ...]:
    """The names of the ops that have emulated CUDA kernels (those of ``pyseq::<name>`` with a CUDA kernel)."""
    global _library, _ops
    if _library is None and available():
        registered = torch._C._dispatch_get_registrations_for_dispatch_key("CPU")
        _ops = tuple(sorted(n.split("::", 1)[1] for n in registered if n.startswith("pyseq_emulated::")))
        _library = torch.library.Library("pyseq_emulated", "DEF")
        for name in _ops:
            _library.define(str(getattr(torch.ops.pyseq, name).default._schema).split("::", 1)[1])
    return _ops


@contextlib.contextmanager
def schedule(name: str):
    """Runs the emulated kernels launched inside the block under one schedule: ``forward``, ``reverse`` or
    ``random:SEED``."""
    before = os.environ.get(_SCHEDULE_VARIABLE)
    os.environ[_SCHEDULE_VARIABLE] = name
    try:
        yield
    finally:
        if before is None:
            del os.environ[_SCHEDULE_VARIABLE]
        else:
            os.environ[_SCHEDULE_VARIABLE] = before


def launched_kernels(forget: bool = False) -> set[str]:
    """The names of the CUDA kernels the emulator has run (since the last call with ``forget=True``)."""
    names = set(_C.cuda_emulation_launched_kernels())
    if forget:
        _C.cuda_emulation_forget_launched_kernels()
    return names


def _plain_cpu(args, kwargs) -> bool:
    """Whether every tensor argument holds real CPU data (not a fake, meta or subclass tensor of a tracer)."""
    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    tensors += [t for a in (*args, *kwargs.values()) if isinstance(a, (list, tuple)) for t in a
                if isinstance(t, torch.Tensor)]
    return all(type(t) in (torch.Tensor, torch.nn.Parameter) and t.device.type == "cpu" for t in tensors)


def _bytes(x):
    return x.detach().contiguous().reshape(-1).view(torch.uint8)


def _bitwise_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(
            _bytes(a), _bytes(b))
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_bitwise_equal(x, y) for x, y in zip(a, b))
    return a == b


class emulate(TorchDispatchMode):
    """Inside this mode, the pyseq ops that have CUDA kernels run their emulated CUDA glue and kernels on CPU
    tensors, each call once under each of ``schedules``; results that differ in any bit raise AssertionError (a
    missing barrier, a race). Ops called by an emulated op (the NTM step's parts) are emulated too. Needs the build
    of ``make cuda-emulate``."""

    def __init__(self, schedules=SCHEDULES):
        super().__init__()
        if not available():
            raise RuntimeError("this build of pyseq has no emulated CUDA kernels: build it with make cuda-emulate")
        self.schedules = tuple(schedules)
        self.emulated = set(emulated_ops())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace != "pyseq" or func._opname not in self.emulated or not _plain_cpu(args, kwargs):
            return func(*args, **kwargs)
        op = getattr(getattr(torch.ops.pyseq_emulated, func._opname), func._overloadname)
        results = []
        for name in self.schedules:
            with schedule(name), emulate(schedules=(name,)):
                results.append(op(*args, **kwargs))
        for name, other in zip(self.schedules[1:], results[1:]):
            if not _bitwise_equal(results[0], other):
                raise AssertionError(f"pyseq::{func._opname}: the emulated CUDA kernels give different results under "
                                     f"the schedules {self.schedules[0]} and {name}")
        return results[0]
