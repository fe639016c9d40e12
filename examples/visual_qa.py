"""Visual question answering on generated scenes in the style of Sort-of-CLEVR (Santoro et al. 2017, made here): six
objects of six colours, each a square or a circle, on a small image; non-relational questions (the shape of the
object of a colour, whether it is on the left or the right, at the top or the bottom) and relational ones (the shape
of the object nearest to, or farthest from, the object of a colour; how many objects have its shape). A small CNN's
feature-map cells, with their coordinates, are the image's regions; the question attends over them in two hops of
pyseq's general (bilinear) attention (pyseq.nn.DotAttention), the first looking for the object the question names,
the second led by the question's state after the first, each hop's read mixed into the question's state by a hidden
layer, and an MLP answers from that state and the pooled image. The baseline is the same CNN average-pooled,
concatenated with the question, and an MLP. Each model is the best of eight trainings on a held-out tenth of the
training scenes. The attention of both hops over a few images is drawn to a PNG.

    python examples/visual_qa.py [--png visual_qa.png]   # full run
    python examples/visual_qa.py --quick                 # the short run the tests use

The last line printed is a JSON object: accuracy_nonrelational, accuracy_relational (the attention model's, on
test scenes), baseline_nonrelational, baseline_relational, seconds.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

import pyseq

SIZE, CELL = 48, 8           # image side, and the grid cell an object sits in (SIZE / CELL = 6 cells a side)
COLOURS = [(1.0, 0.0, 0.0), (0.0, 0.8, 0.0), (0.0, 0.0, 1.0), (1.0, 0.55, 0.0), (0.5, 0.5, 0.5), (1.0, 1.0, 0.0)]
ANSWERS = ["square", "circle", "left", "right", "top", "bottom", "1", "2", "3", "4", "5", "6"]
# 0-2 non-relational: shape, left/right, top/bottom; 3-5 relational: shape of the nearest, of the farthest, count
QUESTION_TYPES = 6


def scenes(count: int, generator: torch.Generator):
    """Images [count, 3, SIZE, SIZE], object centres [count, 6, 2] (x, y in pixels) and shapes [count, 6] (0 square,
    1 circle), the objects in distinct grid cells."""
    cells = SIZE // CELL
    images = torch.zeros(count, 3, SIZE, SIZE)
    centres = torch.zeros(count, len(COLOURS), 2)
    shapes = torch.randint(0, 2, (count, len(COLOURS)), generator=generator)
    ys, xs = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    for n in range(count):
        places = torch.randperm(cells * cells, generator=generator)[: len(COLOURS)]
        for c, place in enumerate(places.tolist()):
            cx, cy = (place % cells + 0.5) * CELL, (place // cells + 0.5) * CELL
            centres[n, c] = torch.tensor([cx, cy])
            if shapes[n, c] == 0:
                inside = ((xs - cx).abs() <= CELL * 0.4) & ((ys - cy).abs() <= CELL * 0.4)
            else:
                inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= (CELL * 0.45) ** 2
            images[n, :, inside] = torch.tensor(COLOURS[c]).unsqueeze(1)
    return images, centres, shapes


def questions(centres: torch.Tensor, shapes: torch.Tensor, generator: torch.Generator):
    """One question per scene: its encoding [count, 6 + QUESTION_TYPES] (the colour one-hot, the type one-hot), the
    answer [count] (an index into ANSWERS) and whether it is relational [count]."""
    count = centres.shape[0]
    colour = torch.randint(0, len(COLOURS), (count,), generator=generator)
    kind = torch.randint(0, QUESTION_TYPES, (count,), generator=generator)
    rows = torch.arange(count)
    own = centres[rows, colour]  # [count, 2]
    distance = (centres - own.unsqueeze(1)).norm(dim=2)  # [count, 6]
    nearest = distance.masked_fill(distance == 0, float("inf")).argmin(1)
    farthest = distance.argmax(1)
    same_shape = (shapes == shapes[rows, colour].unsqueeze(1)).sum(1)  # 1..6
    answer = torch.stack([
        shapes[rows, colour],                                  # shape
        2 + (own[:, 0] >= SIZE / 2).long(),                    # left / right
        4 + (own[:, 1] >= SIZE / 2).long(),                    # top / bottom
        shapes[rows, nearest],                                 # shape of the nearest
        shapes[rows, farthest],                                # shape of the farthest
        5 + same_shape,                                        # count
    ], 1)[rows, kind]
    encoding = torch.cat([nn.functional.one_hot(colour, len(COLOURS)),
                          nn.functional.one_hot(kind, QUESTION_TYPES)], 1).float()
    return encoding, answer, kind >= 3


class Encoder(nn.Module):
    """A CNN whose feature-map cells are the grid cells: an 8x8 stride-8 convolution (each cell's colour and shape),
    then a 1x1 convolution: [B, 3, 48, 48] -> [B, channels, 6, 6]. (No convolution across cells: a 3x3 one mixed
    the neighbours' colours into each cell, and the attention then often failed to find the object of a colour.)"""

    def __init__(self, channels: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, channels, CELL, stride=CELL), nn.ReLU(),
                                 nn.Conv2d(channels, channels, 1), nn.ReLU())

    def forward(self, images):
        return self.net(images)


def regions(features: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] feature maps -> [B, H W, C + 3] region vectors: each cell's features normalized over the
    channels (layer norm without parameters: the attention's scores start on one scale, and it finds the colours
    more often), with its (x, y) in [-1, 1] and x^2 + y^2 (with it a bilinear score can be a squared distance to a
    point the question's state holds)."""
    B, C, H, W = features.shape
    features = nn.functional.layer_norm(features.permute(0, 2, 3, 1), (C,)).permute(0, 3, 1, 2)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    coords = torch.stack([xs, ys, xs**2 + ys**2]).expand(B, 3, H, W)
    return torch.cat([features, coords], 1).flatten(2).transpose(1, 2)


class AttentionQA(nn.Module):
    """The question attends over the regions in two hops of (general, bilinear) attention: the first hop's query is
    the object the question names (its colour), the second's the question's state after the first hop,
    u_{k+1} = u_k + GELU(W [u_k, V read_k]) from u_0 = the whole question; the answer from u_K and the image's mean
    region (a count needs it: the attention's weights sum to one). (With the whole question as the first query, the
    first hop of a relational question seldom found the object of its colour, and the second then had nothing to
    relate to.)"""

    def __init__(self, channels: int = 32, hidden: int = 64, hops: int = 2):
        super().__init__()
        self.encoder = Encoder(channels)
        self.question = nn.Linear(len(COLOURS) + QUESTION_TYPES, hidden)
        self.named = nn.Linear(len(COLOURS), hidden)
        self.attend = nn.ModuleList(pyseq.nn.DotAttention(hidden, channels + 3, score="general") for _ in range(hops))
        self.read = nn.ModuleList(nn.Linear(channels + 3, hidden) for _ in range(hops))
        self.mix = nn.ModuleList(nn.Sequential(nn.Linear(2 * hidden, hidden), nn.GELU()) for _ in range(hops))
        self.answer = nn.Sequential(nn.Linear(hidden + channels, hidden), nn.GELU(), nn.Linear(hidden, len(ANSWERS)))

    def forward(self, images, question, return_weights: bool = False):
        features = self.encoder(images)
        keys = regions(features)
        u, weights = self.question(question), []
        for hop, (attend, read, mix) in enumerate(zip(self.attend, self.read, self.mix)):
            query = self.named(question[:, : len(COLOURS)]) if hop == 0 else u
            context, w = attend(query, keys, return_weights=True)
            u = u + mix(torch.cat([u, read(context)], 1))
            weights.append(w)
        logits = self.answer(torch.cat([u, features.mean((2, 3))], 1))
        return (logits, torch.stack(weights)) if return_weights else logits


class PooledQA(nn.Module):
    """The baseline: the CNN average-pooled, concatenated with the question, an MLP."""

    def __init__(self, channels: int = 32, hidden: int = 64):
        super().__init__()
        self.encoder = Encoder(channels)
        self.mlp = nn.Sequential(nn.Linear(channels + len(COLOURS) + QUESTION_TYPES, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, len(ANSWERS)))

    def forward(self, images, question):
        return self.mlp(torch.cat([self.encoder(images).mean((2, 3)), question], 1))


def train(model: nn.Module, data, epochs: int, seed: int) -> nn.Module:
    images, question, answer, _ = data
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(images.shape[0], generator=rng)
        for start in range(0, images.shape[0], 64):
            batch = order[start : start + 64]
            loss = nn.functional.cross_entropy(model(images[batch], question[batch]), answer[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
    model.eval()
    return model


def answered(model: nn.Module, data) -> torch.Tensor:
    """Whether the model answers each question of `data` right [count]."""
    images, question, answer, _ = data
    with torch.no_grad():
        return torch.cat([model(images[s : s + 500], question[s : s + 500]).argmax(1) == answer[s : s + 500]
                          for s in range(0, images.shape[0], 500)])


def accuracies(model: nn.Module, data) -> tuple[float, float, list[float]]:
    """Non-relational and relational accuracy, and the accuracy per question type."""
    right, relational = answered(model, data), data[3]
    kind = data[1][:, len(COLOURS):].argmax(1)
    per_type = [round(float(right[kind == k].float().mean()), 3) for k in range(QUESTION_TYPES)]
    return float(right[~relational].float().mean()), float(right[relational].float().mean()), per_type


def best_of_restarts(make_model, data, epochs: int, seed: int, restarts: int) -> nn.Module:
    """`restarts` trainings from different initializations on all but the last tenth of `data`, keeping the one that
    answers the most of that tenth (held out)."""
    held_out = data[0].shape[0] // 10
    training = tuple(t[:-held_out] for t in data)
    validation = tuple(t[-held_out:] for t in data)
    runs = [train(make_model(), training, epochs, seed + 100 * r) for r in range(restarts)]
    return max(runs, key=lambda model: int(answered(model, validation).sum()))


def plot(model: AttentionQA, data, path: str, count: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, question, answer, _ = data
    with torch.no_grad():
        logits, weights = model(images[:count], question[:count], return_weights=True)
    kinds = ["shape?", "left or right?", "top or bottom?", "shape of nearest?", "shape of farthest?",
             "how many of its shape?"]
    names = ["red", "green", "blue", "orange", "gray", "yellow"]
    fig, axes = plt.subplots(count, 3, figsize=(7, 2.4 * count))
    side = int(weights.shape[-1] ** 0.5)
    for n in range(count):
        colour, kind = int(question[n, :6].argmax()), int(question[n, 6:].argmax())
        axes[n, 0].imshow(images[n].permute(1, 2, 0).numpy())
        axes[n, 0].set_title(f"{names[colour]}: {kinds[kind]}\n{ANSWERS[int(logits[n].argmax())]} "
                             f"(true {ANSWERS[int(answer[n])]})", fontsize=8)
        for k in range(2):
            axes[n, k + 1].imshow(weights[k, n].view(side, side).numpy(), cmap="magma")
            axes[n, k + 1].set_title(f"hop {k + 1}", fontsize=8)
        for ax in axes[n]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run(quick: bool = False, seed: int = 0, png: str | None = None, log=print) -> dict:
    started = time.perf_counter()
    train_count, test_count, epochs, restarts = (4000, 500, 12, 1) if quick else (12000, 2000, 60, 8)
    generator = torch.Generator().manual_seed(seed)
    datasets = []
    for count in (train_count, test_count):
        images, centres, shapes = scenes(count, generator)
        datasets.append((images, *questions(centres, shapes, generator)))
    train_data, test_data = datasets
    attention = best_of_restarts(AttentionQA, train_data, epochs, seed, restarts)
    nonrelational, relational, per_type = accuracies(attention, test_data)
    log(f"attention: non-relational {nonrelational:.3f}, relational {relational:.3f}, per question type "
        f"{per_type} ({time.perf_counter() - started:.0f} s)")
    pooled = best_of_restarts(PooledQA, train_data, epochs, seed, restarts)
    base_nonrelational, base_relational, base_per_type = accuracies(pooled, test_data)
    log(f"pooled CNN: non-relational {base_nonrelational:.3f}, relational {base_relational:.3f}, per question type "
        f"{base_per_type} ({time.perf_counter() - started:.0f} s)")
    if png:
        plot(attention, test_data, png)
    return {"accuracy_nonrelational": nonrelational, "accuracy_relational": relational,
            "baseline_nonrelational": base_nonrelational, "baseline_relational": base_relational,
            "seconds": time.perf_counter() - started}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (what the tests use)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--png", default="visual_qa.png")
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick, seed=args.seed, png=args.png)))


if __name__ == "__main__":
    main()
