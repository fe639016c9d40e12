"""Audio features for the speech models: log-mel filterbank energies, batched, with the frame count of every
utterance, computed with torch alone (STFT and a mel matrix; no audio library needed)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["mel_filterbank", "log_mel"]


def __dir__() -> list[str]:  # the public names, not the modules this module imports
    return sorted(__all__)


def _hz_to_mel(f: float) -> float:
    return 2595.0 * math.log10(1.0 + f / 700.0)  # the HTK mel scale


def _mel_to_hz(m: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None,
                   dtype: torch.dtype = torch.float32) -> Tensor:
    """Triangular mel filters ``[n_fft // 2 + 1, n_mels]``: filter m rises linearly from the centre frequency of
    filter m - 1 to its own and falls to that of m + 1, the n_mels + 2 edges equally spaced on the HTK mel scale
    between f_min and f_max (default sample_rate / 2); peak 1, no area normalisation."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, f_max={f_max}")
    if n_mels < 1 or n_fft < 2:
        raise ValueError(f"need n_mels >= 1 and n_fft >= 2, got n_mels={n_mels}, n_fft={n_fft}")
    edges = _mel_to_hz(torch.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2, dtype=torch.float64))
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64).unsqueeze(1)  # [F, 1]
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).to(dtype)


def log_mel(waveform: Tensor, lengths: Tensor | None = None, sample_rate: int = 16000, n_fft: int = 400,
            hop_length: int = 160, n_mels: int = 80, f_min: float = 0.0, f_max: float | None = None,
            floor: float = 1e-10) -> tuple[Tensor, Tensor]:
    """Log-mel filterbank energies: ``log(max(|STFT|^2 @ mel_filterbank, floor))``.

    Args:
        waveform: ``[B, S]`` samples (or ``[S]``), float; padded past each utterance's length.
        lengths: ``[B]`` samples per utterance (default: all S).
        sample_rate, n_fft (window and FFT size, a Hann window), hop_length, n_mels, f_min, f_max: as usual; the
            defaults are 25 ms windows every 10 ms at 16 kHz, 80 mel bands.

    Returns ``(features [B, T, n_mels], frames [B] int64)``: frame t is centred on sample t * hop_length (the signal
    reflected at its start and end), T = S // hop_length + 1, and utterance b has lengths[b] // hop_length + 1 frames
    (later frames of the batch row are zeros). An unbatched waveform gives ``[T, n_mels]`` and a 0-d frame count.
    """
    if not isinstance(waveform, Tensor) or not waveform.is_floating_point() or waveform.dim() not in (1, 2):
        raise ValueError("waveform must be a floating-point tensor [B, S] or [S]")
    unbatched = waveform.dim() == 1
    x = waveform.unsqueeze(0) if unbatched else waveform
    B, S = x.shape
    if lengths is None:
        lengths = torch.full((B,), S, dtype=torch.long)
    lengths = torch.as_tensor(lengths).reshape(-1).to(device="cpu", dtype=torch.long)
    shortest = n_fft // 2 + 1  # the reflection at the edges needs more samples than half a window
    if S < shortest:
        raise ValueError(f"waveform has {S} samples, fewer than the {shortest} (n_fft // 2 + 1) that a window "
                         f"centred on its first sample needs; pad it or use a smaller n_fft")
    if lengths.shape != (B,) or bool((lengths < shortest).any()) or bool((lengths > S).any()):
        raise ValueError(f"lengths must hold {B} values in [{shortest}, {S}], got {lengths.tolist()}")
    window = torch.hann_window(n_fft, dtype=x.dtype, device=x.device)

    def stft(signal: Tensor) -> Tensor:
        return torch.stft(signal, n_fft, hop_length, window=window, center=True, pad_mode="reflect",
                          return_complex=True)

    spectrum = stft(x)  # [B, F, T]
    # A shorter utterance is reflected at its own end, not at the batch's: its frames computed on its own samples.
    for b, n in enumerate(lengths.tolist()):
        if n < S:
            row = stft(x[b, :n])
            spectrum[b] = 0
            spectrum[b, :, : row.shape[1]] = row
    power = spectrum.real.square() + spectrum.imag.square()
    mel = mel_filterbank(n_fft, n_mels, sample_rate, f_min, f_max, dtype=x.dtype).to(x.device)
    features = torch.log(torch.clamp(power.transpose(1, 2) @ mel, min=floor))  # [B, T, n_mels]
    frames = lengths // hop_length + 1
    valid = torch.arange(features.shape[1]).unsqueeze(0) < frames.unsqueeze(1)
    features = features * valid.unsqueeze(2).to(features.device, features.dtype)
    return (features[0], frames[0]) if unbatched else (features, frames)
