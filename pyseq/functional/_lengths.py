"""Lengths arguments as the ops take them: an int64 tensor on the CPU."""

from __future__ import annotations

import torch
from torch import Tensor


def lengths_tensor(value, name: str) -> Tensor:
    """Lengths as an int64 tensor on the CPU, from a tensor (int32 or int64) or a sequence of ints."""
    if isinstance(value, Tensor):
        if value.dtype not in (torch.int32, torch.int64):
            # torch's CTC loss raises RuntimeError("input_lengths must be integral") here
            raise RuntimeError(f"{name} must be integral (int32 or int64), got {value.dtype}")
        return value.to(device="cpu", dtype=torch.int64)
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{name} must be a tensor or a sequence of ints, got {type(value).__name__}") from None
    for i, item in enumerate(items):
        if not is_integer(item):
            raise TypeError(f"{name} must be a tensor or a sequence of ints, but found {item!r} at position {i}")
    return torch.as_tensor([int(item) for item in items], dtype=torch.int64)


def is_integer(item) -> bool:
    """An int (not a bool), a SymInt, a 0-d integer tensor or a numpy integer (what indexing an integer array
    gives)."""
    if isinstance(item, bool):
        return False
    if isinstance(item, (int, torch.SymInt)):
        return True
    if isinstance(item, Tensor):
        return item.dim() == 0 and not item.dtype.is_floating_point and not item.dtype.is_complex
    return hasattr(item, "dtype") and hasattr(item, "__index__")
