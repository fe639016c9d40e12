"""Real speech for the speech examples, made on this machine: eSpeak NG (PyPI's espeakng-loader ships its library
and voices; no download at run time) speaks word sequences from a small grammar of spoken commands in several
voices, speeds and pitches, and noise is added. Shared by ctc_speech_recognizer.py, audio_word2vec.py,
hybrid_dnn_hmm.py and spoken_qa.py (which speaks the stories of story_world.py).

The voices are eSpeak's English accents combined with its voice variants (male and female timbres); the test voice
is an accent and a variant that no training voice has.
"""

from __future__ import annotations

import ctypes
import dataclasses
import math
import random
from typing import Callable

import numpy as np
import torch

import pyseq

SAMPLE_RATE = 22050  # eSpeak NG's output rate

# Commands: each a sequence of slots, each slot filled at random from its words, so that some word orders are far
# likelier than others (what a language model learns).
DEVICES = ["light", "fan", "radio", "heater", "lamp"]
ROOMS = ["kitchen", "bedroom", "garage", "office", "hall"]
NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
TEMPLATES = [
    [["turn"], ["on", "off"], ["the"], DEVICES, ["in"], ["the"], ROOMS],
    [["set"], ["the"], ["alarm", "timer"], ["for"], NUMBERS, ["minutes", "hours"]],
    [["play"], ["some", "the"], ["music", "news", "radio"]],
    [["open", "close"], ["the"], ["door", "window", "garage"]],
    [["call"], ["mum", "dad", "home", "work"], ["at"], NUMBERS],
]
VOCABULARY = sorted({word for template in TEMPLATES for slot in template for word in slot})

TRAIN_ACCENTS = ["en-us", "en", "en-gb-x-rp", "en-029", "en-gb-scotland"]
TRAIN_VARIANTS = ["m1", "m2", "m3", "m5", "f1", "f2", "f3"]
TEST_VOICE = "en-us-nyc+f4"  # an accent and a variant no training voice has
DEV_VOICE = "en-gb-x-gbcwmd+f5"  # another: for choosing decoding settings, never the test voice


def sentence(rng: random.Random) -> list[str]:
    return [slot[0] if len(slot) == 1 else rng.choice(slot) for slot in rng.choice(TEMPLATES)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))
_WORD_EVENT, _LIST_TERMINATED = 1, 0
_RATE, _PITCH, _RANGE = 1, 3, 4  # espeak_PARAMETER


