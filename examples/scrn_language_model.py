"""Character-level language models with a Structurally Constrained Recurrent Network (Mikolov et al. 2015): an SCRN
(pyseq.nn.SCRN: a fast sigmoid hidden state and a slow context state with decay 0.95), an LSTM and a tanh RNN
(pyseq.nn.LSTM, pyseq.nn.RNN), each with about the same number of parameters, learn to predict the next character of
English text: the help texts that ship with Python itself (the standard library's pydoc_data, about 460,000
characters of prose and examples), nothing downloaded. The text is split into training (85%), validation (5%) and
test (10%) parts, in order; each model reads the characters as one-hot vectors and trains with truncated
back-propagation through time (32 streams, windows of 100 characters, the states carried from window to window), at
each of three learning rates; the one with the lowest validation perplexity is measured on the test part, read the
same way.

    python examples/scrn_language_model.py           # full run
    python examples/scrn_language_model.py --quick   # the short run the tests use

The last line printed is a JSON object: ppl_scrn, ppl_lstm, ppl_rnn (the test characters' perplexity), parameters
(each model's), learning_rates (the one chosen for each), characters_train, characters_test, epochs, seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import pydoc_data.topics
import torch
from torch import nn

import pyseq

STREAMS, WINDOW = 32, 100
LEARNING_RATES = (3e-3, 1e-2, 3e-2)


def corpus() -> str:
    """The help texts of the standard library in a fixed order, joined by blank lines."""
    topics = pydoc_data.topics.topics
    return "\n\n".join(topics[name] for name in sorted(topics))


class CharModel(nn.Module):
    """One-hot characters -> a recurrent layer -> a linear layer to the next character's logits. The SCRN's output
    layer reads [h_t, s_t], the paper's y_t = softmax(U h_t + V s_t)."""

    def __init__(self, kind: str, vocab: int, hidden: int, context: int = 0):
        super().__init__()
        self.kind, self.vocab = kind, vocab
        if kind == "scrn":
            self.layer = pyseq.nn.SCRN(vocab, hidden, context)
            width = hidden + context
        elif kind == "lstm":
            self.layer = pyseq.nn.LSTM(vocab, hidden)
            width = hidden
        else:
            self.layer = pyseq.nn.RNN(vocab, hidden)
            width = hidden
        self.output = nn.Linear(width, vocab)

    def forward(self, chars: torch.Tensor, state=None):
        """chars [T, B] -> (logits [T, B, vocab], the state after the window, detached)."""
        out, state = self.layer(nn.functional.one_hot(chars, self.vocab).float(), state)
        state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        return self.output(out), state


# (hidden, context) of each model: about 130,000 parameters each over a vocabulary of 100 characters or so.
SIZES = {"scrn": (240, 60), "lstm": (128, 0), "rnn": (276, 0)}


def streams(ids: torch.Tensor) -> torch.Tensor:
    """[steps, STREAMS]: the text cut into STREAMS consecutive parts read side by side."""
    steps = ids.numel() // STREAMS
    return ids[: steps * STREAMS].view(STREAMS, steps).t().contiguous()


def nll_per_char(model: CharModel, data: torch.Tensor) -> float:
    model.eval()
    total, count, state = 0.0, 0, None
    with torch.no_grad():
        for start in range(0, data.shape[0] - 1, WINDOW):
            chars = data[start: start + WINDOW + 1]
            logits, state = model(chars[:-1], state)
            total += float(nn.functional.cross_entropy(logits.reshape(-1, model.vocab), chars[1:].reshape(-1),
                                                       reduction="sum"))
            count += chars[1:].numel()
    model.train()
    return total / count


def train(kind: str, vocab: int, train_data: torch.Tensor, lr: float, epochs: int, seed: int, log) -> CharModel:
    """Adam with a one-cycle schedule peaking at `lr`, gradients clipped to norm 1."""
    torch.manual_seed(seed)
    model = CharModel(kind, vocab, *SIZES[kind])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    windows = (train_data.shape[0] - 1 + WINDOW - 1) // WINDOW
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * windows, pct_start=0.1)
    for epoch in range(epochs):
        state, total = None, 0.0
        for start in range(0, train_data.shape[0] - 1, WINDOW):
            chars = train_data[start: start + WINDOW + 1]
            logits, state = model(chars[:-1], state)
            loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), chars[1:].reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            total += loss.item()
        log(f"{kind} lr={lr} epoch {epoch + 1}: train loss {total / windows:.3f}")
    return model


def run(quick: bool = False, seed: int = 0, log=print) -> dict:
    started = time.perf_counter()
    text = corpus()
    if quick:
        text = text[:60000]
    chars = sorted(set(text))
    ids = torch.tensor([chars.index(c) for c in text], dtype=torch.int64)
    train_end, valid_end = len(text) * 85 // 100, len(text) * 90 // 100
    train_data, valid_data, test_data = (streams(ids[a:b]) for a, b in ((0, train_end), (train_end, valid_end),
                                                                          (valid_end, len(text))))
    epochs, rates = (3, LEARNING_RATES[1:]) if quick else (8, LEARNING_RATES)
    result: dict = {"parameters": {}, "learning_rates": {}}
    for kind in ("scrn", "lstm", "rnn"):
        best = None
        for lr in rates:
            model = train(kind, len(chars), train_data, lr, epochs, seed, log)
            valid = math.exp(nll_per_char(model, valid_data))
            log(f"{kind} lr={lr}: validation perplexity {valid:.3f}")
            if best is None or valid < best[0]:
                best = (valid, lr, model)
        result[f"ppl_{kind}"] = math.exp(nll_per_char(best[2], test_data))
        result["learning_rates"][kind] = best[1]
        result["parameters"][kind] = sum(p.numel() for p in best[2].parameters())
        log(f"{kind}: test perplexity {result[f'ppl_{kind}']:.3f}")
    result.update(characters_train=train_end, characters_test=len(text) - valid_end, epochs=epochs,
                  seconds=time.perf_counter() - started)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (what the tests use)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick, seed=args.seed)))


if __name__ == "__main__":
    main()
