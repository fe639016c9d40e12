"""A small sequence-to-sequence model with attention, from pyseq's GRU and additive attention: it learns to reverse
sequences of digits that it generates itself (no downloads), decodes greedily until an end-of-sequence token, and
plots the attention weights of one example to a PNG with matplotlib (the anti-diagonal of a reversal).

    python examples/seq2seq_attention.py [--png attention.png]   # full run: 100% exact sequences, ~10 s of training
    python examples/seq2seq_attention.py --quick                 # the short run the tests use (above 60%)

Encoder: embedding + bidirectional pyseq.nn.GRU. Decoder: pyseq.nn.GRU over the previous target token; its output
attends over the encoder states (pyseq.nn.AdditiveAttention, Luong-style placement), and [output; context] predicts
the next token. Training feeds the whole target at once (teacher forcing: all decoder queries in one attention
call); decoding runs one step at a time (one query per call, keys projected once).

The last line printed is a JSON object of the metrics: exact_match (the held-out sequences reversed exactly), seconds
(of training).
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
from torch import nn

import pyseq

PAD, BOS, EOS = 0, 1, 2
DIGITS = range(3, 13)
VOCAB = 13


def make_pair(rng: random.Random, min_len: int = 4, max_len: int = 10) -> tuple[list[int], list[int]]:
    source = [rng.choice(DIGITS) for _ in range(rng.randint(min_len, max_len))]
    return source, source[::-1] + [EOS]


def pad(rows: list[list[int]]) -> torch.Tensor:
    out = torch.full((len(rows), max(map(len, rows))), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r)
    return out


class Seq2Seq(nn.Module):
    def __init__(self, embedding: int = 32, hidden: int = 64, attn: int = 64):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, embedding, padding_idx=PAD)
        self.encoder = pyseq.nn.GRU(embedding, hidden, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(2 * hidden, hidden)
        self.decoder = pyseq.nn.GRU(embedding, hidden, batch_first=True)
        self.attention = pyseq.nn.AdditiveAttention(hidden, 2 * hidden, attn)
        self.out = nn.Linear(3 * hidden, VOCAB)

    def encode(self, source: torch.Tensor):
        """Encoder states [B, Ts, 2H], key mask [B, Ts] and the decoder's initial state [1, B, H]."""
        mask = source != PAD
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(source), mask.sum(1), batch_first=True,
                                                   enforce_sorted=False)
        states, last = self.encoder(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(states, batch_first=True, total_length=source.shape[1])
        h0 = torch.tanh(self.bridge(torch.cat([last[0], last[1]], -1))).unsqueeze(0)
        return states, mask, h0

    def forward(self, source: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits [B, Tt, V] for every target position at once."""
        states, mask, h0 = self.encode(source)
        outputs, _ = self.decoder(self.embed(target_in), h0)
        context, _ = self.attention(outputs, states, mask=mask)  # all Tt queries in one call
        return self.out(torch.cat([outputs, context], -1))

    @torch.no_grad()
    def greedy(self, source: torch.Tensor, max_len: int = 20):
        """Greedy decoding until EOS: token lists and, for each sequence, its attention weights [steps, Ts]."""
        states, mask, h = self.encode(source)
        keys = self.attention.project_keys(states)  # once for all steps
        token = torch.full((source.shape[0], 1), BOS, dtype=torch.long)
        tokens, weights, done = [], [], torch.zeros(source.shape[0], dtype=torch.bool)
        for _ in range(max_len):
            output, h = self.decoder(self.embed(token), h)
            context, w = self.attention(output[:, 0], states, mask=mask, return_weights=True, key_proj=keys)
            token = self.out(torch.cat([output[:, 0], context], -1)).argmax(-1, keepdim=True)
            tokens.append(token[:, 0])
            weights.append(w)
            done |= token[:, 0] == EOS
            if done.all():
                break
        tokens, weights = torch.stack(tokens, 1), torch.stack(weights, 1)
        results = []
        for b in range(source.shape[0]):
            seq = tokens[b].tolist()
            steps = seq.index(EOS) + 1 if EOS in seq else len(seq)
            results.append((seq[: steps - 1] if EOS in seq else seq, weights[b, :steps]))
        return results


def token_label(token: int) -> str:
    return "<eos>" if token == EOS else str(token - DIGITS[0])


def plot_attention(path: str, weights: torch.Tensor, source: list[int], output: list[int]) -> None:
    """The attention weights [output steps, source positions] as a heat map, the source tokens across, the output
    tokens (then the end of sequence) down."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    labels = [token_label(t) for t in output + [EOS]][: weights.shape[0]]
    fig, ax = plt.subplots(figsize=(0.4 * len(source) + 2.2, 0.4 * len(labels) + 1.4))
    image = ax.imshow(weights.numpy(), cmap="Greys", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(source)), [token_label(t) for t in source])
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("source token")
    ax.set_ylabel("output token")
    ax.set_title("attention weights", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.05)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train(quick: bool = False, seed: int = 0, png: str | None = None, log=print) -> dict:
    """Trains the model; returns the exact-sequence accuracy of greedy decoding on held-out pairs and the seconds."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    n_train, epochs = (1500, 6) if quick else (6000, 12)
    pairs = [make_pair(rng) for _ in range(n_train)]
    test = [make_pair(rng) for _ in range(200)]
    model = Seq2Seq()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss(ignore_index=PAD)
    start = time.perf_counter()
    for epoch in range(epochs):
        rng.shuffle(pairs)
        total = 0.0
        for i in range(0, len(pairs), 64):
            batch = pairs[i : i + 64]
            source = pad([s for s, _ in batch])
            target = pad([t for _, t in batch])
            target_in = torch.cat([torch.full((len(batch), 1), BOS), target[:, :-1]], 1)
            optimizer.zero_grad()
            loss = loss_fn(model(source, target_in).reshape(-1, VOCAB), target.reshape(-1))
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            total += loss.item() * len(batch)
        log(f"epoch {epoch + 1}: loss {total / len(pairs):.4f}")
    seconds = time.perf_counter() - start
    model.eval()
    decoded = model.greedy(pad([s for s, _ in test]))
    correct = sum(tokens == target[:-1] for (tokens, _), (_, target) in zip(decoded, test))
    if png:
        source, _ = test[0]
        plot_attention(png, decoded[0][1][:, : len(source)], source, decoded[0][0])
        log(f"attention weights of {source} -> {decoded[0][0]} written to {png}")
    return {"exact_match": correct / len(test), "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short run (what the tests use)")
    parser.add_argument("--png", default="attention.png", help="where to plot one example's attention weights")
    args = parser.parse_args()
    print(json.dumps(train(quick=args.quick, png=args.png)))


if __name__ == "__main__":
    main()
