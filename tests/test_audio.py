"""Log-mel features against the direct formulas: an explicit DFT of each reflected, Hann-windowed frame and
triangular filters built point by point."""

import math

import pytest
import torch

import pyseq
from pyseq.audio import log_mel, mel_filterbank


def hz_to_mel(f):
    return 2595.0 * math.log10(1.0 + f / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def reference_filterbank(n_fft, n_mels, sample_rate, f_min, f_max):
    lo, hi = hz_to_mel(f_min), hz_to_mel(f_max)
    edges = [mel_to_hz(lo + (hi - lo) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    bank = torch.zeros(n_fft // 2 + 1, n_mels, dtype=torch.float64)
    for k in range(n_fft // 2 + 1):
        f = k * sample_rate / n_fft
        for m in range(n_mels):
            left, centre, right = edges[m], edges[m + 1], edges[m + 2]
            if left < f <= centre:
                bank[k, m] = (f - left) / (centre - left)
            elif centre < f < right:
                bank[k, m] = (right - f) / (right - centre)
    return bank


def reference_log_mel(signal, sample_rate, n_fft, hop, n_mels, floor):
    half = n_fft // 2
    x = signal.tolist()
    padded = [x[half - i] for i in range(half)] + x + [x[-2 - i] for i in range(half)]  # reflected, edge excluded
    window = [0.5 - 0.5 * math.cos(2 * math.pi * n / n_fft) for n in range(n_fft)]  # periodic Hann
    bank = reference_filterbank(n_fft, n_mels, sample_rate, 0.0, sample_rate / 2)
    rows = []
    for t in range(len(x) // hop + 1):
        frame = [padded[t * hop + n] * window[n] for n in range(n_fft)]
        power = []
        for k in range(half + 1):
            re = sum(v * math.cos(2 * math.pi * k * n / n_fft) for n, v in enumerate(frame))
            im = sum(v * math.sin(2 * math.pi * k * n / n_fft) for n, v in enumerate(frame))
            power.append(re * re + im * im)
        energies = torch.tensor(power, dtype=torch.float64) @ bank
        rows.append(torch.log(torch.clamp(energies, min=floor)))
    return torch.stack(rows)


def test_mel_filterbank_matches_the_triangles():
    got = mel_filterbank(64, 10, 8000, f_min=100.0, f_max=3500.0, dtype=torch.float64)
    torch.testing.assert_close(got, reference_filterbank(64, 10, 8000, 100.0, 3500.0), rtol=1e-12, atol=1e-12)


def test_log_mel_matches_the_direct_formula_per_utterance():
    torch.manual_seed(0)
    sr, n_fft, hop, n_mels = 8000, 16, 4, 5
    waveform = torch.randn(3, 50, dtype=torch.float64)
    lengths = torch.tensor([50, 33, 9])
    waveform[1, 33:] = 7.0  # padding must not leak into a shorter utterance's frames
    features, frames = log_mel(waveform, lengths, sr, n_fft, hop, n_mels, floor=1e-10)
    assert features.shape == (3, 50 // hop + 1, n_mels) and frames.tolist() == [13, 9, 3]
    for b in range(3):
        n = int(lengths[b])
        expected = reference_log_mel(waveform[b, :n], sr, n_fft, hop, n_mels, 1e-10)
        torch.testing.assert_close(features[b, : frames[b]], expected, rtol=1e-9, atol=1e-9)
        assert (features[b, frames[b]:] == 0).all()
    single, count = log_mel(waveform[0], None, sr, n_fft, hop, n_mels)
    torch.testing.assert_close(single, features[0])
    assert int(count) == 13


def test_log_mel_bad_input():
    with pytest.raises(ValueError, match="floating-point tensor"):
        log_mel(torch.zeros(2, 100, dtype=torch.long))
    with pytest.raises(ValueError, match="lengths must hold 2 values"):
        log_mel(torch.zeros(2, 1000), torch.tensor([1000, 100]))  # 100 <= n_fft // 2
    with pytest.raises(ValueError, match="f_min < f_max"):
        mel_filterbank(400, 80, 16000, f_max=9000.0)
    assert dir(pyseq.audio) == ["log_mel", "mel_filterbank"]
