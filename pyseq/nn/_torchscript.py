"""TorchScript's compiler cannot compile pyseq's modules: say so, and what works instead."""

from __future__ import annotations


class NotScriptable:
    """A module that ``torch.jit.script`` refuses with a clear error (it calls ``__prepare_scriptable__`` on every
    module it compiles, submodules included) instead of failing deep inside TorchScript."""

    def __prepare_scriptable__(self):
        raise RuntimeError(
            f"torch.jit.script cannot compile pyseq.nn.{type(self).__name__}: its forward prepares the op's arguments "
            "in Python (argument checks, optional and packed inputs), which TorchScript does not support. "
            "Use torch.compile, torch.export or torch.jit.trace instead."
        )
