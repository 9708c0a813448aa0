"""The SynthCLEF generator: plan a dataset, render its audio in parallel, write it in the competition layout."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdclef import SAMPLE_RATE, WINDOW_SECONDS, __version__
from birdclef.io import atomic_path, write_csv, write_json
from birdclef.synth._worker import Job, Result, render_all
from birdclef.synth.config import FULL_SCALE_FACTOR, GENERATOR_VERSION, SynthConfig, preset_config
from birdclef.synth.plan import Recording, plan_recordings, plan_sites, plan_soundscapes
from birdclef.synth.scenes import Event, FocalPlan, SoundscapePlan
from birdclef.synth.species import Species, make_taxonomy

TRAIN_COLUMNS = (
    "primary_label", "secondary_labels", "type", "filename", "collection", "rating", "url", "latitude", "longitude",
    "scientific_name", "common_name", "author", "license",
)  # fmt: skip
"""train.csv columns, in the competition's order."""


def generate(preset: str, seed: int, out: str | os.PathLike[str], workers: int | None = None, *,
             overrides: Mapping[str, Any] | None = None, overwrite: bool = False, progress: bool = True
             ) -> dict[str, Any]:
    """Generate a SynthCLEF dataset in the Kaggle BirdCLEF+ 2025 layout.

    Writes taxonomy.csv, train.csv, train_audio/<label>/*.ogg, train_soundscapes/*.ogg, test_soundscapes/*.ogg,
    val_soundscapes/*.ogg, sample_submission.csv, test_labels.csv, val_labels.csv and the synth_truth/ sidecar
    (calls.csv, voice.csv, train_soundscape_labels.csv, soundscapes.csv, species.json, generator.json). The whole
    directory appears atomically. The same (preset, seed, overrides) gives byte-identical files on one machine,
    whatever ``workers``.

    Args:
        preset: tiny, demo, bench or full.
        seed: master seed.
        out: the dataset directory to create.
        workers: parallel processes (None: all CPU cores; 1: in this process).
        overrides: dotted config keys to change, e.g. ``{"soundscape.snr_db": [-8, 10]}``.
        overwrite: replace ``out`` if it exists and is not empty.
        progress: show a progress bar over the files.

    Returns:
        Summary: counts, seconds of audio per folder, bytes on disk, seconds taken.

    Raises:
        FileExistsError: ``out`` exists, is not empty, and ``overwrite`` is false.
        ValueError: unknown preset or override key.
    """
    started = time.perf_counter()
    config = preset_config(preset, overrides)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file, not a dataset directory")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass overwrite=True (--overwrite) to replace it")
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))

    # The validation soundscapes draw from a stream of their own and render last, so adding them left every
    # other file of a (preset, seed) byte for byte what it was.
    tax_seed, plan_seed, job_seed, val_seed = np.random.SeedSequence(seed).spawn(4)
    species, distractors = make_taxonomy(config, np.random.default_rng(tax_seed))
    plan_rng = np.random.default_rng(plan_seed)
    recordings = plan_recordings(config, species, plan_rng)
    sites = plan_sites(config, species, plan_rng)
    soundscapes = plan_soundscapes(config, sites, species, distractors, plan_rng)
    val_rng = np.random.default_rng(val_seed)
    val_sites = plan_sites(config, species, val_rng, (("val", config.val_sites),), first=len(sites))
    val = plan_soundscapes(config, val_sites, species, distractors, val_rng, (("val", config.val_soundscapes),))
    plans: list[FocalPlan | SoundscapePlan] = [*soundscapes, *(r.plan for r in recordings), *val]
    jobs = [Job(i, p, s) for i, (p, s) in enumerate(zip(plans, job_seed.spawn(len(plans)), strict=True))]

    with atomic_path(out) as tmp:
        for plan in plans:
            (tmp / plan.path).parent.mkdir(parents=True, exist_ok=True)
        context = (tmp, {s.label: s for s in [*species, *distractors]}, config)
        results = render_all(jobs, context, workers, progress)
        _write_tables(tmp, config, seed, species, distractors, recordings, soundscapes, results, val)
        total_bytes = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())

    seconds = {"train_audio": 0.0, "train_soundscapes": 0.0, "test_soundscapes": 0.0, "val_soundscapes": 0.0}
    for plan, res in zip(plans, results, strict=True):
        seconds[plan.path.split("/")[0]] += res.samples / SAMPLE_RATE
    return {
        "preset": preset,
        "seed": seed,
        "species": len(species),
        "classes": {c: sum(s.class_name == c for s in species) for c in config.classes},
        "train_files": len(recordings),
        "train_soundscapes": len(soundscapes) - config.test_soundscapes,
        "test_soundscapes": config.test_soundscapes,
        "val_soundscapes": len(val),
        "voice_files": sum(r.plan.voice is not None for r in recordings),
        "audio_seconds": {k: round(v, 1) for k, v in seconds.items()},
        "megabytes": round(total_bytes / 1e6, 2),
        "workers": workers,
        "seconds_taken": round(time.perf_counter() - started, 2),
    }


