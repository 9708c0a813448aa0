"""The real-audio benchmark's task (issue 14 item 7), built from ../shared/real-audio by :func:`build_task`.

The task (:func:`build_task`): five species with real labelled calls (great tit songs, a common yellowthroat, a Great
Plains toad, ruffed grouse drumming, a red-faced spinetail) and their scientific names, so a foundation teacher can
map them. Each species' audio is split by time (the great tit by song) into a training part (~60%) and a held-out
part (~40%). The training part gives the focal recordings (train_audio/, 32 kHz mono ogg, a few files per species)
and the calls planted into train_soundscapes/ (labels only in synth_truth/, as SynthCLEF); the held-out part gives
the calls planted into test_soundscapes/ (test_labels.csv) and val_soundscapes/ (val_labels.csv), at in-band SNRs of
-5..+10 dB against the real unlabelled backgrounds (the 1-min forest soundscape and the four Jura clips, circularly
shifted, gained and mixed per soundscape, with offsets of their own per split). Window labels follow SynthCLEF's
``window_labels``. Deterministic per seed; built in a temporary folder and brought in by ``ingest_kaggle``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from real_task_sources import (  # beside this module (benchmarks/ on sys.path)
    AUDIO,
    SPECIES,
    TIME_SPLITS,
    Clip,
    _bandpass,
    _clip_spans,
    _fade,
    _planting_band,
    _rms,
    _span_rms,
    species_parts,
)

from birdclef import SAMPLE_RATE
from birdclef.audio.decode import load_audio
from birdclef.data.ingest import ingest_kaggle
from birdclef.io import write_csv, write_json
from birdclef.synth.config import SoundscapeKnobs, SynthConfig
from birdclef.synth.generator import TRAIN_COLUMNS, window_labels
from birdclef.synth.oggio import write_ogg
from birdclef.synth.scenes import Event

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
