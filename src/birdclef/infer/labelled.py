"""The labelled soundscape splits of the ensemble stage, and which of their files can be scored.

A split's folder can hold files that cannot count towards a score: files the acquire stage quarantined
(``build/acquire/quarantine.csv``), files that fail to decode, and files the labels do not cover (every predicted
window of a scored file needs its label row). With ``ensemble.on_bad: skip`` those are left out and reported
(``left_out`` and the ``n_*soundscapes_<why>`` metrics, one warning per file); with ``fail`` the first found is an
error naming it. Quarantined files are always left out: acquire already decided about them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from birdclef.infer import runner
from birdclef.infer.submission import row_ids

log = logging.getLogger(__name__)

ON_BAD = ("skip", "fail")
"""``ensemble.on_bad``: leave out and report the files that cannot be scored, or stop naming the first."""
LEFT_OUT = ("quarantined", "failed", "unlabelled")
"""Why a split's file is left out of its scores (metric ``n_soundscapes_<why>``, ``n_val_soundscapes_<why>``)."""


@dataclass(frozen=True)
class Labelled:
    """One split of labelled soundscapes.

    Attributes:
        split: ``val`` or ``test`` (messages, metric names).
        files: its audio files in name order (empty when the dataset has none), quarantined ones removed.
        labels: window labels in submission format (``row_id`` + 0/1 species columns); ``None`` when unusable.
        missing: why the split is unusable, naming the folder or file; ``""`` when it is usable.
        left_out: file path -> ``(why, detail)`` for the files kept out of the scores, ``why`` one of ``LEFT_OUT``.
    """

    split: str
    files: list[Path]
    labels: pd.DataFrame | None
    missing: str = ""
    left_out: dict[str, tuple[str, str]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Files left out per reason, every reason present (stable metric keys)."""
        found = [why for why, _ in self.left_out.values()]
        return {why: found.count(why) for why in LEFT_OUT}


def read_split(
    split: str,
    folder: str | os.PathLike[str],
    labels: str | os.PathLike[str],
    quarantine: str | os.PathLike[str] | None = None,
) -> Labelled:
    """The labelled soundscapes of ``folder`` with their labels CSV.

    A missing folder, a folder without audio or a missing CSV give an unusable split (``missing`` says which)
    rather than an error: only some settings need it.

    Args:
        split: ``val`` or ``test``.
        folder: the split's soundscape folder (``data/<split>_soundscapes``).
        labels: its labels CSV.
        quarantine: the acquire stage's quarantine.csv; its ``file`` paths are relative to the data root, the
            folder's parent in the competition layout. Those files are left out (``left_out``).
    """
    folder, labels = Path(folder), Path(labels)
    files = runner.list_soundscapes(folder) if folder.is_dir() else []
    left_out: dict[str, tuple[str, str]] = {}
    if quarantine is not None and files:
        table = pd.read_csv(quarantine, dtype=str, keep_default_na=False)
        bad = {
            os.path.normpath(folder.parent / f): f"{kind}: {problem}"
            for kind, f, problem in zip(table["kind"], table["file"], table["problem"], strict=True)
            if f
        }
        for f in files:
            if os.path.normpath(f) in bad:
                left_out[str(f)] = ("quarantined", f"quarantined by acquire ({bad[os.path.normpath(f)]})")
        files = [f for f in files if str(f) not in left_out]
    if not folder.is_dir():
        missing = f"{folder} does not exist"
    elif not files:
        missing = f"{folder} holds no audio files" + (" that acquire did not quarantine" if left_out else "")
    elif not labels.is_file():
        missing = f"{labels} does not exist"
    else:
        return Labelled(split, files, pd.read_csv(labels, dtype={"row_id": str}), left_out=left_out)
    return Labelled(split, files, None, missing, left_out)


def run_split(split: Labelled, on_bad: str, **predict_folder: object) -> tuple[Labelled, runner.FolderPredictions]:
    """Predict the files of ``split`` that can be scored, and return the split and predictions without the others.

    Files with no label row are not predicted; files that fail to decode (a cut file counts) or whose labels
    lack some predicted window are predicted and then dropped. Each dropped file is logged once, named once.

    Args:
        split: a usable split.
        on_bad: see ``ON_BAD``.
        predict_folder: the other ``runner.predict_folder`` arguments (members, factory, predict, post, workers,
            threads, file_seconds).

    Returns:
        ``(split with only the scored files, their predictions)``; ``left_out`` lists the others.

    Raises:
        ValueError: ``on_bad: fail`` and a file that cannot be scored (an ``InferenceError`` for a bad file), or
            no file left to score.
    """
    if on_bad not in ON_BAD:
        raise ValueError(f"ensemble.on_bad must be one of {', '.join(ON_BAD)}, got {on_bad!r}")
    left_out = dict(split.left_out)
    for path, (_, detail) in split.left_out.items():
        log.warning("%s: left out of the %s scores: %s", path, split.split, detail)
    labelled = {rid.rpartition("_")[0] for rid in split.labels["row_id"]}
    files = []
    for f in split.files:
        if f.stem in labelled:
            files.append(f)
        else:
            _leave_out(left_out, split.split, f, "unlabelled", "no label row names it", on_bad)
    if not files:
        raise ValueError(f"no {split.split} soundscape can be scored: {_summary(left_out)}")
    mode = "raise" if on_bad == "fail" else "skip"
    preds = runner.predict_folder(files, on_error=mode, on_truncated="raise", **predict_folder)  # type: ignore[arg-type]
    known = set(split.labels["row_id"])
    keep = []
    for f, stem, n in zip(files, preds.stems, preds.n_windows, strict=True):
        if stem in preds.failed:
            _leave_out(left_out, split.split, f, "failed", preds.failed[stem], on_bad)
            continue
        lacking = [rid for rid in row_ids(stem, n) if rid not in known]
        if lacking:
            detail = f"the labels lack {len(lacking)} of its {n} predicted windows, e.g. {lacking[:3]}"
            _leave_out(left_out, split.split, f, "unlabelled", detail, on_bad)
            continue
        keep.append(stem)
    if not keep:
        raise ValueError(f"no {split.split} soundscape can be scored: {_summary(left_out)}")
    kept = replace(split, files=[f for f in files if f.stem in set(keep)], left_out=left_out)
    return kept, only_files(preds, keep)


def only_files(preds: runner.FolderPredictions, stems: list[str]) -> runner.FolderPredictions:
    """``preds`` restricted to the files ``stems`` (in their order there); timing and teacher are kept."""
    starts = np.cumsum([0, *preds.n_windows])
    at = {s: i for i, s in enumerate(preds.stems)}
    rows = np.concatenate([np.arange(starts[at[s]], starts[at[s] + 1]) for s in stems]).astype(np.int64)
    return replace(
        preds,
        stems=list(stems),
        n_windows=[preds.n_windows[at[s]] for s in stems],
        members=[m[rows] for m in preds.members],
        failed={s: why for s, why in preds.failed.items() if s in set(stems)},
    )


def left_out_metrics(split: Labelled, prefix: str) -> Mapping[str, int]:
    """``{<prefix>_<why>: count}`` for the split's left-out files (``prefix``: ``n_soundscapes``, ...)."""
    return {f"{prefix}_{why}": n for why, n in split.counts().items()}


def _leave_out(left_out: dict, split: str, path: Path, why: str, detail: str, on_bad: str) -> None:
    if on_bad == "fail":
        raise ValueError(f"{path}: {detail} (set ensemble.on_bad: skip to score the {split} split without it)")
    left_out[str(path)] = (why, detail)
    log.warning("%s: left out of the %s scores (%s): %s", path, split, why, detail)


def _summary(left_out: Mapping[str, tuple[str, str]]) -> str:
    items = list(left_out.items())
    return "; ".join(f"{p}: {d}" for p, (_, d) in items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
