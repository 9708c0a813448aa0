"""D4 (2025 rank 7): train-soundscape windows a foundation-model teacher is confident about, as training segments."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from birdclef.schema import SEGMENTS

DEFAULTS = {"enabled": False, "threshold": 0.1, "weight": 1.0, "negatives": "zero"}
"""``train.teacher_segments``: off, rank 7's 0.1 confidence, full sample weight, the other covered species as 0."""

NEGATIVES = ("zero", "mask")
"""What a segment says about the covered species its teacher did not score above the threshold: absent (``zero``,
rank 7) or nothing (``mask``: out of the loss; a teacher of recall 0.26 misses most calls it does not flag)."""


def teacher_segments(
    table: pd.DataFrame,
    species: list[str],
    taxonomy: pd.DataFrame,
    threshold: float = 0.1,
    weight: float = 1.0,
    negatives: str = "zero",
) -> pd.DataFrame:
    """One labelled segment per soundscape window where the teacher scores some covered species above ``threshold``.

    The window's primary label is its most confident species, the other species above the threshold are its
    secondary labels. Segments read their audio from the soundscape's cache entry (``cache_key`` = soundscape id,
    ``offset_s`` = window start), are never in a validation fold (``fold`` = -1) and carry ``weight``.
    ``masked_labels`` lists the species the segment says nothing about, left out of its loss: those the teacher
    does not cover (NaN: no teacher signal is ever a zero label), and with ``negatives="mask"`` also the covered
    ones below the threshold.

    Args:
        table: the teacher stage's window table (``soundscape_id``, ``start_s``, ``end_s``, one probability column
            per species, NaN where the teacher does not cover it), see ``birdclef.teachers.outputs``.
        species: the species columns of ``table``, in taxonomy order.
        taxonomy: ``primary_label``, ``class_name``.
        threshold: a species counts above this probability (rank 7: 0.1).
        weight: sample weight of the segments.
        negatives: ``zero`` | ``mask`` (:data:`NEGATIVES`).

    Returns:
        Rows of the segment table schema (birdclef.schema.SEGMENTS) plus ``cache_key``, ``offset_s`` and
        ``masked_labels``.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"teacher segments threshold must be in (0, 1), got {threshold}")
    if negatives not in NEGATIVES:
        raise ValueError(f"train.teacher_segments.negatives must be one of {', '.join(NEGATIVES)}, not {negatives!r}")
    raw = table[species].to_numpy(dtype=np.float64)
    probs = np.nan_to_num(raw, nan=-1.0)
    above = probs > threshold
    silent = np.isnan(raw) | (~above if negatives == "mask" else False)
    rows = np.flatnonzero(above.any(axis=1))
    classes = dict(zip(taxonomy["primary_label"], taxonomy["class_name"], strict=True))
    names = np.asarray(species, dtype=object)
    out = []
    for r in rows:
        order = np.argsort(-probs[r], kind="stable")
        labels = [str(names[c]) for c in order if above[r, c]]
        sid, start, end = table["soundscape_id"].iat[r], float(table["start_s"].iat[r]), float(table["end_s"].iat[r])
        out.append({
            "segment_id": f"{sid}@{start:g}", "recording_id": sid, "path": f"train_soundscapes/{sid}",
            "start_s": start, "end_s": end, "primary_label": labels[0], "secondary_labels": labels[1:],
            "class_name": classes.get(labels[0], "unknown"), "rating": 0.0, "fold": -1, "weight": float(weight),
            "copies": 1, "cache_key": sid, "offset_s": start,
            "masked_labels": [str(n) for n in names[silent[r]]],
        })  # fmt: skip
    return pd.DataFrame(out, columns=[*SEGMENTS, "cache_key", "offset_s", "masked_labels"])


def load_teacher_segments(
    folder: str | os.PathLike[str], train_cfg: Mapping[str, Any], taxonomy: pd.DataFrame
) -> pd.DataFrame | None:
    """The D4 training segments a train stage adds, from the teacher stage's ``train_soundscape`` windows.

    Args:
        folder: the teacher stage's output folder (``build/teacher``).
        train_cfg: the iteration's ``train`` section (its ``teacher_segments`` sub-section: enabled, threshold,
            weight, negatives; an iteration may override it).
        taxonomy: ``primary_label``, ``class_name``.

    Returns:
        ``teacher_segments`` rows, or None when ``train.teacher_segments.enabled`` is false.

    Raises:
        ValueError: enabled, but the teacher stage ran off or without ``train_soundscape`` in ``teacher.splits``.
    """
    cfg = {**DEFAULTS, **(train_cfg.get("teacher_segments") or {})}
    if not cfg["enabled"]:
        return None
    from birdclef.teachers import load_outputs

    try:
        outputs = load_outputs(folder, "train_soundscape")
    except FileNotFoundError as err:
        raise ValueError(
            f"train.teacher_segments.enabled is true but the teacher stage has no train-soundscape windows ({err}); "
            "turn the teacher stage on (teacher.enabled: true, train_soundscape in teacher.splits) or set "
            "train.teacher_segments.enabled: false"
        ) from err
    return teacher_segments(outputs.table, list(outputs.species), taxonomy, float(cfg["threshold"]),
                            float(cfg["weight"]), str(cfg["negatives"]))  # fmt: skip
