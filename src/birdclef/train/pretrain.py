"""D1 pre-training: members trained on extra sources' species outside the competition, to fine-tune from later.

Rank 2 of BirdCLEF+ 2025 pre-trained on Xeno-canto recordings of species *not* in the competition, then
fine-tuned on the competition data with a fresh head. Here the extra sources are the folders that
``birdclef data kaggle --extra`` put under ``data/extra/<name>/`` (a metadata CSV with primary_label and filename,
plus audio). :func:`pretrain_segments` turns them into a segment table and a taxonomy of their own (the
competition's species left out), and :func:`run_pretrain` trains each member on it through the same
``train_member`` / ``fit`` as every iteration. An iteration with ``init_from: build/pretrain/{model}/model.pt``
then starts from that backbone with its competition head re-created (``member._initialise``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from birdclef.audio import AudioError
from birdclef.audio.decode import audio_info
from birdclef.data.folds import assign_folds
from birdclef.data.layout import EXTRA_CSV_REQUIRED, EXTRA_DIR, extra_source_paths, parse_metadata, read_csv_strings

UNKNOWN_CLASS = "Unknown"  # taxon class of an extra species whose metadata has no class_name column


@dataclass
class PretrainConfig:
    """The ``pretrain:`` params section.

    Attributes:
        sources: extra source names under ``data/extra/``; empty turns the stage off (it writes a marker only).
        members: model names (keys of ``models``) to pre-train.
        exclude_competition_species: leave out recordings whose primary label is a competition species, so the
            pre-trained backbone never saw them (rank 2); their audio stays for the fine-tuning iterations.
        min_files: species with fewer usable files are left out (too few to learn or validate).
        trim_s: seconds kept from the start of each file (0 = the whole file).
        n_folds: folds for the held-out ``val_auc`` (``train.val_fold`` picks one).
        seed: fold assignment seed.
        train: overrides of ``train.*`` for pre-training (e.g. ``{loop: {epochs: 20}}``).
    """

    sources: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)
    exclude_competition_species: bool = True
    min_files: int = 2
    trim_s: float = 30.0
    n_folds: int = 5
    seed: int = 0
    train: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_params(cls, section: Mapping[str, Any] | None) -> PretrainConfig:
        """Build from the ``pretrain:`` params dict; unknown keys raise, naming them."""
        section = dict(section or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ValueError(f"pretrain params: unknown key(s) {unknown}; known: {sorted(known)}")
        cfg = cls(**section)
        cfg.sources, cfg.members, cfg.train = list(cfg.sources or []), list(cfg.members or []), dict(cfg.train or {})
        if cfg.sources and not cfg.members:
            raise ValueError("pretrain.sources is set but pretrain.members is empty: name the models to pre-train")
        if cfg.n_folds < 2 or cfg.min_files < 1 or cfg.trim_s < 0:
            raise ValueError(f"pretrain params: need n_folds >= 2, min_files >= 1, trim_s >= 0 (got {section})")
        return cfg

    @property
    def enabled(self) -> bool:
        """Whether there is anything to pre-train on."""
        return bool(self.sources)


def pretrain_segments(
    root: str | Path, cfg: PretrainConfig, competition_species: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The extra sources as a segment table (one segment per file) with their own taxonomy.

    Rows that cannot be used are skipped and counted, never fatal: malformed CSV rows, missing or unreadable
    audio (each listed in ``report["skipped"]`` with its row and reason), competition species (when excluded),
    species with fewer than ``min_files`` files.

    Args:
        root: the data root holding ``extra/<source>/``.
        cfg: the pretrain params.
        competition_species: the competition taxonomy's primary labels.

    Returns:
        ``(segments, taxonomy, report)``: segments in the clean stage's schema (segment_id = recording_id =
        ``<source>/<filename>``, start_s 0, end_s = min(duration, trim_s) in seconds, fold, weight 1, copies 1);
        taxonomy with primary_label and class_name sorted by label; report with counts and the skipped rows.

    Raises:
        ValueError: no species is left to pre-train on (the message gives the counts of what was dropped).
        LayoutError: a source folder or its metadata CSV is missing.
    """
    if not cfg.sources:
        raise ValueError("pretrain.sources is empty: name the extra sources (folders under data/extra/)")
    root = Path(root)
    frames, skipped = [], []
    for source in cfg.sources:
        csv_path, audio_dir = extra_source_paths(root, source)
        csv_name = f"{EXTRA_DIR}/{source}/{csv_path.name}"
        raw, bad_lines = read_csv_strings(csv_path, EXTRA_CSV_REQUIRED, name=csv_name)
        rows, bad_values = parse_metadata(raw, csv_name)
        bad_rows = {p.row for p in bad_values}
        skipped += [{"row": p.row, "reason": p.kind, "detail": p.problem} for p in bad_lines + bad_values]
        rows = rows[~rows["row"].isin(bad_rows) & (rows["filename"] != "")].copy()
        rows["source"] = source
        rows["path"] = [f"{audio_dir}/{f}" for f in rows["filename"]]
        frames.append(rows)
    rows = pd.concat(frames, ignore_index=True)
    report: dict[str, Any] = {"rows": int(len(rows) + len(skipped))}
    repeated = rows.duplicated(["source", "filename"], keep="first")
    skipped += [{"row": r, "reason": "duplicate", "detail": f"{p} is named by an earlier row"}
                for r, p in zip(rows.loc[repeated, "row"], rows.loc[repeated, "path"], strict=True)]  # fmt: skip
    rows = rows[~repeated]
    competition = set(competition_species)
    if cfg.exclude_competition_species and len(rows):
        is_comp = rows["primary_label"].isin(competition)
        report["competition_species_files"] = int(is_comp.sum())
        rows = rows[~is_comp]
    durations = []
    for row, path in zip(rows["row"], rows["path"], strict=True):
        try:
            info = audio_info(root / path)
        except AudioError as err:
            skipped.append({"row": row, "reason": err.reason, "detail": str(err)})
            durations.append(math.nan)
            continue
        durations.append(info.frames / info.sample_rate)
    rows = rows.assign(duration_s=durations)
    rows = rows[rows["duration_s"].notna()]
    counts = rows["primary_label"].value_counts()
    rare = sorted(counts[counts < cfg.min_files].index)
    report["rare_species_dropped"] = len(rare)
    rows = rows[~rows["primary_label"].isin(rare)].sort_values(["source", "filename"], kind="stable")
    rows = rows.reset_index(drop=True)
    if rows.empty:
        counts = report | {"skipped": len(skipped)}
        raise ValueError(f"pretrain: no species left in sources {cfg.sources} after skipping bad rows, "
                         f"competition species and species under {cfg.min_files} files: {counts}")
    keys = [f"{s}/{f}" for s, f in zip(rows["source"], rows["filename"], strict=True)]
    end = rows["duration_s"] if cfg.trim_s == 0 else rows["duration_s"].clip(upper=cfg.trim_s)
    class_names = rows["class_name"].str.strip() if "class_name" in rows else pd.Series(UNKNOWN_CLASS, rows.index)
    class_names = class_names.replace("", UNKNOWN_CLASS)
    segments = pd.DataFrame(
        {
            "segment_id": keys,
            "recording_id": keys,
            "path": rows["path"],
            "start_s": 0.0,
            "end_s": end.astype(float),
            "primary_label": rows["primary_label"],
            "secondary_labels": rows["secondary_labels"],
            "class_name": class_names,
            "rating": rows["rating"].astype(float),
            "fold": assign_folds(rows["primary_label"].tolist(), cfg.n_folds, cfg.seed).astype("int64"),
            "weight": 1.0,
            "copies": 1,
        }
    )
    taxonomy = (
        segments[["primary_label", "class_name"]]
        .drop_duplicates("primary_label")
        .sort_values("primary_label", kind="stable")
        .reset_index(drop=True)
    )
    report |= {
        "files": int(len(segments)),
        "species": int(len(taxonomy)),
        "hours": round(float((segments["end_s"] - segments["start_s"]).sum()) / 3600, 4),
        "skipped": skipped,
    }
    return segments, taxonomy, report


