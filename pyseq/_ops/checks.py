"""Checks shared by the fake (meta) kernels of every op family.

A fake kernel runs whenever one argument is on the meta device, even if the others are on the CPU; unchecked, it
would build outputs on a CPU argument and the call would return uninitialized memory. torch's own ops raise here.
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_same_device(ref_name: str, ref: Tensor, *named: tuple[str, Tensor | None], cpu_ok: tuple[str, ...] = ()) -> None:
    """Raises torch's error for mixed devices when a tensor of ``named`` (name, tensor) pairs is not on the device of
    ``ref``; ``None`` and empty placeholders are skipped, and the names in ``cpu_ok`` may also be on the CPU
    (lengths, masks read on the host)."""
    for name, t in named:
        if t is None or t.numel() == 0 or t.device == ref.device or (name in cpu_ok and t.device.type == "cpu"):
            continue
        raise RuntimeError(
            f"Expected all tensors to be on the same device, but found at least two devices, {ref.device} and "
            f"{t.device}! ({ref_name} is on {ref.device}, {name} on {t.device})"
        )


def float32_if_16_bit(t: Tensor) -> torch.dtype:
    """The dtype CTC and CRF compute and return in for an input ``t``: float32 for bfloat16 and float16 (the kernels
    convert them, csrc/common/float32_compute.h), else ``t``'s own."""
    return torch.float32 if t.dtype in (torch.bfloat16, torch.float16) else t.dtype
