"""Spoken question answering (listening comprehension, TOEFL-style): the stories of examples/story_world.py (tasks 1,
2 and 6: where is a person, where is an object, is a person in a place) are spoken sentence by sentence by eSpeak NG
(examples/speech_data.py): the training stories by the training voices, the test stories by a voice that no training
story has. The question comes as text, with four answer choices. A pyseq CTC recogniser (examples/
ctc_speech_recognizer.py's bidirectional LSTM, trained on spoken sentences of the training stories) turns each
spoken sentence into words; a memory network (pyseq.nn.MemoryNetwork: position-encoded sentences, three hops of
attention over them) reads them with the question, and an answer layer over the question and the hops' state scores
the four choices. The reader is trained on the training stories' text; the same reader on the test stories' true
text is the upper bound.

    python examples/spoken_qa.py           # full run
    python examples/spoken_qa.py --quick   # the short run the tests use

The last line printed is a JSON object: accuracy (on the test voice's speech), chance (0.25), text_accuracy (the same
reader on the true text), per task both, word_error_rate (of the recogniser on the test stories' sentences),
stories_train, stories_test, seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time

import torch
from torch import nn

import pyseq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ctc_speech_recognizer as ctc  # noqa: E402
import reading_comprehension as rc  # noqa: E402
import speech_data as sd  # noqa: E402
import story_world  # noqa: E402

TASKS = (1, 2, 6)
CHOICE_POOL = story_world.PLACES + ["yes", "no"]  # every answer of the three tasks
CHOICES = 4


def with_choices(examples: list[story_world.Example], rng: random.Random) -> list[tuple[list[str], int]]:
    """Four choices per question: the answer and three other answers drawn from CHOICE_POOL, shuffled; and the
    answer's place among them."""
    out = []
    for e in examples:
        choices = [e.answer] + rng.sample([a for a in CHOICE_POOL if a != e.answer], CHOICES - 1)
        rng.shuffle(choices)
        out.append((choices, choices.index(e.answer)))
    return out


class ChoiceReader(nn.Module):
    """A memory network's hops, then a choice's score: the dot product of a two-layer answer map of [u, u_K] (the
    question's embedding and the last hop's state: the map can compare what was read with what was asked, which the
    paper's linear answer layer cannot) with the choice word's embedding."""

    def __init__(self, vocab_size: int, dim: int = 32, hidden: int = 64):
        super().__init__()
        self.memory = pyseq.nn.MemoryNetwork(vocab_size, dim, max_sentences=2 * rc.MEMORY, hops=3)
        self.answer = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.choice_embedding = nn.Embedding(vocab_size, dim)

    def forward(self, story, question, choices):
        """story [B, S, W], question [B, Wq], choices [B, CHOICES] word ids -> scores [B, CHOICES]."""
        u, u_K, _ = self.memory.read(story, question)
        return (self.choice_embedding(choices) @ self.answer(torch.cat([u, u_K], 1)).unsqueeze(2)).squeeze(2)


def reader_tensors(examples, choices, vocab: rc.Vocabulary):
    story, question, _ = rc.tensors(examples, vocab)
    ids = torch.tensor([[vocab.ids[c] for c in row] for row, _ in choices])
    return story, question, ids, torch.tensor([label for _, label in choices])