def run_pretrain(
    root: str | Path,
    params: Mapping[str, Any],
    competition_species: Sequence[str],
    out: Path,
    resume: Path,
    device: str = "cpu",
) -> dict[str, Any]:
    """Pre-train every ``pretrain.members`` model on the extra sources; one ``<model>/model.pt`` each in ``out``.

    The extra audio is decoded once into a waveform cache under ``resume/cache`` (persistent scratch, like the
    resume checkpoints: a killed run resumes without decoding again; removed once every member is done).

    Args:
        root: the data root.
        params: the whole params dict (``pretrain``, ``train``, ``models``, ``mels``, ``features``, ``tracking``).
        competition_species: the competition taxonomy's primary labels.
        out: output folder (written by the caller atomically).
        resume: resume folder (kept across a killed run).
        device: torch device.

    Returns:
        Metrics: file / species / hour counts and, per member, what ``train_member`` returns (``val_auc``, ...).
    """
    import shutil

    from birdclef.features.cache import WaveCache
    from birdclef.features.waves import FeaturesConfig, build_wave_cache
    from birdclef.io import atomic_path, write_csv
    from birdclef.track import stage_run
    from birdclef.train.member import MemberInputs, train_member

    cfg = PretrainConfig.from_params(params.get("pretrain"))
    segments, taxonomy, report = pretrain_segments(root, cfg, competition_species)
    cache_dir = resume / "cache"
    # The cache serves a resumed run only if it holds exactly these segments (same files, same trims).
    key = hashlib.sha256(segments[["segment_id", "path", "end_s"]].to_json().encode()).hexdigest()
    key_file = resume / "cache.key"
    if not (cache_dir / "meta.json").exists() or not key_file.exists() or key_file.read_text().strip() != key:
        resume.mkdir(parents=True, exist_ok=True)
        features = FeaturesConfig.from_params(dict(params.get("features", {}), soundscape_splits=[]))
        with atomic_path(cache_dir) as tmp:
            build_wave_cache(segments, None, root, tmp, features)
        key_file.write_text(key + "\n")
    inputs = MemberInputs(segments=segments, taxonomy=taxonomy, cache=WaveCache(cache_dir))
    # train_member's iteration: pre-training is "iteration -1", supervised, with its own train.* overrides.
    iteration = {"k": -1, "members": cfg.members, "teacher": None, "train": cfg.train}
    section = {k: params[k] for k in ("pretrain", "train", "models", "mels") if k in params}
    metrics: dict[str, Any] = {k: v for k, v in report.items() if k != "skipped"}
    out.mkdir(parents=True, exist_ok=True)
    for model_name in cfg.members:
        name = f"pretrain_{model_name}"
        with stage_run("pretrain", {**section, "member": name}, params.get("tracking", {})) as run:
            metrics[model_name] = train_member(
                name, model_name, params, iteration, inputs, out / model_name, resume / model_name, run, device
            )
    write_csv(taxonomy, out / "taxonomy.csv")
    write_csv(pd.DataFrame(report["skipped"], columns=["row", "reason", "detail"]), out / "skipped.csv")
    shutil.rmtree(cache_dir, ignore_errors=True)
    key_file.unlink(missing_ok=True)
    return metrics
