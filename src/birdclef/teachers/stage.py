"""The teacher stage's work: run a foundation model over cached waveforms, write window probabilities in the
competition label space, embeddings and metrics (coverage, AUC where labels exist, speed)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdclef import SAMPLE_RATE, WINDOW_SECONDS, dist
from birdclef.io import atomic_path, write_csv, write_json, write_parquet
from birdclef.metric import macro_auc, with_interval
from birdclef.teachers._registry import create_teacher
from birdclef.teachers.base import Teacher
from birdclef.teachers.labels import LabelMap, map_labels
from birdclef.teachers.outputs import INFO_FILE, id_column
from birdclef.teachers.params import TeacherParams
from birdclef.teachers.windows import predict_windows, tile_offsets

LABEL_SPLITS = {"train_soundscape": "train", "test_soundscape": "test", "val_soundscape": "val"}
"""Cache kind -> ``split`` of the acquire stage's soundscape_labels table."""


def write_disabled(out: str | os.PathLike[str]) -> None:
    """The fixed marker of a stage run with the teacher off (downstream stages see the same folder every time)."""
    with atomic_path(out) as tmp:
        tmp.mkdir()
        write_json(tmp / INFO_FILE, {"enabled": False, "splits": []})


def run_teacher(
    params: TeacherParams,
    cache: Any,
    taxonomy: pd.DataFrame,
    out: str | os.PathLike[str],
    shards: str | os.PathLike[str],
    *,
    soundscape_labels: pd.DataFrame | None = None,
    segments: pd.DataFrame | None = None,
    teacher: Teacher | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Run the teacher over ``params.splits`` of the cache and write ``out`` atomically (layout: see
    :mod:`birdclef.teachers.outputs`). Finished blocks in ``shards`` are reused (resume) and cleared at the end.

    Args:
        params: the teacher section.
        cache: waveform cache (``keys(kind)``, ``read(key)``) at 32 kHz.
        taxonomy: the acquire stage's taxonomy (``primary_label``, ``scientific_name``, ``class_name``).
        out: output folder.
        shards: resumable blocks folder (kept across a kill).
        soundscape_labels: labelled soundscape windows (``row_id``, ``split``, species 0/1), for AUC.
        segments: focal segment table (``segment_id``, ``primary_label``), for the focal AUC.
        teacher: a built teacher (tests); ``None`` builds ``params.name`` from params.
        progress: progress bars.

    Returns:
        Flat metrics: coverage (overall and ``coverage_<class>``), ``windows_<split>``, ``auc_<split>`` (+ per
        class) where labels exist, ``audio_minutes`` and ``seconds_per_audio_minute`` of the windows computed in
        this run (absent when every block was resumed).
    """
    teacher = teacher or create_teacher(params.name, params.adapter_config())
    lmap = map_labels(taxonomy, teacher.labels, params.mapping_csv)
    settings = {k: getattr(params, k) for k in ("stride_s", "pool", "activation", "peak_normalize")}
    salt = {"teacher": teacher.fingerprint(), "index": lmap.index.tolist(), **settings}
    metrics: dict[str, float] = dict(lmap.coverage())
    clock = {"seconds": 0.0, "audio_s": 0.0}
    keys = []

    def compute(block: list[str]) -> list[dict[str, np.ndarray]]:
        results = []
        for key in block:
            wave = cache.read(key)
            t0 = time.perf_counter()
            probs, emb = predict_windows(teacher, wave, batch_size=params.batch_size, **settings)
            clock["seconds"] += time.perf_counter() - t0
            clock["audio_s"] += len(wave) / SAMPLE_RATE
            results.append({"probs": lmap.apply(probs), "embeddings": emb})
        return results

    with atomic_path(out) as tmp:
        tmp.mkdir()
        for split in params.splits:
            ids = cache.keys(split)
            key = dist.fingerprint(ids, {**salt, "split": split})
            results = dist.sharded_map(ids, compute, shards, key, params.block, progress, desc=f"teacher {split}")
            if results is None:  # another torchrun rank: rank 0 writes
                raise RuntimeError("the teacher stage runs as one process (rank 0 only)")
            keys.append(key)
            table, emb = _assemble(split, ids, results, lmap, teacher.embedding_dim)
            (tmp / split).mkdir()
            write_parquet(table, tmp / split / "probs.parquet")
            np.save(tmp / split / "embeddings.npy", emb.astype(params.embedding_dtype))
            metrics[f"windows_{split}"] = len(table)
            metrics.update(_scores(split, table, lmap, soundscape_labels, segments))
        write_csv(lmap.table(), tmp / "mapping.csv")
        write_json(tmp / INFO_FILE, _info(params, teacher, lmap, salt["teacher"]["files"]))
    for key in keys:
        dist.clear(shards, key)
    if clock["audio_s"] > 0:
        metrics["audio_minutes"] = clock["audio_s"] / 60.0
        metrics["seconds_per_audio_minute"] = clock["seconds"] / (clock["audio_s"] / 60.0)
    return metrics


def _assemble(
    split: str, ids: list[str], results: list[dict[str, np.ndarray]], lmap: LabelMap, dim: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """One table row and one embedding row per 5-s window, files in ``ids`` order."""
    counts = np.array([len(r["probs"]) for r in results], dtype=np.int64)
    probs = [np.zeros((0, len(lmap.species)), np.float32)] + [r["probs"] for r in results]
    embs = [np.zeros((0, dim), np.float32)] + [r["embeddings"] for r in results]
    start = np.concatenate([np.zeros(0)] + [np.arange(n, dtype=float) * WINDOW_SECONDS for n in counts])
    owner = np.repeat(np.asarray(ids, dtype=object), counts)
    meta = pd.DataFrame({
        id_column(split): owner,
        "row_id": [f"{i}_{int(s) + WINDOW_SECONDS}" for i, s in zip(owner, start, strict=True)],
        "start_s": start,
        "end_s": start + WINDOW_SECONDS,
    })  # fmt: skip
    table = pd.DataFrame(np.concatenate(probs).astype(np.float32), columns=list(lmap.species))
    return pd.concat([meta, table], axis=1), np.concatenate(embs)


def _scores(
    split: str, table: pd.DataFrame, lmap: LabelMap, labels: pd.DataFrame | None, segments: pd.DataFrame | None
) -> dict[str, float]:
    """AUC of the teacher against the labels of ``split`` where they exist, over the species it covers."""
    cov = [s for s, c in zip(lmap.species, lmap.covered, strict=True) if c]
    taxa = dict(zip(lmap.species, lmap.class_names, strict=True))
    if not cov or not len(table):
        return {}
    if split in LABEL_SPLITS and labels is not None and len(labels):
        truth = labels[(labels["split"] == LABEL_SPLITS[split]) & labels["row_id"].isin(set(table["row_id"]))]
        sub = table[table["row_id"].isin(set(truth["row_id"]))]
    elif split == "segment" and segments is not None and len(segments):
        sub = table.groupby("segment_id", sort=False)[cov].max().reset_index().rename(columns={"segment_id": "row_id"})
        seg = segments.set_index("segment_id").reindex(sub["row_id"])
        truth = pd.DataFrame((seg["primary_label"].to_numpy()[:, None] == np.asarray(cov)[None, :]).astype(int),
                             columns=cov)  # fmt: skip
        truth.insert(0, "row_id", sub["row_id"].to_numpy())
    else:
        return {}
    if not len(truth):
        return {}
    truth = truth[["row_id", *cov]].reset_index(drop=True)
    scores = macro_auc(truth, sub[["row_id", *cov]], taxa)
    out = {f"auc_{split}{k[3:]}": v for k, v in scores.items() if not np.isnan(v)}
    if split in LABEL_SPLITS:  # soundscape windows: a competition score, with its 95% interval over soundscapes
        with_interval(out, f"auc_{split}", truth, sub[["row_id", *cov]])
    return out


def _info(params: TeacherParams, teacher: Teacher, lmap: LabelMap, digests: dict[str, str]) -> dict[str, Any]:
    return {
        "enabled": True,
        "name": teacher.name,
        "files": {k: {"path": str(p), "sha256": digests[k]} for k, p in teacher.files.items()},
        "sample_rate": teacher.sample_rate,
        "window_s": teacher.window_s,
        "tile_offsets_s": tile_offsets(teacher.window_s, params.stride_s).tolist(),
        "embedding_dim": teacher.embedding_dim,
        "n_teacher_classes": len(teacher.labels),
        "splits": list(params.splits),
        "species": list(lmap.species),
        "covered": [s for s, c in zip(lmap.species, lmap.covered, strict=True) if c],
        **{k: getattr(params, k) for k in ("pool", "activation", "peak_normalize", "stride_s", "embedding_dtype")},
    }


def labels_or_none(path: str | os.PathLike[str] | None) -> pd.DataFrame | None:
    """A parquet table when the path exists, else ``None`` (optional inputs of the stage)."""
    return pd.read_parquet(path) if path is not None and Path(path).exists() else None
