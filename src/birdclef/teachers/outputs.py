"""Read the teacher stage's outputs: per-5-s-window probabilities (NaN = uncovered species) and embeddings.

Layout of the stage's folder (``build/teacher``)::

    teacher.json                 what ran: enabled, name, files + sha256, rate, window, tiles, species covered
    mapping.csv                  one row per species: covered, teacher_index, teacher_label, matched_by
    <split>/probs.parquet        <id column>, row_id, start_s, end_s, one column per species (NaN: uncovered)
    <split>/embeddings.npy       (rows, D), row-aligned with probs.parquet

``<split>`` is a waveform-cache kind: ``train_soundscape`` / ``test_soundscape`` (id column ``soundscape_id``,
row_id ``<soundscape_id>_<end s>`` as in a submission) or ``segment`` (focal segments, id column ``segment_id``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdclef import WINDOW_SECONDS
from birdclef.io import read_json

INFO_FILE = "teacher.json"
META_COLUMNS = ("row_id", "start_s", "end_s")


def id_column(split: str) -> str:
    """The id column of a split's table: ``segment_id`` for focal segments, else ``soundscape_id``."""
    return "segment_id" if split == "segment" else "soundscape_id"


def teacher_info(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The stage's ``teacher.json`` (``{"enabled": False, ...}`` when the stage ran with the teacher off)."""
    return read_json(Path(folder) / INFO_FILE)


@dataclass(frozen=True)
class TeacherOutputs:
    """One split of the teacher stage's outputs.

    Attributes:
        split: the cache kind.
        table: id column, ``row_id``, ``start_s``, ``end_s``, then one probability column per species (NaN where
            the teacher does not cover the species), one row per 5-s window, files in cache-key order.
        embeddings: (rows, D) float32, row-aligned with ``table``.
        species: species columns, in taxonomy order.
        covered: (C,) bool, species the teacher covers.
    """

    split: str
    table: pd.DataFrame
    embeddings: np.ndarray
    species: tuple[str, ...]
    covered: np.ndarray

    @property
    def id_column(self) -> str:
        """``soundscape_id`` or ``segment_id``."""
        return id_column(self.split)

    @property
    def probs(self) -> np.ndarray:
        """(rows, C) float32 probabilities, NaN for uncovered species."""
        return self.table[list(self.species)].to_numpy(dtype=np.float32)

    def rows_of(self, ids: Sequence[str]) -> list[np.ndarray]:
        """Row indices of each id's windows, in window order (by ``start_s``, whatever the table's row order).

        Raises:
            KeyError: an id the teacher did not run on.
            ValueError: an id's windows are not the consecutive 5-s windows from 0 s (one missing or repeated
                would shift every window after it onto the wrong audio).
        """
        groups = self.table.groupby(self.id_column, sort=False).indices
        missing = [i for i in ids if i not in groups]
        if missing:
            raise KeyError(f"teacher outputs ({self.split}) have no windows for {', '.join(map(str, missing[:5]))}")
        start = self.table["start_s"].to_numpy(dtype=np.float64)
        out = []
        for i in ids:
            rows = np.asarray(groups[i])
            rows = rows[np.argsort(start[rows], kind="stable")]
            if not np.allclose(start[rows], np.arange(len(rows)) * WINDOW_SECONDS):
                shown = ", ".join(f"{s:g}" for s in start[rows][:8]) + (", ..." if len(rows) > 8 else "")
                raise ValueError(
                    f"teacher outputs ({self.split}): the windows of {i} start at {shown} s, not every "
                    f"{WINDOW_SECONDS} s from 0: a missing or repeated window; rerun the teacher stage"
                )
            out.append(rows)
        return out

    def window_probs(self, ids: Sequence[str]) -> np.ndarray:
        """(files, windows, C) probabilities of ``ids`` (files of equal window count, e.g. 60-s soundscapes),
        in the layout of ``birdclef.train.pseudo.teacher_predictions``; NaN for uncovered species."""
        return _stack(self.probs, self.rows_of(ids), self.split)

    def window_embeddings(self, ids: Sequence[str]) -> np.ndarray:
        """(files, windows, D) float32 embeddings of ``ids`` (files of equal window count)."""
        return _stack(self.embeddings, self.rows_of(ids), self.split)


def load_outputs(folder: str | os.PathLike[str], split: str = "train_soundscape") -> TeacherOutputs:
    """Read one split of the teacher stage's folder.

    Raises:
        FileNotFoundError: the stage ran with the teacher off, or without this split in ``teacher.splits``.
    """
    folder = Path(folder)
    info = teacher_info(folder)
    if not info.get("enabled"):
        raise FileNotFoundError(f"{folder}: the teacher stage ran with teacher.enabled: false (no teacher outputs)")
    if split not in info.get("splits", []):
        raise FileNotFoundError(f"{folder}: no teacher outputs for {split!r}; add it to teacher.splits")
    table = pd.read_parquet(folder / split / "probs.parquet")
    emb = np.load(folder / split / "embeddings.npy").astype(np.float32)
    species = tuple(info["species"])
    covered = np.isin(np.asarray(species), info["covered"])
    return TeacherOutputs(split, table, emb, species, covered)


def confident_segments(outputs: TeacherOutputs, threshold: float = 0.1) -> pd.DataFrame:
    """D4 (2025 rank 7): the windows where the teacher scores a covered species above ``threshold``.

    Returns:
        One row per (window, species) above the threshold: id column, ``start_s``, ``end_s``,
        ``primary_label``, ``prob``; ordered by file, time, then species order.
    """
    probs = outputs.probs
    with np.errstate(invalid="ignore"):
        rows, cols = np.nonzero(np.nan_to_num(probs, nan=-1.0) > threshold)
    t = outputs.table
    return pd.DataFrame({
        outputs.id_column: t[outputs.id_column].to_numpy()[rows],
        "start_s": t["start_s"].to_numpy()[rows],
        "end_s": t["end_s"].to_numpy()[rows],
        "primary_label": np.asarray(outputs.species, dtype=object)[cols],
        "prob": probs[rows, cols].astype(np.float32),
    })  # fmt: skip


def _stack(values: np.ndarray, rows: list[np.ndarray], split: str) -> np.ndarray:
    counts = {len(r) for r in rows}
    if len(counts) > 1:
        raise ValueError(f"teacher outputs ({split}): files have {sorted(counts)} windows; stack equal-length files")
    if not rows:
        return np.zeros((0, 0, values.shape[1]), dtype=values.dtype)
    return np.stack([values[r] for r in rows])
