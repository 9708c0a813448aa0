"""The real-audio benchmark's sources: the five species, where their labelled calls are in ../shared/real-audio, how
each recording is split by time into training and held-out parts, and the audio helpers (band-pass, call spans).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.signal import butter, sosfiltfilt

from birdclef import SAMPLE_RATE
from birdclef.audio.decode import load_audio

REPO = Path(__file__).resolve().parents[1]
AUDIO = Path(os.environ.get("BIRDCLEF_REAL_AUDIO", REPO.parent / "shared" / "real-audio"))
FADE_S = 0.02
TRAIN_SHARE = 0.6  # share of the great tit songs that train (per bird)


@dataclass(frozen=True)
class Species:
    """A species of the task: its label, names, the band its calls live in and where its audio comes from."""

    label: str
    scientific_name: str
    common_name: str
    class_name: str
    band_hz: tuple[float, float]
    call_type: str
    source: str
    license: str
    detect: dict[str, float] = field(default_factory=dict)  # call_spans() keywords


SPECIES = (
    Species(
        "gretit1",
        "Parus major",
        "Great Tit",
        "Aves",
        (2000, 9000),
        "song",
        "pykanto package data (segmented/great_tit)",
        "MIT",
    ),
    Species(
        "comyel",
        "Geothlypis trichas",
        "Common Yellowthroat",
        "Aves",
        (2000, 8000),
        "song",
        "hawkears package resource",
        "MIT",
    ),
    Species(
        "grptoa1",
        "Anaxyrus cognatus",
        "Great Plains Toad",
        "Amphibia",
        (1500, 3500),
        "call",
        "opensoundscape tests/audio/great_plains_toad.wav",
        "MIT",
    ),
    Species(
        "rufgro",
        "Bonasa umbellus",
        "Ruffed Grouse",
        "Aves",
        (40, 250),
        "drumming",
        "opensoundscape tests/audio/rugr_drum.wav",
        "MIT",
        {"rel_db": 6.0, "merge_s": 1.0},
    ),
    Species(
        "refspi1",
        "Cranioleuca erythrops",
        "Red-faced Spinetail",
        "Aves",
        (2000, 9000),
        "song",
        "scikit-maad data/spinetail.wav",
        "BSD-3-Clause",
    ),
)
"""Labels are this task's own codes; scientific names are what a teacher is mapped by."""
GREAT_TIT = "great_tit"
# label -> (file, split second: the training part before it, the held-out part after it, focal cut points inside
# the training part). Split points fall between calls where there are gaps.
TIME_SPLITS = {
    "comyel": ("hawkears_common_yellowthroat.mp3", 2.85, ()),  # song 1 trains, song 2 is held out
    "grptoa1": ("opensoundscape_great_plains_toad.wav", 26.7, (8.9, 17.8)),  # one long chorus
    "rufgro": ("opensoundscape_ruffed_grouse_drum.wav", 6.0, (3.0,)),  # slow thumps train, the roll is held out
    "refspi1": ("maad_spinetail.wav", 9.6, (4.4,)),  # CRER phrases 1-2 train, 3-4 held out
}
SPINETAIL_LABELS = ("maad_spinetail_labels.txt", "CRER")


@dataclass
class Clip:
    """A piece of a source recording: its samples (32 kHz) and the call spans in it (s from the clip start)."""

    source: str  # path relative to AUDIO
    start_s: float  # clip start in the source
    wave: np.ndarray
    spans: list[tuple[float, float]]

    @property
    def seconds(self) -> float:
        return len(self.wave) / SAMPLE_RATE


# ---------------------------------------------------------------- audio helpers


@functools.cache
def _sos(band: tuple[float, float]) -> np.ndarray:
    return butter(4, band, "bandpass", fs=SAMPLE_RATE, output="sos")


