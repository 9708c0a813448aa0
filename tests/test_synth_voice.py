"""Tests of the synthetic human voice: Silero VAD finds the planted speech and ignores animal calls."""

from __future__ import annotations

import numpy as np
import pytest

from birdclef import SAMPLE_RATE
from birdclef.synth.ambience import NoiseProfile, render_background
from birdclef.synth.calls import FAMILIES, Jitter, render_bout
from birdclef.synth.voice import render_speech

silero_vad = pytest.importorskip("silero_vad")
soxr = pytest.importorskip("soxr")
torch = pytest.importorskip("torch")

FOCAL_NOISE = NoiseProfile(redness=0.4, wind_db=-6.0, rain_db=None, chorus_db=None, chorus_band=(4000, 6000),
                           stream_db=None, level_dbfs=-45.0)


@pytest.fixture(scope="module")
def vad():
    model = silero_vad.load_silero_vad()

    def detect(x: np.ndarray) -> list[tuple[float, float]]:
        # Silero wants 16 kHz
        y = torch.from_numpy(soxr.resample(x.astype(np.float32), SAMPLE_RATE, 16_000))
        found = silero_vad.get_speech_timestamps(y, model, sampling_rate=16_000, return_seconds=True)
        return [(d["start"], d["end"]) for d in found]

    return detect


def _covered(spans: list[tuple[float, float]], found: list[tuple[float, float]]) -> float:
    total = sum(b - a for a, b in spans)
    hit = sum(max(0.0, min(b, d) - max(a, c)) for a, b in spans for c, d in found)
    return hit / total


def _scene(sound: np.ndarray, level_db: float, rng: np.random.Generator) -> np.ndarray:
    """Sound placed 0.5 s into a focal-style background, ``level_db`` above the background RMS."""
    bg = render_background(FOCAL_NOISE, len(sound) + SAMPLE_RATE, rng).wave
    rms_bg = np.sqrt(np.mean(bg**2))
    x = bg.copy()
    x[SAMPLE_RATE // 2 : SAMPLE_RATE // 2 + len(sound)] += sound / np.sqrt(np.mean(sound**2)) * rms_bg * 10 ** (
        level_db / 20)
    return x


def test_speech_segments_lie_within_the_waveform() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        wave, segments = render_speech(float(rng.uniform(1.5, 5.0)), rng)
        assert np.max(np.abs(wave)) == pytest.approx(1.0)
        assert segments and all(0 <= a < b for a, b in segments)
        assert all(b1 <= a2 for (_, b1), (a2, _) in zip(segments, segments[1:], strict=False))
        assert segments[-1][1] <= len(wave) / SAMPLE_RATE + 1e-6


def test_silero_finds_planted_voice(vad) -> None:
    rng = np.random.default_rng(1)
    recalls = []
    for _ in range(10):
        wave, segments = render_speech(float(rng.uniform(1.5, 5.0)), rng)
        scene = _scene(wave, float(rng.uniform(18, 32)), rng)
        recalls.append(_covered([(a + 0.5, b + 0.5) for a, b in segments], vad(scene)))
    assert np.mean(recalls) >= 0.9, recalls


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_silero_ignores_animal_calls(vad, family: str) -> None:
    rng = np.random.default_rng(2)
    false_s = total_s = 0.0
    for _ in range(3):
        params = FAMILIES[family].sample(rng)
        bouts = [render_bout(family, params, rng, Jitter()) for _ in range(3)]
        sound = np.concatenate([np.concatenate([b, np.zeros(SAMPLE_RATE // 3)]) for b in bouts])
        scene = _scene(sound, 25.0, rng)
        false_s += sum(b - a for a, b in vad(scene))
        total_s += len(sound) / SAMPLE_RATE
    assert false_s / total_s < 0.1, (family, false_s, total_s)
