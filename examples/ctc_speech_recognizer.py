"""A CTC speech recogniser on real (synthesised) speech: eSpeak NG speaks spoken commands ("turn off the fan in the
garage", "set the timer for five minutes") in 35 voices (five English accents times seven voice variants) at random
speeds and pitches with noise added (examples/speech_data.py); log-mel features (pyseq.audio.log_mel) go through a
pyseq bidirectional LSTM trained with pyseq's CTC loss over the words of the vocabulary. Decoding: greedy
(pyseq.ctc.greedy_decode), and prefix beam search (pyseq.ctc.beam_search) with a word trigram language model
estimated from the training transcripts, its weight and word-insertion bonus chosen on the utterances of a
development voice. The test utterances are spoken by a voice no training utterance has: another accent with another
variant (and not the development voice).

    python examples/ctc_speech_recognizer.py           # full run
    python examples/ctc_speech_recognizer.py --quick   # the short run the tests use

The last line printed is a JSON object of the metrics: cer_greedy, cer_beam_lm, wer_beam_lm (character and word
error rates of the test transcripts), lm_weight, insertion_bonus and cer_dev_beam_lm (the settings chosen and their
error rate on the development voice), utterances_test, utterances_dev, utterances_train, seconds (of training).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import random
import time

import torch
from torch import nn

import pyseq
import speech_data as sd

BLANK = 0
TOKENS = ["<blank>"] + sd.VOCABULARY
TOKEN_INDEX = {w: i for i, w in enumerate(TOKENS)}


class Recognizer(nn.Module):
    """Word posteriors from log-mel frames: a two-layer bidirectional pyseq LSTM; `classes` counts the blank."""

    def __init__(self, n_features: int, classes: int = len(TOKENS), hidden: int = 160):
        super().__init__()
        self.lstm = pyseq.nn.LSTM(n_features, hidden, num_layers=2, bidirectional=True, batch_first=True,
                                  dropout=0.1)
        self.out = nn.Linear(2 * hidden, classes)

    def forward(self, feats: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """log-probs [T, B, C] (time-major, as the CTC loss and decoders take them)."""
        packed = nn.utils.rnn.pack_padded_sequence(feats, frames, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=feats.shape[1])
        return self.out(out).log_softmax(-1).transpose(0, 1)


def trigram_lm(transcripts: list[list[int]], discount: float = 0.5) -> pyseq.ctc.NGramLM:
    """A word trigram model with absolute discounting and backoff (ARPA semantics): every seen n-gram keeps its
    count less `discount`, and each context's backoff weight gives the freed mass to the shorter context's
    distribution over the words not seen after it."""
    counts = [collections.Counter() for _ in range(3)]
    for words in transcripts:
        for n in range(1, 4):
            for i in range(len(words) - n + 1):
                counts[n - 1][tuple(words[i : i + n])] += 1
    total = sum(counts[0].values())
    log_probs = {ngram: math.log(c / total) for ngram, c in counts[0].items()}
    backoffs = {}
    for n in (2, 3):
        by_context = collections.defaultdict(dict)
        for ngram, c in counts[n - 1].items():
            by_context[ngram[:-1]][ngram[-1]] = c
        for context, following in by_context.items():
            context_total = sum(following.values())
            for word, c in following.items():
                log_probs[context + (word,)] = math.log((c - discount) / context_total)
            freed = discount * len(following) / context_total
            lower = lambda w: math.exp(log_probs[context[1:] + (w,)]) if context[1:] + (w,) in log_probs else 0.0
            unseen_mass = 1.0 - sum(lower(w) for w in following)
            backoffs[context] = math.log(freed / unseen_mass) if unseen_mass > 1e-12 else -30.0
    return pyseq.ctc.NGramLM(order=3, log_probs=log_probs, backoffs=backoffs, unk=-30.0)


def edit_distance(a, b) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def error_rates(hypotheses: list[list[int]], references: list[list[int]]) -> tuple[float, float]:
    """Character error rate (over the words joined by spaces) and word error rate."""
    chars = sum(edit_distance(" ".join(TOKENS[t] for t in h), " ".join(TOKENS[t] for t in r))
                for h, r in zip(hypotheses, references))
    words = sum(edit_distance(h, r) for h, r in zip(hypotheses, references))
    n_chars = sum(len(" ".join(TOKENS[t] for t in r)) for r in references)
    return chars / n_chars, words / sum(len(r) for r in references)


def fit(feats: torch.Tensor, frames: torch.Tensor, targets: list[list[int]], epochs: int, rng: random.Random,
        log=print, classes: int = len(TOKENS)) -> Recognizer:
    """A recogniser trained with pyseq's CTC loss on features [N, T, F] (frames [N]) and word-index targets (in
    [1, classes); 0 is the blank)."""
    model = Recognizer(feats.shape[2], classes)

    def batch_loss(batch: list[int]) -> torch.Tensor:
        T = int(frames[batch].max())
        log_probs = model(feats[batch, :T], frames[batch])
        target_lengths = torch.tensor([len(targets[b]) for b in batch])
        return pyseq.functional.ctc_loss(log_probs, padded([targets[b] for b in batch]), frames[batch], target_lengths)

    return sd.fit(model, batch_loss, feats.shape[0], epochs, rng, log, "CTC loss per utterance")


def padded(rows: list[list[int]]) -> torch.Tensor:
    out = torch.zeros(len(rows), max(1, max(map(len, rows))), dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def train(quick: bool = False, seed: int = 0, log=print) -> dict:
    rng = random.Random(seed)
    torch.manual_seed(seed)
    n_train, n_test, n_dev, epochs = (800, 100, 100, 10) if quick else (2000, 300, 300, 20)
    speaker = sd.Speaker()
    train_set = sd.synthesize(n_train, sd.train_voices(), rng, speaker)
    test_set = sd.synthesize(n_test, [sd.TEST_VOICE], rng, speaker)
    log(f"{n_train} training utterances in {len(sd.train_voices())} voices, {n_test} test ({sd.TEST_VOICE})")
    feats, frames = sd.features([u.audio for u in train_set])
    targets = [[TOKEN_INDEX[w] for w in u.words] for u in train_set]
    start = time.perf_counter()
    model = fit(feats, frames, targets, epochs, rng, log)
    seconds = time.perf_counter() - start

    lm = trigram_lm(targets)
    dev_set = sd.synthesize(n_dev, [sd.DEV_VOICE], rng, speaker)
    dev_log_probs, dev_frames, dev_references = recognize(model, dev_set)
    lm_weight, insertion_bonus, cer_dev = choose_lm_settings(dev_log_probs, dev_frames, dev_references, lm)
    log(f"LM weight {lm_weight}, insertion bonus {insertion_bonus}: dev CER {cer_dev:.4f} ({sd.DEV_VOICE})")

    log_probs, test_frames, references = recognize(model, test_set)
    greedy = pyseq.ctc.greedy_decode(log_probs, test_frames)
    hyps = pyseq.ctc.beam_search(log_probs, test_frames, beam_width=16, lm=lm, lm_weight=lm_weight,
                                 insertion_bonus=insertion_bonus)
    cer_greedy, _ = error_rates(greedy, references)
    cer_beam, wer_beam = error_rates([h[0].tokens for h in hyps], references)
    return {"cer_greedy": round(cer_greedy, 4), "cer_beam_lm": round(cer_beam, 4), "wer_beam_lm": round(wer_beam, 4),
            "lm_weight": lm_weight, "insertion_bonus": insertion_bonus, "cer_dev_beam_lm": round(cer_dev, 4),
            "utterances_test": n_test, "utterances_dev": n_dev, "utterances_train": n_train,
            "seconds": round(seconds, 1)}


def recognize(model: Recognizer, utterances: list[sd.Utterance]):
    """log-probs [T, B, C], frames [B] and the reference word indices of `utterances`."""
    feats, frames = sd.features([u.audio for u in utterances])
    with torch.no_grad():
        log_probs = model(feats, frames)
    return log_probs, frames, [[TOKEN_INDEX[w] for w in u.words] for u in utterances]


LM_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
INSERTION_BONUSES = (-1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0)


def choose_lm_settings(log_probs, frames, references, lm) -> tuple[float, float, float]:
    """The LM weight and word-insertion bonus of the beam search with the lowest character error rate on a
    development set (a voice that is neither a training voice nor the test voice), over the grid of LM_WEIGHTS and
    INSERTION_BONUSES; ties go to the smaller weight, then the smaller bonus. Returns (weight, bonus, that CER)."""
    best = None
    for weight in LM_WEIGHTS:
        for bonus in INSERTION_BONUSES:
            hyps = pyseq.ctc.beam_search(log_probs, frames, beam_width=16, lm=lm, lm_weight=weight,
                                         insertion_bonus=bonus)
            cer, _ = error_rates([h[0].tokens for h in hyps], references)
            if best is None or cer < best[2]:
                best = (weight, bonus, cer)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short run (what the tests use)")
    args = parser.parse_args()
    print(json.dumps(train(quick=args.quick)))


if __name__ == "__main__":
    main()
