"""Brute-force CTC: enumerate every frame labelling of a tiny input, keep those that collapse to the target."""

import itertools

import torch


def collapse(path, blank):
    out, prev = [], None
    for label in path:
        if label != prev and label != blank:
            out.append(label)
        prev = label
    return out


def nll(log_probs, target, blank=0):
    """-log sum over alignments of exp(sum_t log_probs[t, path[t]]), differentiable. log_probs: [T, C]."""
    T, C = log_probs.shape
    target = list(target)
    scores = [
        log_probs[torch.arange(T), torch.tensor(path)].sum()
        for path in itertools.product(range(C), repeat=T)
        if collapse(path, blank) == target
    ]
    if not scores:
        return torch.tensor(float("inf"), dtype=log_probs.dtype)
    return -torch.logsumexp(torch.stack(scores), 0)


def best_alignment_score(log_probs, target, blank=0):
    """max over alignments of sum_t log_probs[t, path[t]] (-inf if none). log_probs: [T, C]."""
    T, C = log_probs.shape
    best = float("-inf")
    for path in itertools.product(range(C), repeat=T):
        if collapse(path, blank) == list(target):
            best = max(best, float(log_probs[torch.arange(T), torch.tensor(path)].sum()))
    return best


def greedy(log_probs, length, blank=0):
    """Best path of one sequence: argmax per frame over the first `length` frames, collapsed. log_probs: [T, C]."""
    return collapse(log_probs[:length].argmax(-1).tolist(), blank)
