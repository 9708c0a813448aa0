"""Map a teacher's classes onto the competition species: by scientific name, plus an optional mapping CSV.

Species the teacher does not know get no teacher signal at all: their columns are NaN (and ``covered`` is False),
never a zero that would read as "absent".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

MAPPING_COLUMNS = ("primary_label", "teacher_label")


def normalise(name: object) -> str:
    """Case- and whitespace-insensitive key of a name (``"  Rhinella  Marina"`` -> ``"rhinella marina"``)."""
    return " ".join(str(name).split()).casefold()


def scientific_name(label: str) -> str:
    """The scientific name in a teacher label: BirdNET's ``Scientific name_Common name`` -> ``Scientific name``;
    labels without ``_`` (Perch v2's) are scientific names already."""
    return label.split("_", 1)[0]


@dataclass(frozen=True)
class LabelMap:
    """Where each competition species sits among a teacher's classes.

    Attributes:
        species: competition primary labels, in taxonomy (submission column) order.
        class_names: taxon class per species (``Aves``, ``Amphibia``, ``Insecta``, ``Mammalia``; ``unknown``).
        index: (C,) int64 teacher class index per species, -1 where the teacher does not know it.
        teacher_labels: the matched teacher label per species ("" where unmatched).
        matched_by: ``scientific_name`` | ``mapping_csv`` | "" per species.
    """

    species: tuple[str, ...]
    class_names: tuple[str, ...]
    index: np.ndarray
    teacher_labels: tuple[str, ...]
    matched_by: tuple[str, ...]

    @property
    def covered(self) -> np.ndarray:
        """(C,) bool: species the teacher knows."""
        return self.index >= 0

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """Teacher scores (..., teacher classes) -> (..., C) float32 in species order, NaN for uncovered species."""
        scores = np.asarray(scores, dtype=np.float32)
        out = np.full((*scores.shape[:-1], len(self.species)), np.nan, dtype=np.float32)
        cov = self.covered
        out[..., cov] = scores[..., self.index[cov]]
        return out

    def coverage(self) -> dict[str, float]:
        """``coverage`` (share of species covered), ``n_covered``, ``n_species`` and ``coverage_<class>`` per taxon."""
        cov = self.covered
        out: dict[str, float] = {
            "coverage": float(cov.mean()) if len(cov) else 0.0,
            "n_covered": int(cov.sum()),
            "n_species": len(cov),
        }
        names = np.asarray(self.class_names)
        for name in sorted(set(self.class_names)):
            out[f"coverage_{name}"] = float(cov[names == name].mean())
        return out

    def table(self) -> pd.DataFrame:
        """One row per species: primary_label, class_name, covered, teacher_index, teacher_label, matched_by."""
        return pd.DataFrame({
            "primary_label": list(self.species),
            "class_name": list(self.class_names),
            "covered": self.covered,
            "teacher_index": self.index,
            "teacher_label": list(self.teacher_labels),
            "matched_by": list(self.matched_by),
        })  # fmt: skip


def map_labels(
    taxonomy: pd.DataFrame,
    teacher_labels: Sequence[str],
    mapping_csv: str | os.PathLike[str] | None = None,
    param: str = "teacher.mapping_csv",
) -> LabelMap:
    """Match competition species to teacher classes.

    A species matches the teacher class whose scientific name (see :func:`scientific_name`) equals its
    ``scientific_name`` (case- and whitespace-insensitive; the first such class when a name repeats). Rows of
    the mapping CSV (columns ``primary_label,teacher_label``) override that: ``teacher_label`` names a teacher
    class by its full label or its scientific name, and an empty one removes a species' match (a homonym).

    Args:
        taxonomy: ``primary_label`` (+ ``scientific_name``, ``class_name`` where known), in species order.
        teacher_labels: the teacher's class names, in logit order.
        mapping_csv: optional mapping file.
        param: the param named in errors.

    Raises:
        ValueError: a bad mapping CSV (missing columns, unknown species, repeated species, a teacher label the
            teacher does not have), naming the file and row.
    """
    if "primary_label" not in taxonomy.columns:
        raise ValueError("taxonomy has no primary_label column")
    species = [str(s) for s in taxonomy["primary_label"]]
    sci = taxonomy["scientific_name"] if "scientific_name" in taxonomy.columns else pd.Series([None] * len(species))
    classes = taxonomy["class_name"] if "class_name" in taxonomy.columns else pd.Series(["unknown"] * len(species))
    by_full: dict[str, int] = {}
    by_sci: dict[str, int] = {}
    for i, label in enumerate(teacher_labels):
        by_full.setdefault(normalise(label), i)
        by_sci.setdefault(normalise(scientific_name(label)), i)
    index = np.full(len(species), -1, dtype=np.int64)
    how = [""] * len(species)
    for j, name in enumerate(sci):
        if isinstance(name, str) and name.strip() and normalise(name) in by_sci:
            index[j], how[j] = by_sci[normalise(name)], "scientific_name"
    if mapping_csv is not None:
        for j, k in _read_mapping(Path(mapping_csv), species, by_full, by_sci, param).items():
            index[j], how[j] = k, ("mapping_csv" if k >= 0 else "")
    return LabelMap(
        species=tuple(species),
        class_names=tuple(str(c) if isinstance(c, str) and c else "unknown" for c in classes),
        index=index,
        teacher_labels=tuple(teacher_labels[k] if k >= 0 else "" for k in index),
        matched_by=tuple(how),
    )


def _read_mapping(
    path: Path, species: list[str], by_full: dict[str, int], by_sci: dict[str, int], param: str
) -> dict[int, int]:
    if not path.is_file():
        raise FileNotFoundError(f"{param}: no mapping CSV at {path}")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in MAPPING_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path} ({param}): missing column(s) {', '.join(missing)}; need {', '.join(MAPPING_COLUMNS)}")
    pos = {s: j for j, s in enumerate(species)}
    out: dict[int, int] = {}
    for row, (label, teacher) in enumerate(zip(df["primary_label"], df["teacher_label"], strict=True), start=2):
        label = label.strip()
        if label not in pos:
            raise ValueError(f"{path} row {row}: primary_label {label!r} is not a taxonomy species")
        if pos[label] in out:
            raise ValueError(f"{path} row {row}: primary_label {label!r} is mapped more than once")
        key = normalise(teacher)
        if not key:
            out[pos[label]] = -1
            continue
        k = by_full.get(key, by_sci.get(key))
        if k is None:
            raise ValueError(f"{path} row {row}: the teacher has no class {teacher!r} (full label or scientific name)")
        out[pos[label]] = k
    return out
