"""A many-to-one classifier: packed variable-length sentences through a pyseq LSTM, whose last state classifies the
sentence's sentiment; a bag-of-words baseline trained beside it on the same data (no downloads: the sentences come
from a small grammar generated here).

The grammar makes word order matter: a clause's sentiment is its adjective's, flipped by a negation ("the plot was
not bad" is positive), and in "X but Y" the sentence takes the sentiment of Y ("good but boring" is negative,
"boring but good" positive). A bag of words sees the same words in both orders and cannot tie a negation to its
adjective; the LSTM reads the order.

    python examples/sentiment_classifier.py           # the full run
    python examples/sentiment_classifier.py --quick   # the short run the tests use

The last line printed is a JSON object of the metrics: accuracy, bow_accuracy (the bag of words'), sentences_test,
seconds (of training, both models).
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import pyseq

POSITIVE = ["good", "great", "excellent", "fun", "brilliant", "moving", "clever", "charming", "superb", "gripping"]
NEGATIVE = ["bad", "boring", "awful", "dull", "clumsy", "tedious", "weak", "bland", "silly", "painful"]
NOUNS = ["movie", "film", "plot", "acting", "script", "ending", "cast", "music", "story", "pacing"]
DETERMINERS = ["the", "this", "its"]
VERBS = ["was", "is", "felt", "seemed"]
NEGATIONS = ["not", "never", "hardly"]
INTENSIFIERS = ["very", "really", "quite", "so", "rather"]
OPENERS = ["honestly", "overall", "frankly", "well"]
WORDS = ["<pad>", "but", ","] + POSITIVE + NEGATIVE + NOUNS + DETERMINERS + VERBS + NEGATIONS + INTENSIFIERS + OPENERS
INDEX = {w: i for i, w in enumerate(WORDS)}


def clause(rng: random.Random) -> tuple[list[str], int]:
    """'the plot was [not] [very] good': words and sentiment (1 positive, 0 negative)."""
    positive = rng.random() < 0.5
    words = [rng.choice(DETERMINERS), rng.choice(NOUNS), rng.choice(VERBS)]
    negated = rng.random() < 0.4
    if negated:
        words.append(rng.choice(NEGATIONS))
    if rng.random() < 0.5:
        words.append(rng.choice(INTENSIFIERS))
    words.append(rng.choice(POSITIVE if positive else NEGATIVE))
    return words, int(positive != negated)


def make_sentence(rng: random.Random) -> tuple[list[int], int]:
    """One clause, or 'X but Y' (the sentiment of Y), sometimes after an opener."""
    words, label = clause(rng)
    if rng.random() < 0.6:
        second, label = clause(rng)
        words = words + ["but"] + second
    if rng.random() < 0.3:
        words = [rng.choice(OPENERS), ","] + words
    return [INDEX[w] for w in words], label


def batches(data, size: int, rng: random.Random | None = None):
    """Padded words [B, T], lengths [B] and labels [B]; shuffled when rng is given."""
    order = list(range(len(data)))
    if rng:
        rng.shuffle(order)
    for i in range(0, len(order), size):
        chunk = [data[j] for j in order[i : i + size]]
        lengths = torch.tensor([len(w) for w, _ in chunk])
        words = torch.zeros(len(chunk), int(lengths.max()), dtype=torch.long)
        for row, (w, _) in enumerate(chunk):
            words[row, : len(w)] = torch.tensor(w)
        yield words, lengths, torch.tensor([label for _, label in chunk])


class LstmClassifier(nn.Module):
    def __init__(self, embedding: int = 32, hidden: int = 64):
        super().__init__()
        self.embed = nn.Embedding(len(WORDS), embedding, padding_idx=0)
        self.lstm = pyseq.nn.LSTM(embedding, hidden, batch_first=True)
        self.out = nn.Linear(hidden, 2)

    def forward(self, words: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(self.embed(words), lengths, batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)  # h_n [1, B, hidden]: each sentence's state after its last word
        return self.out(h_n[-1])


class BagOfWords(nn.Module):
    """Logistic regression on word counts."""

    def __init__(self):
        super().__init__()
        self.weights = nn.EmbeddingBag(len(WORDS), 2, mode="sum", padding_idx=0)
        self.bias = nn.Parameter(torch.zeros(2))

    def forward(self, words: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.weights(words) + self.bias


def fit(model: nn.Module, train_set, epochs: int, lr: float, rng: random.Random, log, name: str) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for epoch in range(epochs):
        total, count = 0.0, 0
        for words, lengths, labels in batches(train_set, 64, rng):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(words, lengths), labels)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(labels)
            count += len(labels)
        log(f"{name} epoch {epoch + 1}: loss {total / count:.4f}")


@torch.no_grad()
def accuracy(model: nn.Module, data) -> float:
    model.eval()
    correct = sum(int((model(w, n).argmax(1) == y).sum()) for w, n, y in batches(data, 512))
    return correct / len(data)


def train(quick: bool = False, seed: int = 0, log=print) -> dict:
    rng = random.Random(seed)
    torch.manual_seed(seed)
    n_train, epochs = (3000, 4) if quick else (20000, 5)
    train_set = [make_sentence(rng) for _ in range(n_train)]
    test_set = [make_sentence(rng) for _ in range(2000)]
    start = time.perf_counter()
    lstm, bow = LstmClassifier(), BagOfWords()
    fit(lstm, train_set, epochs, 1e-2, rng, log, "lstm")
    fit(bow, train_set, epochs, 1e-2, rng, log, "bag of words")
    seconds = time.perf_counter() - start
    return {"accuracy": accuracy(lstm, test_set), "bow_accuracy": accuracy(bow, test_set),
            "sentences_test": len(test_set), "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short run (what the tests use)")
    args = parser.parse_args()
    print(json.dumps(train(quick=args.quick)))


if __name__ == "__main__":
    main()
