"""A hierarchical sequence-to-sequence auto-encoder of paragraphs (Li, Luong and Jurafsky 2015): a word-level pyseq
LSTM encodes each sentence into a vector, a sentence-level pyseq LSTM encodes those vectors into the paragraph's
state; the decoder mirrors it: a sentence-level LSTM, started from the paragraph's state, gives each sentence's
state, from which a word-level LSTM writes the sentence's words. The sentence decoder's input is the word encoder's
vector of the sentence before (at test time: of the sentence just written), and it also says when the paragraph
ends. The paragraphs are stories of examples/story_world.py (people move, pick up and drop things), three to six
sentences each.

    python examples/text_autoencoder.py           # full run
    python examples/text_autoencoder.py --quick   # the short run the tests use

The last line printed is a JSON object: token_accuracy (of the test paragraphs written back from their states, word
by word at each sentence's places), exact_match (paragraphs written back whole), order_sensitivity (the mean cosine
distance between a test sentence's vector and the vector of its words shuffled: a bag of words gives 0),
paragraphs_train, paragraphs_test, seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import torch
from torch import nn

import pyseq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import speech_data as sd  # noqa: E402  (its fit: Adam, one-cycle schedule, clipping)
import story_world  # noqa: E402

PAD, END = 0, 1  # END closes every sentence


def paragraphs(count: int, seed: int) -> list[list[list[str]]]:
    """`count` paragraphs: the first three to six sentences of task-2 stories."""
    rng = random.Random(seed)
    out = []
    for e in story_world.generate(2, count, seed=seed):
        out.append(e.story[: rng.randint(3, min(6, len(e.story)))] if len(e.story) >= 3 else e.story)
    return out


class Words:
    def __init__(self, data):
        self.words = ["<pad>", "<end>"] + sorted({w for p in data for s in p for w in s})
        self.ids = {w: i for i, w in enumerate(self.words)}

    def __len__(self):
        return len(self.words)

    def tensor(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        """Word ids [P, S, W] (each sentence's words, END, padding) and sentence counts [P]."""
        S = max(len(p) for p in data)
        W = max(len(s) for p in data for s in p) + 1
        out = torch.zeros(len(data), S, W, dtype=torch.int64)
        for i, p in enumerate(data):
            for j, s in enumerate(p):
                out[i, j, : len(s) + 1] = torch.tensor([self.ids[w] for w in s] + [END])
        return out, torch.tensor([len(p) for p in data])


class HierarchicalAutoEncoder(nn.Module):
    def __init__(self, vocab_size: int, embedding: int = 64, hidden: int = 128):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embedding, padding_idx=PAD)
        self.word_encoder = pyseq.nn.LSTM(embedding, hidden, batch_first=True)
        self.sentence_encoder = pyseq.nn.LSTM(hidden, hidden, batch_first=True)
        self.sentence_decoder = pyseq.nn.LSTM(hidden, hidden, batch_first=True)
        self.word_decoder = pyseq.nn.LSTM(embedding + hidden, hidden, batch_first=True)
        self.words_out = nn.Linear(hidden, vocab_size)
        self.more_out = nn.Linear(hidden, 1)  # does another sentence follow this one?

    def encode_sentences(self, words: torch.Tensor) -> torch.Tensor:
        """[N, W] word ids (END included, padding after) -> [N, hidden]: the word encoder's last state. It reads each
        sentence backwards, so that the first words, which the decoder writes first, are the nearest."""
        lengths = (words != PAD).sum(1).clamp_min(1)
        backwards = words.gather(1, (lengths.unsqueeze(1) - 1 - torch.arange(words.shape[1])).clamp_min(0))
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(backwards), lengths, batch_first=True,
                                                   enforce_sorted=False)
        _, (h, _) = self.word_encoder(packed)
        return h[-1]

    def encode(self, words: torch.Tensor, counts: torch.Tensor):
        """[P, S, W], [P] -> (the sentence vectors [P, S, hidden], the paragraph's state (h, c))."""
        P, S, W = words.shape
        codes = self.encode_sentences(words.view(P * S, W)).view(P, S, -1)
        packed = nn.utils.rnn.pack_padded_sequence(codes, counts, batch_first=True, enforce_sorted=False)
        _, state = self.sentence_encoder(packed)
        return codes, state

    def write_words(self, sentence_states: torch.Tensor, previous_words: torch.Tensor) -> torch.Tensor:
        """Teacher-forced word logits [N, W, V] from sentence states [N, hidden] and the words before each place
        [N, W] (PAD first)."""
        N, W = previous_words.shape
        inputs = torch.cat([self.embed(previous_words), sentence_states.unsqueeze(1).expand(N, W, -1)], 2)
        start = (sentence_states.unsqueeze(0).contiguous(), torch.zeros_like(sentence_states).unsqueeze(0))
        out, _ = self.word_decoder(inputs, start)
        return self.words_out(out)

    def loss(self, words: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        P, S, W = words.shape
        codes, state = self.encode(words, counts)
        previous_codes = torch.cat([torch.zeros_like(codes[:, :1]), codes[:, :-1]], 1)
        sentence_states, _ = self.sentence_decoder(previous_codes, state)  # [P, S, hidden]
        present = torch.arange(S).unsqueeze(0) < counts.unsqueeze(1)  # [P, S]
        previous_words = torch.cat([torch.zeros_like(words[..., :1]), words[..., :-1]], 2)
        logits = self.write_words(sentence_states[present], previous_words[present])
        word_loss = nn.functional.cross_entropy(logits.flatten(0, 1), words[present].flatten(), ignore_index=PAD)
        more = (torch.arange(S).unsqueeze(0) < (counts - 1).unsqueeze(1)).float()
        more_loss = nn.functional.binary_cross_entropy_with_logits(self.more_out(sentence_states).squeeze(2)[present],
                                                                   more[present])
        return word_loss + more_loss

    @torch.no_grad()
    def reconstruct(self, words: torch.Tensor, counts: torch.Tensor, max_sentences: int, max_words: int):
        """Greedy decoding from each paragraph's state: [P, max_sentences, max_words] word ids (PAD after each
        sentence's END and after the last sentence)."""
        P = words.shape[0]
        _, state = self.encode(words, counts)
        out = torch.zeros(P, max_sentences, max_words, dtype=torch.int64)
        previous_code = torch.zeros(P, 1, state[0].shape[-1])
        going = torch.ones(P, dtype=torch.bool)
        for s in range(max_sentences):
            sentence_state, state = self.sentence_decoder(previous_code, state)
            g = sentence_state[:, 0]
            h = (g.unsqueeze(0).contiguous(), torch.zeros_like(g).unsqueeze(0))
            previous, ended = torch.zeros(P, dtype=torch.int64), ~going
            for t in range(max_words):
                step, h = self.word_decoder(torch.cat([self.embed(previous), g], 1).unsqueeze(1), h)
                previous = self.words_out(step[:, 0]).argmax(1).masked_fill(ended, PAD)
                out[:, s, t] = previous
                ended |= previous == END
            previous_code = self.encode_sentences(out[:, s]).unsqueeze(1)
            going &= self.more_out(g).squeeze(1) > 0
        return out


def order_sensitivity(model: HierarchicalAutoEncoder, words: torch.Tensor, rng: random.Random) -> float:
    """The mean cosine distance between the vectors of sentences and of their words shuffled (END kept last);
    sentences whose shuffle is themselves left out."""
    sentences = words.flatten(0, 1)
    sentences = sentences[(sentences != PAD).any(1)]
    shuffled = sentences.clone()
    keep = []
    for i, row in enumerate(sentences.tolist()):
        n = row.index(END)
        order = list(range(n))
        rng.shuffle(order)
        shuffled[i, :n] = sentences[i, :n][order]
        keep.append(row[:n] != [row[j] for j in order])
    keep = torch.tensor(keep)
    with torch.no_grad():
        a, b = model.encode_sentences(sentences[keep]), model.encode_sentences(shuffled[keep])
    return float((1 - nn.functional.cosine_similarity(a, b)).mean())


def run(quick: bool = False, seed: int = 0, log=print) -> dict:
    started = time.perf_counter()
    n_train, n_test, epochs = (3000, 200, 10) if quick else (8000, 1000, 25)
    train_text, test_text = paragraphs(n_train, seed), paragraphs(n_test, seed + 1000)
    vocab = Words(train_text + test_text)
    train_words, train_counts = vocab.tensor(train_text)
    test_words, test_counts = vocab.tensor(test_text)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = HierarchicalAutoEncoder(len(vocab))
    sd.fit(model, lambda batch: model.loss(train_words[batch], train_counts[batch]), n_train, epochs, rng, log, "loss")
    S, W = test_words.shape[1], test_words.shape[2]
    written = model.reconstruct(test_words, test_counts, S, W)
    real = test_words != PAD
    token_accuracy = float((written == test_words)[real].float().mean())
    # exact: every word right, and nothing written where the paragraph has none
    exact = float((written == test_words).all(2).all(1).float().mean())
    return {"token_accuracy": token_accuracy, "exact_match": exact,
            "order_sensitivity": order_sensitivity(model, test_words, rng), "paragraphs_train": n_train,
            "paragraphs_test": n_test, "seconds": time.perf_counter() - started}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (what the tests use)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick, seed=args.seed)))


if __name__ == "__main__":
    main()
