"""Synthetic audio and manifests for the audio/clean/features tests (speech-like voice, bird-like calls)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from scipy.signal import lfilter

from birdclef import schema

SR = 32_000
_VOWELS = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (640, 1190, 2390)]


def fake_speech(seconds: float, seed: int = 0, sr: int = SR, f0: float = 120.0) -> np.ndarray:
    """Voiced-vowel babble: a glottal pulse train through changing formant resonators, 0.2 s syllables.

    Silero VAD scores it as speech, which is all the tests need (no recorded voice ships with the repo).
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    f0c = f0 * (1 + 0.15 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)))
    pulses = np.diff(np.floor(np.cumsum(f0c / sr)), prepend=0.0)
    src = lfilter([1.0], [1.0, -0.97], pulses)
    out = np.zeros(n)
    syl = int(0.2 * sr)
    for i in range(0, n, syl):
        seg = src[i : i + syl]
        acc = np.zeros_like(seg)
        for k, f in enumerate(_VOWELS[rng.integers(len(_VOWELS))]):
            r = np.exp(-np.pi * (80 + 40 * k) / sr)
            acc += lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / sr), r * r], seg) / (k + 1)
        out[i : i + syl] = acc * np.sin(np.linspace(0, np.pi, len(seg))) ** 0.5
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


def bird_calls(seconds: float, seed: int = 0, sr: int = SR, level: float = 0.2) -> np.ndarray:
    """Repeated FM whistles (3-6 kHz) with gaps over faint noise: no speech in it."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    out = 0.002 * rng.standard_normal(n)
    pos = int(rng.uniform(0.05, 0.3) * sr)
    while pos < n:
        dur = int(rng.uniform(0.15, 0.5) * sr)
        t = np.arange(min(dur, n - pos)) / sr
        f = rng.uniform(3000, 4000) + rng.uniform(500, 2000) * np.sin(2 * np.pi * rng.uniform(2, 8) * t)
        call = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.hanning(len(t))
        out[pos : pos + len(t)] += level * call
        pos += dur + int(rng.uniform(0.2, 0.8) * sr)
    return out.astype(np.float32)


def write_audio(path: Path, wave: np.ndarray, sr: int = SR, fmt: str | None = None) -> Path:
    """Write mono or (samples, channels) audio; the format follows the suffix unless ``fmt`` is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, sr, format=fmt)
    return path


def manifest(rows: list[dict], data_root: Path) -> pd.DataFrame:
    """A recordings table with every :data:`schema.RECORDINGS` column; rows need recording_id and label."""
    out = []
    for i, r in enumerate(rows):
        rid = r["recording_id"]
        try:
            info = sf.info(data_root / "train_audio" / rid)
        except (sf.LibsndfileError, RuntimeError):
            info = None
        out.append({
            "recording_id": rid,
            "path": f"train_audio/{rid}",
            "source": "train_audio",
            "primary_label": r.get("label", rid.split("/")[0]),
            "secondary_labels": r.get("secondary", []),
            "class_name": r.get("class_name", "Aves"),
            "rating": r.get("rating", 4.0),
            "collection": "XC",
            "author": "test",
            "latitude": 0.0,
            "longitude": 0.0,
            "duration_s": info.duration if info else 0.0,
            "sample_rate": info.samplerate if info else 0,
            "channels": info.channels if info else 0,
            "fold": i % 2,
        })
    df = pd.DataFrame(out)
    schema.require_columns(df, schema.RECORDINGS, "fixture")
    return df
