"""Brute-force linear-chain CRF: enumerate every tag path of a tiny sequence."""

import itertools

import torch


def path_scores(emissions, transitions, start, end):
    """Scores of all K**L paths of one sequence, differentiable. emissions: [L, K], L >= 1.
    Returns (paths: list of tuples, scores: [K**L])."""
    L, K = emissions.shape
    paths = list(itertools.product(range(K), repeat=L))
    idx = torch.tensor(paths)  # [P, L]
    scores = start[idx[:, 0]] + end[idx[:, -1]] + emissions[torch.arange(L), idx].sum(1)
    if L > 1:
        scores = scores + transitions[idx[:, :-1], idx[:, 1:]].sum(1)
    return paths, scores


def log_partition(emissions, transitions, start, end):
    if emissions.shape[0] == 0:
        return emissions.new_zeros(())
    return torch.logsumexp(path_scores(emissions, transitions, start, end)[1], 0)


def marginals(emissions, transitions, start, end):
    """[L, K] posterior of each tag at each step (zeros when no path is allowed)."""
    L, K = emissions.shape
    out = emissions.new_zeros(L, K)
    if L == 0:
        return out
    paths, scores = path_scores(emissions, transitions, start, end)
    if torch.isneginf(scores).all():
        return out
    weights = torch.softmax(scores, 0)
    for path, w in zip(paths, weights):
        out[torch.arange(L), torch.tensor(path)] += w
    return out


def kbest(emissions, transitions, start, end, k):
    """The k best (score, path) pairs with score > -inf, best first."""
    if emissions.shape[0] == 0:
        return [(0.0, ())]
    paths, scores = path_scores(emissions, transitions, start, end)
    ranked = sorted(zip(scores.tolist(), paths), key=lambda sp: -sp[0])
    return [(s, p) for s, p in ranked if s > float("-inf")][:k]


def hinge(emissions, tags, transitions, start, end, cost):
    """max_y [score(y) + cost * hamming(y, tags)] - score(tags), differentiable. emissions: [L, K]."""
    L = emissions.shape[0]
    if L == 0:
        return emissions.new_zeros(())
    paths, scores = path_scores(emissions, transitions, start, end)
    gold = tuple(tags)
    hamming = torch.tensor([sum(a != b for a, b in zip(p, gold)) for p in paths], dtype=emissions.dtype)
    gold_score = scores[paths.index(gold)]
    return (scores + cost * hamming).max() - gold_score