def _bandpass(x: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    return sosfiltfilt(_sos(tuple(band)), x)


def _planting_band(band: tuple[float, float]) -> tuple[float, float]:
    """The band a planted call keeps (an octave below, half an octave above its call band): the source's hiss
    outside it would otherwise show as a block of noise around every call, louder the quieter the source."""
    return band[0] / 2, min(band[1] * 1.5, 0.45 * SAMPLE_RATE)


def call_spans(
    wave: np.ndarray,
    band: tuple[float, float],
    rel_db: float = 8.0,
    merge_s: float = 0.3,
    min_s: float = 0.1,
    hop_s: float = 0.05,
) -> list[tuple[float, float]]:
    """Spans (s) where the in-band energy of ``wave`` stands ``rel_db`` over its 20th percentile (the noise floor);
    gaps under ``merge_s`` are merged, spans under ``min_s`` dropped."""
    y = _bandpass(wave, band)
    hop = int(hop_s * SAMPLE_RATE)
    n = len(y) // hop
    energy = 10 * np.log10((y[: n * hop].reshape(n, hop) ** 2).mean(axis=1) + 1e-14)
    on = np.concatenate([[False], energy > np.percentile(energy, 20) + rel_db, [False]])
    edges = np.flatnonzero(np.diff(on.astype(int)))
    spans: list[list[float]] = []
    for a, b in zip(edges[::2] * hop_s, edges[1::2] * hop_s, strict=True):
        if spans and a - spans[-1][1] < merge_s:
            spans[-1][1] = b
        else:
            spans.append([a, b])
    return [(round(a, 3), round(b, 3)) for a, b in spans if b - a >= min_s]


def _audacity_spans(path: Path, code: str) -> list[tuple[float, float]]:
    """Spans of ``code`` in an Audacity label track (``start<TAB>end<TAB>code``; ``\\`` lines hold frequencies)."""
    out = []
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and not line.startswith("\\") and parts[2].strip() == code:
            out.append((float(parts[0]), float(parts[1])))
    return out


def _clip_spans(spans: list[tuple[float, float]], a: float, b: float) -> list[tuple[float, float]]:
    """``spans`` cut to [a, b) and shifted to start at ``a``; pieces under 0.1 s dropped."""
    out = [(max(s, a) - a, min(e, b) - a) for s, e in spans if min(e, b) - max(s, a) >= 0.1]
    return [(round(s, 3), round(e, 3)) for s, e in out]


def _fade(x: np.ndarray) -> np.ndarray:
    n = min(int(FADE_S * SAMPLE_RATE), len(x) // 2)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))
    y = x.astype(np.float64).copy()
    y[:n] *= ramp
    y[len(y) - n :] *= ramp[::-1]
    return y


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def _span_rms(x: np.ndarray, spans: list[tuple[float, float]]) -> float:
    parts = [x[int(s * SAMPLE_RATE) : int(e * SAMPLE_RATE)] for s, e in spans]
    return _rms(np.concatenate(parts)) if parts else _rms(x)


# ---------------------------------------------------------------- the parts of each species


def species_parts(seed: int, audio: Path = AUDIO) -> dict[str, tuple[list[Clip], list[Clip]]]:
    """``{label: (training clips, held-out clips)}``: the time (or song) split of each species' audio.

    The great tit's songs are dealt per bird (B32, SW83), ``TRAIN_SHARE`` of them to training, drawn by ``seed``;
    the other species split at the fixed second of ``TIME_SPLITS`` (a held-out clip never shares a sample with a
    training clip of the same file).
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    out: dict[str, tuple[list[Clip], list[Clip]]] = {}
    sp = {s.label: s for s in SPECIES}
    tit = sp["gretit1"]
    songs = sorted((audio / GREAT_TIT).glob("*.wav"))
    train, held = [], []
    for bird in sorted({p.name.split("-")[1] for p in songs}):
        mine = [p for p in songs if p.name.split("-")[1] == bird]
        order = rng.permutation(len(mine))
        n_train = int(round(TRAIN_SHARE * len(mine)))
        for rank, i in enumerate(order):
            wave = load_audio(mine[i])
            clip = Clip(f"{GREAT_TIT}/{mine[i].name}", 0.0, wave, call_spans(wave, tit.band_hz, **tit.detect))
            (train if rank < n_train else held).append(clip)
    out[tit.label] = (sorted(train, key=lambda c: c.source), sorted(held, key=lambda c: c.source))
    for label, (name, split_s, cuts) in TIME_SPLITS.items():
        wave = load_audio(audio / name)
        if label == "refspi1":
            spans = _audacity_spans(audio / SPINETAIL_LABELS[0], SPINETAIL_LABELS[1])
        else:
            spans = call_spans(wave, sp[label].band_hz, **sp[label].detect)
        end = len(wave) / SAMPLE_RATE
        bounds = [0.0, *cuts, split_s]
        train = [
            Clip(name, a, wave[int(a * SAMPLE_RATE) : int(b * SAMPLE_RATE)], _clip_spans(spans, a, b))
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        held = [Clip(name, split_s, wave[int(split_s * SAMPLE_RATE) :], _clip_spans(spans, split_s, end))]
        out[label] = (train, held)
    return out
