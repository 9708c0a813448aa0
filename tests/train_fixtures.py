"""Shared fixtures for training tests: an in-memory waveform source and a tiny model with the BirdModel API."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from birdclef import SAMPLE_RATE


class MemoryCache:
    """In-memory stand-in for birdclef.features.cache.WaveCache (same read API)."""

    def __init__(self, waves: dict[str, np.ndarray], kinds: dict[str, str] | None = None, rms_hop: int = 3200):
        self.waves = waves
        self.kinds = kinds or {}
        self.rms_hop = rms_hop

    def keys(self, kind: str | None = None) -> list[str]:
        return sorted(k for k in self.waves if kind is None or self.kinds.get(k) == kind)

    def length(self, key: str) -> int:
        return len(self.waves[key])

    def read(self, key: str, start: int = 0, length: int | None = None) -> np.ndarray:
        wave = self.waves[key]
        length = len(wave) - start if length is None else length
        out = np.zeros(length, dtype=np.float32)
        piece = wave[start : start + length]
        out[: len(piece)] = piece
        return out

    def rms(self, key: str) -> np.ndarray:
        wave = self.waves[key]
        n = len(wave) // self.rms_hop
        return np.sqrt((wave[: n * self.rms_hop].reshape(n, -1) ** 2).mean(axis=1)).astype(np.float32)


def tone(freq: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A noisy tone burst: a species 'call' whose class is learnable from its pitch."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    env = (np.sin(2 * np.pi * 2 * t) > 0).astype(np.float32)
    return (0.5 * env * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def toy_segments(n_per_class: int = 4, classes: tuple[str, ...] = ("a", "b", "c"), seed: int = 0):
    """A segment table and a cache of tone clips (class i has pitch 500 * (i + 1) Hz)."""
    rng = np.random.default_rng(seed)
    rows, waves = [], {}
    for ci, label in enumerate(classes):
        for j in range(n_per_class):
            key = f"{label}/f{j}.ogg#0"
            waves[key] = tone(500.0 * (ci + 1), 2.0 + j, rng)
            rows.append(
                {
                    "segment_id": key,
                    "recording_id": f"{label}/f{j}.ogg",
                    "path": f"train_audio/{label}/f{j}.ogg",
                    "start_s": 0.0,
                    "end_s": 2.0 + j,
                    "primary_label": label,
                    "secondary_labels": [classes[(ci + 1) % len(classes)]] if j == 0 else [],
                    "class_name": "Aves",
                    "rating": 4.0,
                    "fold": j % 2,
                    "weight": 1.0,
                    "copies": 1,
                }
            )
    return pd.DataFrame(rows), MemoryCache(waves)


class TinyModel(nn.Module):
    """Log-power spectrum -> linear: the BirdModel interface (clip and frame logits) at toy cost."""

    def __init__(self, num_classes: int, frames: int = 4, dropout: float = 0.1):
        super().__init__()
        self.frames = frames
        self.proj = nn.Linear(64, num_classes)
        self.drop = nn.Dropout(dropout)

    def forward(self, wave: torch.Tensor, spec_augment=None) -> dict[str, torch.Tensor]:
        b, n = wave.shape
        chunks = wave[:, : n - n % self.frames].reshape(b, self.frames, -1)
        spec = torch.fft.rfft(chunks, n=126).abs().pow(2).add(1e-6).log()[..., :64]
        if spec_augment is not None:
            spec = spec_augment(spec.unsqueeze(1)).squeeze(1)
        frame = self.proj(self.drop(spec))
        return {"clip": frame.mean(1), "frame": frame}
