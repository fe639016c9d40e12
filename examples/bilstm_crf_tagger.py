"""A Bi-LSTM + CRF tagger (named-entity style, BIO tags) built from pyseq's LSTM and CRF, trained on sentences it
generates itself (no downloads).

The toy language: names start an entity (PER or LOC); "ambiguous" words continue the entity before them and are
plain words anywhere else, so a word's tag depends on the tags before it, a chain of any length. The CRF carries
the BIO constraints (I-X only after B-X or I-X) in training and in decoding.

    python examples/bilstm_crf_tagger.py           # full run: 100% token accuracy, ~3 s of training
    python examples/bilstm_crf_tagger.py --quick   # the short run the tests use

The last line printed is a JSON object of the metrics: token_accuracy, seconds (of training), epochs.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
from torch import nn

import pyseq
from pyseq.crf import allowed_transitions

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
PAD = 0
PLAIN = range(10, 60)  # always O
NAMES = {"PER": range(60, 80), "LOC": range(80, 100)}  # start an entity
AMBIGUOUS = range(100, 110)  # continue the entity before them, O elsewhere
VOCAB = 110


def make_sentence(rng: random.Random) -> tuple[list[int], list[int]]:
    words, tags = [], []
    for _ in range(rng.randint(6, 20)):
        r = rng.random()
        if r < 0.2:
            kind = rng.choice(["PER", "LOC"])
            words.append(rng.choice(NAMES[kind]))
            tags.append(LABELS.index("B-" + kind))
        elif r < 0.45:
            words.append(rng.choice(AMBIGUOUS))
            prev = LABELS[tags[-1]] if tags else "O"
            tags.append(LABELS.index("I-" + prev[2:]) if prev != "O" else 0)
        else:
            words.append(rng.choice(PLAIN))
            tags.append(0)
    return words, tags


def make_batch(sentences) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded words and tags [B, T] and the mask [B, T]."""
    T = max(len(w) for w, _ in sentences)
    words = torch.full((len(sentences), T), PAD, dtype=torch.long)
    tags = torch.zeros((len(sentences), T), dtype=torch.long)
    for i, (w, t) in enumerate(sentences):
        words[i, : len(w)] = torch.tensor(w)
        tags[i, : len(t)] = torch.tensor(t)
    return words, tags, words != PAD


class Tagger(nn.Module):
    def __init__(self, embedding: int = 32, hidden: int = 64):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, embedding, padding_idx=PAD)
        self.lstm = pyseq.nn.LSTM(embedding, hidden, batch_first=True, bidirectional=True)
        self.project = nn.Linear(2 * hidden, len(LABELS))
        self.crf = pyseq.nn.CRF(len(LABELS), batch_first=True, constraints=allowed_transitions(LABELS, "BIO"))

    def emissions(self, words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(1)
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(words), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=words.shape[1])
        return self.project(out)

    def loss(self, words, tags, mask) -> torch.Tensor:
        return -self.crf(self.emissions(words, mask), tags, mask, reduction="token_mean")

    def decode(self, words, mask) -> list[list[int]]:
        return self.crf.decode(self.emissions(words, mask), mask)


def fit(model: nn.Module, quick: bool = False, seed: int = 0, log=print):
    """Trains a tagger (any module with ``loss(words, tags, mask)``) on generated sentences; returns the test
    sentences, the seconds of training and the number of epochs."""
    rng = random.Random(seed)
    n_train, epochs = (600, 3) if quick else (3000, 6)
    train_set = [make_sentence(rng) for _ in range(n_train)]
    test_set = [make_sentence(rng) for _ in range(500)]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    start = time.perf_counter()
    for epoch in range(epochs):
        rng.shuffle(train_set)
        total = 0.0
        for i in range(0, len(train_set), 32):
            words, tags, mask = make_batch(train_set[i : i + 32])
            optimizer.zero_grad()
            loss = model.loss(words, tags, mask)
            loss.backward()
            optimizer.step()
            total += loss.item()
        log(f"epoch {epoch + 1}: mean loss per token {total / (len(train_set) / 32):.4f}")
    model.eval()
    return test_set, time.perf_counter() - start, epochs


def train(quick: bool = False, seed: int = 0, log=print) -> dict:
    """Trains a tagger; returns its test token accuracy, the seconds of training and the number of epochs."""
    torch.manual_seed(seed)
    model = Tagger()
    test_set, seconds, epochs = fit(model, quick, seed, log)
    with torch.no_grad():
        words, tags, mask = make_batch(test_set)
        predicted = model.decode(words, mask)
    correct = sum(p == t for path, (_, gold) in zip(predicted, test_set) for p, t in zip(path, gold))
    tokens = sum(len(gold) for _, gold in test_set)
    return {"token_accuracy": correct / tokens, "seconds": round(seconds, 1), "epochs": epochs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short run (what the tests use)")
    args = parser.parse_args()
    print(json.dumps(train(quick=args.quick)))


if __name__ == "__main__":
    main()