class Speaker:
    """eSpeak NG through its C API (ctypes), synchronous: speak() returns the samples of one utterance."""

    def __init__(self):
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        rate = self.lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0)  # 2: synchronous
        if rate != SAMPLE_RATE:
            raise RuntimeError(f"eSpeak NG did not start (returned {rate})")
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                          ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self._chunks: list[np.ndarray] = []
        # (character offset in the text, first sample) of each word eSpeak reports: not every word (it folds an
        # unstressed "the" into the word before)
        self.word_starts: list[tuple[int, int]] = []
        self._callback = _CALLBACK(self._receive)  # kept alive as long as the library may call it
        self.lib.espeak_SetSynthCallback(self._callback)

    def _receive(self, wav, count, events) -> int:
        if wav and count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        i = 0
        while events[i].type != _LIST_TERMINATED:
            if events[i].type == _WORD_EVENT:
                self.word_starts.append((events[i].text_position - 1, events[i].sample))
            i += 1
        return 0

    def speak(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int) -> np.ndarray:
        """float32 samples in [-1, 1) at SAMPLE_RATE."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r}")
        for parameter, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range)):
            self.lib.espeak_SetParameter(parameter, value, 0)
        self._chunks.clear()
        self.word_starts.clear()
        data = text.encode()
        self.lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 0, None, None)
        return np.concatenate(self._chunks).astype(np.float32) / 32768.0


@dataclasses.dataclass
class Utterance:
    words: list[str]
    voice: str
    audio: np.ndarray  # float32 at SAMPLE_RATE, noise added
    word_starts: list[tuple[int, int]]  # (index in words, first sample) of the words eSpeak reported

    def segments(self) -> list[tuple[str, np.ndarray]]:
        """The reported words with their audio: from a word's first sample to the next reported word's (a word that
        eSpeak folds into the one before, such as "the", stays in that one's segment)."""
        bounds = [sample for _, sample in self.word_starts] + [len(self.audio)]
        return [(self.words[i], self.audio[bounds[k] : bounds[k + 1]]) for k, (i, _) in enumerate(self.word_starts)]


def add_noise(audio: np.ndarray, rng: random.Random, snr_db: tuple[float, float] = (10.0, 30.0)) -> np.ndarray:
    """White noise at a random signal-to-noise ratio, and a random gain."""
    noise = np.random.default_rng(rng.randrange(2**32)).standard_normal(len(audio)).astype(np.float32)
    power = float(np.mean(audio**2)) + 1e-12
    noise *= np.sqrt(power / 10 ** (rng.uniform(*snr_db) / 10))
    return (audio + noise) * rng.uniform(0.5, 1.5)


def synthesize(count: int, voices: list[str], rng: random.Random, speaker: Speaker | None = None) -> list[Utterance]:
    """count utterances of random commands, each in a random voice of `voices` at a random speed and pitch."""
    speaker = speaker or Speaker()
    out = []
    for _ in range(count):
        words = sentence(rng)
        out.append(speak(words, rng.choice(voices), rng, speaker))
    return out


def speak(words: list[str], voice: str, rng: random.Random, speaker: Speaker) -> Utterance:
    """`words` spoken in `voice` at a random speed and pitch, noise added."""
    audio = speaker.speak(" ".join(words), voice, rng.randint(130, 210), rng.randint(25, 75), rng.randint(20, 80))
    offsets = [sum(len(w) + 1 for w in words[:i]) for i in range(len(words))]
    starts = [(offsets.index(offset), sample) for offset, sample in speaker.word_starts if offset in offsets]
    return Utterance(words, voice, add_noise(audio, rng), starts)


def fit(model: torch.nn.Module, batch_loss: Callable[[list[int]], torch.Tensor], n: int, epochs: int,
        rng: random.Random, log, what: str, batch_size: int = 32) -> torch.nn.Module:
    """Trains model on n examples for `epochs` shuffled passes: Adam with a one-cycle schedule (peak 3e-3), gradients
    clipped at norm 5; batch_loss(indices) is a batch's mean loss. Logs `what` (the loss's name) per epoch and returns
    the model in eval mode."""
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=epochs * math.ceil(n / batch_size))
    for epoch in range(epochs):
        model.train()
        order = list(range(n))
        rng.shuffle(order)
        total = 0.0
        for i in range(0, n, batch_size):
            batch = order[i : i + batch_size]
            loss = batch_loss(batch)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
        log(f"epoch {epoch + 1}: {what} {total / n:.4f}")
    model.eval()
    return model


def train_voices() -> list[str]:
    return [f"{accent}+{variant}" for accent in TRAIN_ACCENTS for variant in TRAIN_VARIANTS]


def features(audios: list[np.ndarray], stack: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel features (pyseq.audio.log_mel: 25 ms windows every 10 ms, 40 bands), each utterance normalized to
    zero mean and unit variance per band, `stack` adjacent frames concatenated (frames every 10 * stack ms).
    Returns [B, T, 40 * stack] and frames [B]."""
    lengths = torch.tensor([len(a) for a in audios])
    wave = torch.zeros(len(audios), int(lengths.max()))
    for i, a in enumerate(audios):
        wave[i, : len(a)] = torch.from_numpy(a)
    feats, frames = pyseq.audio.log_mel(wave, lengths, sample_rate=SAMPLE_RATE, n_fft=551, hop_length=220, n_mels=40)
    valid = (torch.arange(feats.shape[1]) < frames.unsqueeze(1)).unsqueeze(2)
    count = frames.view(-1, 1, 1).float()
    mean = (feats * valid).sum(1, keepdim=True) / count
    std = (((feats - mean) * valid) ** 2).sum(1, keepdim=True).div(count).sqrt() + 1e-5
    feats = ((feats - mean) / std) * valid
    T = feats.shape[1] // stack * stack
    stacked = feats[:, :T].reshape(len(audios), T // stack, -1)
    return stacked, torch.clamp(frames // stack, min=1)
