"""Decoding for sequence-to-sequence models: batched beam search over any step-wise decoder."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor

__all__ = ["Hypothesis", "beam_search"]


def __dir__() -> list[str]:  # the public names, not the modules and types this module imports
    return sorted(__all__)


class Hypothesis(NamedTuple):
    """A decoded sequence: ``tokens`` (without the start symbol and without the stop symbol; ``stopped`` says
    whether it ended with one rather than at the maximum length) and its ``score``: the sum of its tokens' log-probs
    (the stop symbol's included), divided by ``len ** length_penalty`` (len counting the stop symbol)."""

    tokens: list[int]
    score: float
    stopped: bool


def _map_state(state: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, tuple) and hasattr(state, "_fields"):  # a NamedTuple (pyseq.functional.ProjectedKeys)
        return type(state)(*(_map_state(s, fn) for s in state))
    if isinstance(state, (tuple, list)):
        return type(state)(_map_state(s, fn) for s in state)
    if isinstance(state, dict):
        return {k: _map_state(v, fn) for k, v in state.items()}
    if state is None:
        return None
    raise TypeError(f"the decoder state must be tensors in tuples, lists or dicts, got {type(state).__name__}")


@torch.no_grad()
def beam_search(
    step: Callable[[Tensor, Any], tuple[Tensor, Any]],
    state: Any,
    batch_size: int,
    start: int,
    stop: int,
    beam_width: int = 4,
    max_length: int = 50,
    nbest: int = 1,
    length_penalty: float = 0.0,
    state_batch_dim: int = 0,
) -> list[list[Hypothesis]]:
    """Beam search for a step-wise decoder, all sequences of the batch at once.

    Args:
        step: ``step(tokens, state) -> (log_probs, state)``: tokens ``[R]`` int64 (R = batch_size * beam_width rows,
            sequence b's beams in rows ``b * beam_width ...``), log_probs ``[R, V]`` (normalised over the
            vocabulary), the state as it came in with its rows advanced one step.
        state: the decoder's initial state for the batch: a tensor, or tensors in tuples/lists/dicts, each with
            the batch along dimension ``state_batch_dim`` (1 for an LSTM's ``(h, c)`` of ``[L, B, H]``). It is
            repeated per beam, and reordered by beam after each step with one ``index_select`` per tensor.
        batch_size: B. start, stop: the start symbol fed first, and the symbol that ends a sequence.
        beam_width: hypotheses kept per sequence (1: greedy decoding). max_length: the most tokens decoded, stop
            symbol included; hypotheses still open then are returned with ``stopped=False``.
        nbest: hypotheses returned per sequence (at most beam_width). length_penalty: alpha of the ``len ** alpha``
            that scores are divided by when ranked (0: plain log-probability).

    Returns per sequence its ``nbest`` best :class:`Hypothesis`, best first.
    """
    if beam_width < 1 or not 1 <= nbest <= beam_width:
        raise ValueError(f"need beam_width >= 1 and 1 <= nbest <= beam_width, got {beam_width} and {nbest}")
    if max_length < 1 or batch_size < 1:
        raise ValueError(f"need max_length >= 1 and batch_size >= 1, got {max_length} and {batch_size}")
    B, K = batch_size, beam_width
    state = _map_state(state, lambda t: t.repeat_interleave(K, dim=state_batch_dim))
    device = next(iter(_leaves(state)), torch.empty(0)).device
    tokens = torch.full((B * K,), start, dtype=torch.long, device=device)
    # Only beam 0 is live at first: the others would repeat it.
    scores = torch.full((B, K), float("-inf"), dtype=torch.float64)
    scores[:, 0] = 0.0
    prefixes: list[list[int]] = [[] for _ in range(B * K)]
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    done = [False] * B

    def ranked(total: float, length: int) -> float:
        return total / (length ** length_penalty) if length_penalty else total

    for t in range(max_length):
        log_probs, state = step(tokens, state)
        V = log_probs.shape[-1]
        candidates = scores.unsqueeze(2) + log_probs.detach().to("cpu", torch.float64).view(B, K, V)
        top_scores, top_index = candidates.view(B, K * V).topk(min(2 * K, K * V), dim=1)
        rows, next_tokens, next_scores = [], [], torch.full((B, K), float("-inf"), dtype=torch.float64)
        next_prefixes: list[list[int]] = []
        for b in range(B):
            kept = 0
            for score, index in zip(top_scores[b].tolist(), top_index[b].tolist()):
                if score == float("-inf") or kept == K:
                    break
                beam, token = divmod(index, V)
                prefix = prefixes[b * K + beam]
                if token == stop or t == max_length - 1:
                    if not done[b]:
                        stopped = token == stop
                        finished[b].append(Hypothesis(prefix + ([] if stopped else [token]), ranked(score, t + 1),
                                                      stopped))
                    continue
                rows.append(b * K + beam)
                next_tokens.append(token)
                next_scores[b, kept] = score
                next_prefixes.append(prefix + [token])
                kept += 1
            for _ in range(kept, K):  # dead beams: any row, never extended (score -inf)
                rows.append(b * K)
                next_tokens.append(stop)
                next_prefixes.append([])
            # Scores only fall as a hypothesis grows when there is no length penalty: then sequence b is done once
            # nbest finished hypotheses beat every open one.
            best = sorted((h.score for h in finished[b]), reverse=True)
            open_best = next_scores[b].max().item()
            beaten = not length_penalty and len(best) >= nbest and best[nbest - 1] >= open_best
            if open_best == float("-inf") or beaten:
                done[b] = True
        if all(done):
            break
        index = torch.tensor(rows, dtype=torch.long, device=device)
        state = _map_state(state, lambda s: s.index_select(state_batch_dim, index))
        tokens = torch.tensor(next_tokens, dtype=torch.long, device=device)
        scores = next_scores.masked_fill(torch.tensor(done).unsqueeze(1), float("-inf"))
        prefixes = next_prefixes
    return [sorted(hyps, key=lambda h: -h.score)[:nbest] for hyps in finished]


def _leaves(state: Any):
    if isinstance(state, Tensor):
        yield state
    elif isinstance(state, (tuple, list)):
        for s in state:
            yield from _leaves(s)
    elif isinstance(state, dict):
        for s in state.values():
            yield from _leaves(s)