def train_reader(data, vocab_size: int, epochs: int, seed: int) -> ChoiceReader:
    """Adam, the paper's linear start (the first third of the epochs without the attention's softmax) and random
    noise (rc.with_random_noise)."""
    story, question, choices, label = data
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    model = ChoiceReader(vocab_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, epochs // 4), gamma=0.5)
    for epoch in range(epochs):
        model.memory.softmax = epoch >= epochs // 3
        order = torch.randperm(story.shape[0], generator=rng)
        for start in range(0, story.shape[0], 32):
            batch = order[start : start + 32]
            scores = model(rc.with_random_noise(story[batch], rng), question[batch], choices[batch])
            loss = nn.functional.cross_entropy(scores, label[batch])
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        schedule.step()
    return model.eval()


def correct(model: ChoiceReader, data) -> torch.Tensor:
    story, question, choices, label = data
    with torch.no_grad():
        return model(story, question, choices).argmax(1) == label


class SentenceRecognizer:
    """ctc.Recognizer over the words of the stories: trained on `count` sentences of `stories` spoken by the
    training voices; recognize() writes out the words it hears."""

    def __init__(self, stories, count: int, epochs: int, rng: random.Random, speaker: sd.Speaker, log):
        self.tokens = ["<blank>"] + sorted({w for e in stories for s in e.story for w in s})
        index = {w: i for i, w in enumerate(self.tokens)}
        sentences = [s for e in stories for s in e.story]
        voices = sd.train_voices()
        utterances = [sd.speak(rng.choice(sentences), rng.choice(voices), rng, speaker) for _ in range(count)]
        feats, frames = sd.features([u.audio for u in utterances])
        targets = [[index[w] for w in u.words] for u in utterances]
        self.model = ctc.fit(feats, frames, targets, epochs, rng, log, classes=len(self.tokens))

    def recognize(self, audios, batch: int = 256) -> list[list[str]]:
        out = []
        for start in range(0, len(audios), batch):
            feats, frames = sd.features(audios[start : start + batch])
            with torch.no_grad():
                log_probs = self.model(feats, frames)
            out += [[self.tokens[t] for t in ids] for ids in pyseq.ctc.greedy_decode(log_probs, frames)]
        return out


def spoken(examples, recognizer: SentenceRecognizer, rng: random.Random, speaker: sd.Speaker):
    """The examples with each story sentence as the recogniser hears it spoken by the test voice; and the word
    errors and words of those sentences."""
    sentences = [s for e in examples for s in e.story]
    heard = recognizer.recognize([sd.speak(s, sd.TEST_VOICE, rng, speaker).audio for s in sentences])
    errors = sum(ctc.edit_distance(h, s) for h, s in zip(heard, sentences))
    out, at = [], 0
    for e in examples:
        out.append(dataclasses.replace(e, story=heard[at : at + len(e.story)]))
        at += len(e.story)
    return out, errors, sum(map(len, sentences))


def run(quick: bool = False, seed: int = 0, log=print) -> dict:
    started = time.perf_counter()
    n_train, n_test, utterances, recognizer_epochs, reader_epochs = (
        (200, 60, 600, 10, 30) if quick else (1000, 300, 2000, 15, 60))
    rng = random.Random(seed)
    train_sets = {t: story_world.generate(t, n_train, seed=seed) for t in TASKS}
    test_sets = {t: story_world.generate(t, n_test, seed=seed + 1000) for t in TASKS}
    train_all = [e for t in TASKS for e in train_sets[t]]
    test_all = [e for t in TASKS for e in test_sets[t]]
    vocab = rc.Vocabulary(train_all + test_all)

    speaker = sd.Speaker()
    recognizer = SentenceRecognizer(train_all, utterances, recognizer_epochs, rng, speaker, log)
    heard, word_errors, words = spoken(test_all, recognizer, rng, speaker)
    log(f"recogniser: word error rate {word_errors / words:.4f} on the test voice "
        f"({time.perf_counter() - started:.0f} s)")

    train_choices, test_choices = with_choices(train_all, rng), with_choices(test_all, rng)
    reader = train_reader(reader_tensors(train_all, train_choices, vocab), len(vocab), reader_epochs, seed)
    on_speech = correct(reader, reader_tensors(heard, test_choices, vocab))
    on_text = correct(reader, reader_tensors(test_all, test_choices, vocab))
    tasks = {}
    for i, t in enumerate(TASKS):
        part = slice(i * n_test, (i + 1) * n_test)
        tasks[str(t)] = {"accuracy": float(on_speech[part].float().mean()),
                         "text_accuracy": float(on_text[part].float().mean())}
        log(f"task {t}: spoken {tasks[str(t)]['accuracy']:.3f}, text {tasks[str(t)]['text_accuracy']:.3f}")
    return {"accuracy": float(on_speech.float().mean()), "chance": 1 / CHOICES,
            "text_accuracy": float(on_text.float().mean()), "tasks": tasks,
            "word_error_rate": word_errors / words, "stories_train": len(train_all), "stories_test": len(test_all),
            "seconds": time.perf_counter() - started}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (what the tests use)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick, seed=args.seed)))


if __name__ == "__main__":
    main()
