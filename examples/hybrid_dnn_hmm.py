"""A hybrid DNN-HMM recogniser on the synthesised speech of examples/speech_data.py: frame-level HMM state targets
come from forced alignment (pyseq.ctc.forced_align with a CTC model trained first, examples/ctc_speech_recognizer.py),
a pyseq bidirectional LSTM learns to classify frames into those states, and pyseq.functional.hmm_viterbi decodes
each test utterance over the HMM with the classifier's posteriors divided by the state priors (scaled likelihoods).

States: silence, and three left-to-right states per word (its first, middle and last third). A CTC alignment marks
one frame per word (its spike, pyseq.ctc.merge_tokens); each word is given the frames from half-way after the
previous word's spike to half-way before the next one, silence the rest. The HMM's transitions (within words, word
to word, silence) and initial states are counted from the training alignments, so word-to-word transitions carry a
bigram model of the commands. The test voice is one that no training utterance has.

    python examples/hybrid_dnn_hmm.py           # full run
    python examples/hybrid_dnn_hmm.py --quick   # the short run the tests use

The last line printed is a JSON object of the metrics: wer (word error rate of the decoded test utterances),
frame_accuracy (the classifier's frame states against the test alignments), utterances_test, seconds (of training,
the CTC aligner and the frame classifier).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time

import torch
from torch import nn

import ctc_speech_recognizer as ctc
import pyseq
import speech_data as sd

V = len(sd.VOCABULARY)
SILENCE = 0
N_STATES = 1 + 3 * V  # silence, then (word w, part k) at 1 + 3 w + k


def state_of(word: int, part: int) -> int:
    return 1 + 3 * word + part


def frame_states(model: ctc.Recognizer, feats: torch.Tensor, frames: torch.Tensor,
                 targets: list[list[int]]) -> torch.Tensor:
    """HMM state targets [N, T] from the CTC model's forced alignment of each transcript (-1 past each length)."""
    with torch.no_grad():
        log_probs = model(feats, frames)
    labels, scores = pyseq.ctc.forced_align(log_probs, ctc.padded(targets), frames,
                                            torch.tensor([len(t) for t in targets]))
    states = torch.full(labels.shape, -1, dtype=torch.long)
    for n, words in enumerate(targets):
        steps = int(frames[n])
        spikes = [(span.start + span.end - 1) / 2 for span in pyseq.ctc.merge_tokens(labels[n, :steps],
                                                                                       scores[n, :steps])]
        # word i spans bounds[i] .. bounds[i + 1]: the midpoints between spikes, and at the ends half the nearest gap
        # (3 frames for a one-word utterance)
        first_half = (spikes[1] - spikes[0]) / 2 if len(spikes) > 1 else 3
        last_half = (spikes[-1] - spikes[-2]) / 2 if len(spikes) > 1 else 3
        bounds = ([spikes[0] - first_half] + [(a + b) / 2 for a, b in zip(spikes, spikes[1:])]
                  + [spikes[-1] + last_half])
        states[n, :steps] = SILENCE
        for i, word in enumerate(words):
            first, last = max(0, math.ceil(bounds[i])), min(steps, math.ceil(bounds[i + 1]))
            for t in range(first, last):
                states[n, t] = state_of(word - 1, min(2, 3 * (t - first) // max(1, last - first)))
    return states


def hmm_from_alignments(states: torch.Tensor, smoothing: float = 0.5):
    """log transitions [S, S], log initial [S] and log priors [S], counted from the aligned state sequences, with
    `smoothing` added to every transition the topology allows: stay; a later part of the same word; silence or a
    word's first part after silence or any part of a word (a word shorter than three frames has fewer parts)."""
    allowed = torch.zeros(N_STATES, N_STATES, dtype=torch.bool)
    starts = torch.tensor([SILENCE] + [state_of(w, 0) for w in range(V)])
    allowed[torch.arange(N_STATES), torch.arange(N_STATES)] = True
    for w in range(V):
        allowed[state_of(w, 0), state_of(w, 1)] = allowed[state_of(w, 0), state_of(w, 2)] = True
        allowed[state_of(w, 1), state_of(w, 2)] = True
    allowed[:, starts] = True
    counts = torch.zeros(N_STATES, N_STATES)
    initial = torch.zeros(N_STATES)
    for row in states:
        row = row[row >= 0]
        initial[row[0]] += 1
        counts.index_put_((row[:-1], row[1:]), torch.ones(len(row) - 1), accumulate=True)
    transitions = torch.where(allowed, counts + smoothing, torch.zeros(()))
    log_transitions = (transitions / transitions.sum(1, keepdim=True)).log()
    initial[starts] += smoothing
    frequencies = torch.bincount(states[states >= 0], minlength=N_STATES).float() + 1.0
    return log_transitions, (initial / initial.sum()).log(), (frequencies / frequencies.sum()).log()


def words_of_states(path: list[int]) -> list[int]:
    """The words a state path passes through: one each time it enters a word's first part from elsewhere."""
    words, previous = [], SILENCE
    for s in path:
        if s != SILENCE and (s - 1) % 3 == 0 and s != previous:
            words.append((s - 1) // 3 + 1)  # token index: words start at 1 (0 is CTC's blank)
        previous = s
    return words


class FrameClassifier(nn.Module):
    def __init__(self, n_features: int, hidden: int = 160):
        super().__init__()
        self.lstm = pyseq.nn.LSTM(n_features, hidden, num_layers=2, bidirectional=True, batch_first=True,
                                  dropout=0.1)
        self.out = nn.Linear(2 * hidden, N_STATES)

    def forward(self, feats: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """State log-posteriors [B, T, S]."""
        packed = nn.utils.rnn.pack_padded_sequence(feats, frames, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=feats.shape[1])
        return self.out(out).log_softmax(-1)


def fit_frames(feats, frames, states, epochs: int, rng: random.Random, log) -> FrameClassifier:
    model = FrameClassifier(feats.shape[2])

    def batch_loss(batch: list[int]) -> torch.Tensor:
        T = int(frames[batch].max())
        log_posteriors = model(feats[batch, :T], frames[batch])
        return nn.functional.nll_loss(log_posteriors.reshape(-1, N_STATES), states[batch, :T].reshape(-1),
                                      ignore_index=-1)

    return sd.fit(model, batch_loss, feats.shape[0], epochs, rng, log, "frame classifier cross-entropy per frame")


def train(quick: bool = False, seed: int = 0, log=print) -> dict:
    rng = random.Random(seed)
    torch.manual_seed(seed)
    n_train, n_test, ctc_epochs, epochs = (800, 100, 10, 8) if quick else (2000, 300, 20, 15)
    speaker = sd.Speaker()
    train_set = sd.synthesize(n_train, sd.train_voices(), rng, speaker)
    test_set = sd.synthesize(n_test, [sd.TEST_VOICE], rng, speaker)
    feats, frames = sd.features([u.audio for u in train_set])
    targets = [[ctc.TOKEN_INDEX[w] for w in u.words] for u in train_set]
    start = time.perf_counter()
    aligner = ctc.fit(feats, frames, targets, ctc_epochs, rng, log)
    states = frame_states(aligner, feats, frames, targets)
    classifier = fit_frames(feats, frames, states, epochs, rng, log)
    seconds = time.perf_counter() - start

    log_transitions, log_initial, log_priors = hmm_from_alignments(states)
    test_feats, test_frames = sd.features([u.audio for u in test_set])
    references = [[ctc.TOKEN_INDEX[w] for w in u.words] for u in test_set]
    test_states = frame_states(aligner, test_feats, test_frames, references)
    with torch.no_grad():
        log_posteriors = classifier(test_feats, test_frames)
    valid = test_states >= 0
    frame_accuracy = float((log_posteriors.argmax(-1) == test_states)[valid].float().mean())
    paths, _ = pyseq.functional.hmm_viterbi(log_posteriors, log_transitions, log_initial, log_priors,
                                            lengths=test_frames)
    hypotheses = [words_of_states(path[: int(n)].tolist()) for path, n in zip(paths, test_frames)]
    _, wer = ctc.error_rates(hypotheses, references)
    return {"wer": round(wer, 4), "frame_accuracy": round(frame_accuracy, 4), "utterances_test": n_test,
            "utterances_train": n_train, "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short run (what the tests use)")
    args = parser.parse_args()
    print(json.dumps(train(quick=args.quick)))


if __name__ == "__main__":
    main()
