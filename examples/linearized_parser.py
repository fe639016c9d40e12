"""A constituency parser as translation ("grammar as a foreign language", Vinyals et al. 2015): a pyseq encoder-decoder
with attention reads a sentence and writes its parse tree as a bracket sequence, decoded with
pyseq.seq2seq.beam_search until the stop symbol. Sentences and trees come from a small context-free grammar generated
here (no downloads).

The grammar nests noun phrases ("the dog of a friend of the child"), and prepositional phrases attach by their
preposition: "of" inside the noun phrase before it, "in", "on" and "near" to the verb phrase. The output replaces each
word by XX, as in the paper: "(S (NP XX XX )NP (VP XX (NP XX XX )NP )VP )S". Scores: labeled bracket F1 over the
test set (constituents as (label, first word, last word); an output that is not a well-formed tree over the sentence's
words contributes no brackets), and the fraction of outputs that are well-formed trees.

    python examples/linearized_parser.py           # full run
    python examples/linearized_parser.py --quick   # the short run the tests use

The last line printed is a JSON object of the metrics: bracket_f1, valid_trees, sentences_test, seconds (of
training).
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
from torch import nn

import pyseq

DETERMINERS = ["the", "a", "every", "some"]
ADJECTIVES = ["big", "small", "red", "old", "happy", "green"]
NOUNS = ["dog", "cat", "man", "park", "telescope", "garden", "house", "river", "child", "book", "friend", "hill"]
TRANSITIVE = ["saw", "liked", "found", "chased", "read", "painted"]
INTRANSITIVE = ["slept", "ran", "laughed", "waited"]
VP_PREPOSITIONS = ["in", "on", "near"]
WORDS = ["<pad>", "of"] + DETERMINERS + ADJECTIVES + NOUNS + TRANSITIVE + INTRANSITIVE + VP_PREPOSITIONS
WORD_INDEX = {w: i for i, w in enumerate(WORDS)}
LABELS = ["S", "NP", "VP", "PP"]
SYMBOLS = ["<pad>", "<start>", "<stop>", "XX"] + [f"({x}" for x in LABELS] + [f"){x}" for x in LABELS]
PAD, START, STOP = 0, 1, 2
SYMBOL_INDEX = {s: i for i, s in enumerate(SYMBOLS)}


# A tree is (label, children), a child being a tree or a word.
def noun_phrase(rng: random.Random, depth: int):
    children = [rng.choice(DETERMINERS)]
    if rng.random() < 0.3:
        children.append(rng.choice(ADJECTIVES))
    children.append(rng.choice(NOUNS))
    if depth < 2 and rng.random() < 0.35:
        children.append(("PP", ["of", noun_phrase(rng, depth + 1)]))
    return ("NP", children)


def sentence(rng: random.Random):
    if rng.random() < 0.3:
        verb_phrase = [rng.choice(INTRANSITIVE)]
    else:
        verb_phrase = [rng.choice(TRANSITIVE), noun_phrase(rng, 0)]
    if rng.random() < 0.5:
        verb_phrase.append(("PP", [rng.choice(VP_PREPOSITIONS), noun_phrase(rng, 1)]))
    return ("S", [noun_phrase(rng, 0), ("VP", verb_phrase)])


def words_of(tree) -> list[str]:
    return [w for child in tree[1] for w in ([child] if isinstance(child, str) else words_of(child))]


def linearize(tree) -> list[str]:
    label, children = tree
    out = [f"({label}"]
    for child in children:
        out += ["XX"] if isinstance(child, str) else linearize(child)
    return out + [f"){label}"]


def brackets(symbols: list[str], n_words: int) -> set[tuple[str, int, int]] | None:
    """The labeled constituents (label, first word, end) of a bracket sequence, or None if it is not a well-formed
    tree over n_words words."""
    stack, spans, position = [], set(), 0
    for s in symbols:
        if s == "XX":
            if not stack:
                return None
            position += 1
        elif s.startswith("("):
            if position > 0 and not stack:  # a second tree after the first
                return None
            stack.append((s[1:], position))
        else:
            if not stack or stack[-1][0] != s[1:]:
                return None
            label, start = stack.pop()
            spans.add((label, start, position))
    return spans if not stack and position == n_words and spans else None


def make_example(rng: random.Random) -> tuple[list[int], list[int], set]:
    tree = sentence(rng)
    words = words_of(tree)
    symbols = linearize(tree)
    return [WORD_INDEX[w] for w in words], [SYMBOL_INDEX[s] for s in symbols] + [STOP], brackets(symbols, len(words))


def pad(rows: list[list[int]]) -> torch.Tensor:
    out = torch.full((len(rows), max(map(len, rows))), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r)
    return out


class Parser(nn.Module):
    def __init__(self, embedding: int = 48, hidden: int = 128, attn: int = 64):
        super().__init__()
        self.embed_words = nn.Embedding(len(WORDS), embedding, padding_idx=PAD)
        self.embed_symbols = nn.Embedding(len(SYMBOLS), embedding, padding_idx=PAD)
        self.encoder = pyseq.nn.GRU(embedding, hidden, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(2 * hidden, hidden)
        self.decoder = pyseq.nn.GRU(embedding + 2 * hidden, hidden, batch_first=True)
        self.attention = pyseq.nn.AdditiveAttention(hidden, 2 * hidden, attn)
        self.out = nn.Linear(hidden + 2 * hidden, len(SYMBOLS))

    def encode(self, words: torch.Tensor):
        """Encoder states [B, Tw, 2H], key mask [B, Tw], the decoder's initial state [B, H]."""
        mask = words != PAD
        packed = nn.utils.rnn.pack_padded_sequence(self.embed_words(words), mask.sum(1), batch_first=True,
                                                   enforce_sorted=False)
        states, last = self.encoder(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(states, batch_first=True, total_length=words.shape[1])
        return states, mask, torch.tanh(self.bridge(torch.cat([last[0], last[1]], -1)))

    def step(self, symbols: torch.Tensor, state: dict):
        """One decoder step for symbols [R]: log-probs [R, V] and the state advanced (input feeding: the previous
        step's context goes in with the symbol)."""
        x = torch.cat([self.embed_symbols(symbols), state["context"]], -1).unsqueeze(1)
        output, h = self.decoder(x, state["h"].unsqueeze(0))
        output = output[:, 0]
        context, _ = self.attention(output, state["states"], mask=state["mask"], key_proj=state["keys"])
        log_probs = self.out(torch.cat([output, context], -1)).log_softmax(-1)
        return log_probs, {**state, "h": h[0], "context": context}

    def initial_state(self, words: torch.Tensor) -> dict:
        states, mask, h = self.encode(words)
        keys = self.attention.project_keys(states)
        return {"h": h, "context": states.new_zeros(states.shape[0], states.shape[2]), "states": states,
                "mask": mask, "keys": keys}

    def loss(self, words: torch.Tensor, symbols: torch.Tensor) -> torch.Tensor:
        """Teacher forcing, one step at a time (input feeding needs the previous context)."""
        state = self.initial_state(words)
        previous = torch.full((words.shape[0],), START, dtype=torch.long)
        total = 0.0
        for t in range(symbols.shape[1]):
            log_probs, state = self.step(previous, state)
            total = total + nn.functional.nll_loss(log_probs, symbols[:, t], ignore_index=PAD, reduction="sum")
            previous = symbols[:, t]
        return total / (symbols != PAD).sum()

    @torch.no_grad()
    def parse(self, words: torch.Tensor, beam_width: int = 4) -> list[list[str]]:
        hyps = pyseq.seq2seq.beam_search(self.step, self.initial_state(words), words.shape[0], START, STOP,
                                         beam_width=beam_width, max_length=4 * words.shape[1] + 8)
        return [[SYMBOLS[i] for i in best[0].tokens] for best in hyps]


def evaluate(model: Parser, test: list) -> dict:
    model.eval()
    matched = predicted = gold = valid = 0
    for i in range(0, len(test), 100):
        chunk = test[i : i + 100]
        for (words, _, gold_spans), output in zip(chunk, model.parse(pad([w for w, _, _ in chunk]))):
            spans = brackets(output, len(words))
            valid += spans is not None
            spans = spans or set()
            matched += len(spans & gold_spans)
            predicted += len(spans)
            gold += len(gold_spans)
    precision, recall = matched / max(predicted, 1), matched / gold
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    return {"bracket_f1": round(f1, 4), "valid_trees": valid / len(test), "sentences_test": len(test)}


def train(quick: bool = False, seed: int = 0, log=print) -> dict:
    rng = random.Random(seed)
    torch.manual_seed(seed)
    n_train, epochs = (2000, 4) if quick else (6000, 6)
    data = [make_example(rng) for _ in range(n_train)]
    test = [make_example(rng) for _ in range(200 if quick else 500)]
    model = Parser()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    start = time.perf_counter()
    for epoch in range(epochs):
        rng.shuffle(data)
        model.train()
        total = 0.0
        for i in range(0, len(data), 64):
            batch = data[i : i + 64]
            optimizer.zero_grad()
            loss = model.loss(pad([w for w, _, _ in batch]), pad([s for _, s, _ in batch]))
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            total += loss.item() * len(batch)
        log(f"epoch {epoch + 1}: loss per symbol {total / len(data):.4f}")
    seconds = time.perf_counter() - start
    return {**evaluate(model, test), "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short run (what the tests use)")
    args = parser.parse_args()
    print(json.dumps(train(quick=args.quick)))


if __name__ == "__main__":
    main()