# ---------------------------------------------------------------- tables


def window_labels(events: Mapping[str, list[Event]], labels: list[str], seconds: float, min_overlap_s: float
                  ) -> pd.DataFrame:
    """Ground truth in submission format: one row per 5 s window, 0/1 per species.

    A bout marks a window positive when it overlaps it by at least ``min_overlap_s`` (or by half the bout, for a
    bout shorter than twice that).

    Args:
        events: planted events per soundscape stem.
        labels: species columns, in taxonomy order.
        seconds: soundscape length in seconds.
        min_overlap_s: overlap rule above.

    Returns:
        DataFrame with ``row_id`` (``<stem>_<end second>``) then one int column per label.
    """
    column = {label: j for j, label in enumerate(labels)}
    ends = np.arange(WINDOW_SECONDS, int(seconds) + 1, WINDOW_SECONDS)
    stems = sorted(events)
    truth = np.zeros((len(stems) * len(ends), len(labels)), dtype=int)
    for s, stem in enumerate(stems):
        for ev in events[stem]:
            if ev.label not in column:
                continue
            need = min(min_overlap_s, 0.5 * (ev.end_s - ev.start_s))
            for w, end in enumerate(ends):
                if min(ev.end_s, end) - max(ev.start_s, end - WINDOW_SECONDS) >= need - 1e-9:
                    truth[s * len(ends) + w, column[ev.label]] = 1
    row_ids = [f"{stem}_{end}" for stem in stems for end in ends]
    return pd.concat([pd.DataFrame({"row_id": row_ids}), pd.DataFrame(truth, columns=labels)], axis=1)


def _write_tables(root: Path, config: SynthConfig, seed: int, species: list[Species], distractors: list[Species],
                  recordings: list[Recording], soundscapes: list[SoundscapePlan], results: list[Result],
                  val: list[SoundscapePlan]) -> None:
    labels = [s.label for s in species]
    write_csv(pd.DataFrame([{
        "primary_label": s.label, "inat_taxon_id": s.inat_taxon_id, "scientific_name": s.scientific_name,
        "common_name": s.common_name, "class_name": s.class_name} for s in species]), root / "taxonomy.csv")
    write_csv(pd.DataFrame([r.row for r in recordings], columns=list(TRAIN_COLUMNS)), root / "train.csv")

    by_stem: dict[str, dict[str, list[Event]]] = {"train": {}, "test": {}, "val": {}}
    calls, voice = [], []
    plans = [*soundscapes, *(r.plan for r in recordings), *val]  # the render order of ``results``
    for plan, res in zip(plans, results, strict=True):
        calls += [{"file": plan.path, "start_s": e.start_s, "end_s": e.end_s, "label": e.label, "kind": e.kind,
                   "snr_db": e.snr_db} for e in res.events]
        voice += [{"file": plan.path, "start_s": round(a, 3), "end_s": round(b, 3)} for a, b in res.voice]
        if isinstance(plan, SoundscapePlan):
            by_stem[plan.path.split("_", 1)[0]][Path(plan.path).stem] = res.events

    knobs = config.soundscape
    test_labels = window_labels(by_stem["test"], labels, knobs.seconds, knobs.label_min_overlap_s)
    write_csv(test_labels, root / "test_labels.csv")
    if val:
        write_csv(window_labels(by_stem["val"], labels, knobs.seconds, knobs.label_min_overlap_s),
                  root / "val_labels.csv")
    submission = test_labels.copy()
    submission[labels] = 1.0 / len(labels)
    write_csv(submission, root / "sample_submission.csv")

    truth = root / "synth_truth"
    write_csv(pd.DataFrame(calls, columns=["file", "start_s", "end_s", "label", "kind", "snr_db"]),
              truth / "calls.csv")
    write_csv(pd.DataFrame(voice, columns=["file", "start_s", "end_s"]), truth / "voice.csv")
    write_csv(window_labels(by_stem["train"], labels, knobs.seconds, knobs.label_min_overlap_s),
              truth / "train_soundscape_labels.csv")
    write_csv(pd.DataFrame([{
        "file": p.path, "split": p.path.split("_", 1)[0], "site": p.site, "night": p.night,
        "callers": len(p.callers), **{f"noise_{k}": v for k, v in p.noise.to_dict().items()}}
        for p in [*soundscapes, *val]]), truth / "soundscapes.csv")
    write_json(truth / "species.json", {"species": [s.to_dict() for s in species],
                                        "distractors": [s.to_dict() for s in distractors]})
    write_json(truth / "generator.json", {
        "preset": config.name, "seed": seed, "version": GENERATOR_VERSION, "birdclef_version": __version__,
        "full_scale_factor": FULL_SCALE_FACTOR, "parameters": config.to_dict()})
