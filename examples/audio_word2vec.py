"""Audio Word2Vec (Chung et al. 2016): a sequence-to-sequence auto-encoder over spoken word segments, whose encoder's
last state is the segment's vector. The speech is examples/speech_data.py's synthesised commands, cut into word
segments at the word starts eSpeak NG reports. A pyseq GRU encoder reads a segment's log-mel frames; a pyseq GRU
decoder, given only that vector at every step, reconstructs the frames (in reverse order). No word labels are used in
training. Evaluation: each segment spoken by the test voice (one no training utterance has) retrieves its nearest
vector (cosine) among segments spoken by the training voices; retrieval_at_1 is how often that neighbour is the same
word, chance how often a random one would be.

    python examples/audio_word2vec.py           # full run
    python examples/audio_word2vec.py --quick   # the short run the tests use

The last line printed is a JSON object of the metrics: retrieval_at_1, chance, segments_test, segments_train,
seconds (of training).
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
from torch import nn

import pyseq
import speech_data as sd


def segments_of(utterances: list[sd.Utterance]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """The word segments' labels, features [N, T, F] and frames [N] (segments too short for a frame dropped)."""
    pieces = [(word, audio) for u in utterances for word, audio in u.segments() if len(audio) >= 2000]
    feats, frames = sd.features([audio for _, audio in pieces])
    return [word for word, _ in pieces], feats, frames


class AutoEncoder(nn.Module):
    def __init__(self, n_features: int, hidden: int = 256):
        super().__init__()
        self.encoder = pyseq.nn.GRU(n_features, hidden, batch_first=True)
        self.decoder = pyseq.nn.GRU(hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, n_features)

    def encode(self, feats: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """The segment vectors [B, hidden]: the encoder's state after each segment's last frame."""
        packed = nn.utils.rnn.pack_padded_sequence(feats, frames, batch_first=True, enforce_sorted=False)
        _, h_n = self.encoder(packed)
        return h_n[0]

    def reconstruction_loss(self, feats: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        code = self.encode(feats, frames)
        T = feats.shape[1]
        out, _ = self.decoder(code.unsqueeze(1).expand(-1, T, -1).contiguous())
        steps = torch.arange(T)
        valid = steps < frames.unsqueeze(1)
        # target: each segment's frames in reverse order, starting from its last frame
        index = (frames.unsqueeze(1) - 1 - steps).clamp(min=0)
        target = feats.gather(1, index.unsqueeze(2).expand(-1, -1, feats.shape[2]))
        return ((self.out(out) - target) ** 2).mean(2)[valid].mean()


def train(quick: bool = False, seed: int = 0, log=print) -> dict:
    rng = random.Random(seed)
    torch.manual_seed(seed)
    n_train, n_test, epochs = (600, 60, 6) if quick else (2000, 200, 20)
    speaker = sd.Speaker()
    train_words, feats, frames = segments_of(sd.synthesize(n_train, sd.train_voices(), rng, speaker))
    test_words, test_feats, test_frames = segments_of(sd.synthesize(n_test, [sd.TEST_VOICE], rng, speaker))
    log(f"{len(train_words)} training segments, {len(test_words)} test segments ({sd.TEST_VOICE})")
    model = AutoEncoder(feats.shape[2])
    n = len(train_words)

    def batch_loss(batch: list[int]) -> torch.Tensor:
        T = int(frames[batch].max())
        return model.reconstruction_loss(feats[batch, :T], frames[batch])

    start = time.perf_counter()
    sd.fit(model, batch_loss, n, epochs, rng, log, "reconstruction error per frame", batch_size=64)
    seconds = time.perf_counter() - start

    with torch.no_grad():
        database = nn.functional.normalize(model.encode(feats, frames), dim=1)
        queries = nn.functional.normalize(model.encode(test_feats, test_frames), dim=1)
    nearest = (queries @ database.T).argmax(1).tolist()
    hits = sum(train_words[j] == word for j, word in zip(nearest, test_words))
    chance = sum(train_words.count(word) for word in test_words) / (len(test_words) * n)
    return {"retrieval_at_1": round(hits / len(test_words), 4), "chance": round(chance, 4),
            "segments_test": len(test_words), "segments_train": n, "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short run (what the tests use)")
    args = parser.parse_args()
    print(json.dumps(train(quick=args.quick)))


if __name__ == "__main__":
    main()
