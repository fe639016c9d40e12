"""Transition constraints for linear-chain CRFs (the CRF itself is ``pyseq.nn.CRF`` / ``pyseq.functional.crf_*``).

A constraint forbids a tag at the start, at the end, or after another tag. pyseq applies it as a score of -inf,
honoured exactly by every CRF kernel in training and in decoding: forbidden paths get probability 0 and are never
decoded.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor

__all__ = ["TransitionConstraints", "allowed_transitions", "apply_constraints"]


def __dir__() -> list[str]:  # the public names, not the modules and types this module imports
    return sorted(__all__)


class TransitionConstraints(NamedTuple):
    """Allowed transitions as bool tensors (True = allowed): ``start [K]``, ``end [K]``, ``transitions [K, K]``
    (``transitions[i, j]``: tag ``j`` may follow tag ``i``)."""

    start: Tensor
    end: Tensor
    transitions: Tensor

    def check(self, num_tags: int) -> "TransitionConstraints":
        """Validates shapes and dtypes for ``num_tags`` tags, and that at least one path of some length is allowed."""
        for name, t, shape in (("start", self.start, (num_tags,)), ("end", self.end, (num_tags,)),
                               ("transitions", self.transitions, (num_tags, num_tags))):
            if not isinstance(t, Tensor) or t.dtype != torch.bool:
                raise TypeError(f"constraints.{name} must be a bool tensor, got {getattr(t, 'dtype', type(t))}")
            if tuple(t.shape) != shape:
                raise ValueError(f"constraints.{name} must have shape {shape}, got {tuple(t.shape)}")
        # Tags reachable from an allowed start; some path is allowed iff one of them may end a sequence.
        reachable = self.start.clone()
        for _ in range(num_tags):
            reachable = reachable | (reachable.unsqueeze(1) & self.transitions).any(0)
        if not (reachable & self.end).any():
            raise ValueError("constraints allow no tag path of any length: no allowed end tag is reachable from an "
                             "allowed start tag")
        return self


def _split(label: str, scheme: str) -> tuple[str, str]:
    if label == "O":
        return "O", ""
    prefix, sep, entity = label.partition("-")
    if not sep or prefix not in _PREFIXES[scheme]:
        raise ValueError(
            f"tag {label!r} is not a {scheme} tag: expected 'O' or one of "
            f"{', '.join(p + '-<type>' for p in _PREFIXES[scheme])}"
        )
    return prefix, entity


_PREFIXES = {"BIO": "BI", "IOB1": "BI", "IOBES": "BIES", "BIOUL": "BILU", "BMES": "BMES"}

# The schemes that are IOBES under other letters: their prefixes as IOBES's.
_IOBES_SYNONYMS = {"BIOUL": {"L": "E", "U": "S"}, "BMES": {"M": "I"}}


def _allowed(scheme: str, a: tuple[str, str] | None, b: tuple[str, str] | None) -> bool:
    """May tag b follow tag a? a = None: b starts the sequence; b = None: a ends it."""
    if scheme in _IOBES_SYNONYMS:
        rename = _IOBES_SYNONYMS[scheme]
        a = a and (rename.get(a[0], a[0]), a[1])
        b = b and (rename.get(b[0], b[0]), b[1])
        scheme = "IOBES"
    if scheme == "BIO":  # I-x continues a chunk of type x
        return b is None or b[0] != "I" or (a is not None and a[0] in "BI" and a[1] == b[1])
    if scheme == "IOB1":  # I-x also starts chunks; B-x only separates two adjacent chunks of type x
        return b is None or b[0] != "B" or (a is not None and a[0] in "BI" and a[1] == b[1])
    # IOBES: a chunk is S-x alone, or B-x I-x* E-x
    inside = a is not None and a[0] in "BI"
    if b is None:
        return not inside
    if b[0] in "IE":
        return inside and a[1] == b[1]
    return not inside


def allowed_transitions(labels: Sequence[str], scheme: str = "BIO") -> TransitionConstraints:
    """The transitions a tagging scheme allows, for tags named like ``"O"``, ``"B-PER"``, ``"I-PER"``.

    Args:
        labels: the tag names in tag-id order (``labels[k]`` names tag ``k``).
        scheme: ``"BIO"`` (IOB2: ``I-x`` only after ``B-x`` or ``I-x``), ``"IOB1"`` (``B-x`` only right after a
            chunk of type ``x``), ``"IOBES"`` or its synonyms ``"BIOUL"`` and ``"BMES"`` (chunks are ``S-x`` or
            ``B-x I-x* E-x``; ``U`` = ``S``, ``L`` = ``E``, ``M`` = ``I``).

    Returns the allowed start tags, end tags and transitions as a :class:`TransitionConstraints`.
    """
    scheme = scheme.upper()
    if scheme == "IOB2":
        scheme = "BIO"
    if scheme not in _PREFIXES:
        raise ValueError(f"unknown tagging scheme {scheme!r}: expected BIO (IOB2), IOB1, IOBES, BIOUL or BMES")
    parts = [_split(label, scheme) for label in labels]
    K = len(parts)
    start = torch.tensor([_allowed(scheme, None, p) for p in parts], dtype=torch.bool)
    end = torch.tensor([_allowed(scheme, p, None) for p in parts], dtype=torch.bool)
    pairs = torch.tensor([[_allowed(scheme, a, b) for b in parts] for a in parts], dtype=torch.bool).reshape(K, K)
    return TransitionConstraints(start, end, pairs).check(K)


def apply_constraints(
    transitions: Tensor, start_transitions: Tensor, end_transitions: Tensor, constraints: TransitionConstraints
) -> tuple[Tensor, Tensor, Tensor]:
    """The scores with every forbidden entry set to -inf (differentiable: forbidden entries get zero gradient).
    Returns ``(transitions, start_transitions, end_transitions)``."""
    neg_inf = float("-inf")
    return (
        transitions.masked_fill(~constraints.transitions, neg_inf),
        start_transitions.masked_fill(~constraints.start, neg_inf),
        end_transitions.masked_fill(~constraints.end, neg_inf),
    )
