"""Brute-force CTC: enumerate every frame labelling of a tiny input, keep those that collapse to the target."""

import itertools
import math

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


def prefix_beam_search(log_probs, beam_width, blank=0, nbest=1, top_k=0, threshold=float("-inf"), lm=None,
                       lm_weight=0.0, insertion_bonus=0.0):
    """CTC prefix beam search in plain Python (the same algorithm as pyseq.ctc.beam_search, written from its
    definition): returns [(tokens, score)] best first. log_probs: [T, C] (a tensor); lm: anything with
    score(context, token), fused as lm_weight * score + insertion_bonus per new token."""
    neg_inf = float("-inf")

    def lae(a, b):
        if a == neg_inf:
            return b
        if b == neg_inf:
            return a
        m = max(a, b)
        return m + math.log(math.exp(a - m) + math.exp(b - m))

    rows = log_probs.tolist()
    beams = {(): (0.0, neg_inf)}  # prefix -> (log p ending in blank, log p ending in its last label)
    for row in rows:
        labels = [c for c in range(len(row)) if c != blank and row[c] >= threshold]
        if top_k:
            labels = sorted(labels, key=lambda c: -row[c])[:top_k]
        nxt = {}
        for prefix, (pb, pl) in beams.items():
            total = lae(pb, pl)
            b, l = nxt.get(prefix, (neg_inf, neg_inf))
            nxt[prefix] = (lae(b, total + row[blank]), l)
            for c in labels:
                grown = prefix + (c,)
                fused = row[c]
                if lm is not None and lm_weight != 0:
                    fused += lm_weight * lm.score(prefix, c)
                fused += insertion_bonus if lm is not None else 0.0
                if prefix and prefix[-1] == c:
                    b, l = nxt[prefix]
                    nxt[prefix] = (b, lae(l, pl + row[c]))
                    b, l = nxt.get(grown, (neg_inf, neg_inf))
                    nxt[grown] = (b, lae(l, pb + fused))
                else:
                    b, l = nxt.get(grown, (neg_inf, neg_inf))
                    nxt[grown] = (b, lae(l, total + fused))
        ranked = sorted(nxt.items(), key=lambda kv: -lae(*kv[1]))[:beam_width]
        beams = dict(ranked)
    ranked = sorted(beams.items(), key=lambda kv: -lae(*kv[1]))
    return [(list(prefix), lae(*ps)) for prefix, ps in ranked[:nbest]]


def labeling_log_prob(log_probs, labeling, blank=0):
    """log p(labeling) = -CTC loss, by enumeration. log_probs: [T, C]."""
    return -float(nll(log_probs, labeling, blank))
