"""What the HTML report shows, gathered per revision from the small files the stages write (metrics/, plots)."""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from birdclef.track.history import Revision, natural_key

HISTORY_GLOBS = ("metrics/train/*history*.csv", "metrics/train/history/*.csv", "build/train/it*/*/history.csv")
PER_CLASS_GLOBS = ("metrics/*per_class*.csv", "metrics/infer/*per_class*.csv")
LABEL_COLUMNS = ("primary_label", "species", "class", "label")
TAXON_COLUMNS = ("class_name", "taxon")


@dataclass
class RevisionData:
    """The numbers of one revision; an absent piece is None or empty, never an error.

    Attributes:
        rev: the revision.
        train: ``{iteration: {member: {metric: value}}}`` from metrics/train/it<k>.json.
        histories: ``{series label: per-epoch DataFrame}`` (epoch, train_loss, val_auc, soundscape_auc, ...).
        pseudo: ``{round: {stat: value}}`` from metrics/pseudo/it<k>.json.
        ensemble: metrics/ensemble.json (score, per-taxon scores, ``weight_<member>``, ``member_<m>_score``).
        infer: metrics/infer.json (score, ``score_<taxon>``) and metrics/timing/infer.json (speed, projected
            Kaggle minutes, RSS); ensemble, export and train likewise take their timing files in.
        export: metrics/export.json.
        per_class: DataFrame (label, taxon, auc) or None.
        problems: files that exist but could not be read, with the reason.
    """

    rev: Revision
    train: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)
    histories: dict[str, pd.DataFrame] = field(default_factory=dict)
    pseudo: dict[int, dict[str, float]] = field(default_factory=dict)
    ensemble: dict[str, Any] = field(default_factory=dict)
    infer: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    per_class: pd.DataFrame | None = None
    problems: list[str] = field(default_factory=list)

    def flat(self) -> dict[str, float]:
        """Every numeric metric as ``file-ish key -> value`` (for the all-metrics table)."""
        out: dict[str, float] = {}
        for k, members in self.train.items():
            for member, metrics in members.items():
                out.update({f"train/it{k} · {member} · {n}": v for n, v in metrics.items()})
        for k, stats in self.pseudo.items():
            out.update({f"pseudo/it{k} · {n}": v for n, v in stats.items()})
        for name, doc in (("ensemble", self.ensemble), ("infer", self.infer), ("export", self.export)):
            out.update({f"{name} · {n}": v for n, v in doc.items()})
        return {k: float(v) for k, v in out.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _iteration(path: str) -> int | None:
    found = re.search(r"it(\d+)", Path(path).stem)
    return int(found.group(1)) if found else None


def _numeric(doc: Mapping[str, Any]) -> dict[str, float]:
    return {k: v for k, v in doc.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _json(rev: Revision, path: str, data: RevisionData) -> Any | None:
    doc = rev.read_json(path)
    if doc is None and rev.read_text(path) is not None:
        data.problems.append(f"{path}: not valid JSON")
    return doc


def _csv(rev: Revision, path: str, data: RevisionData) -> pd.DataFrame | None:
    text = rev.read_text(path)
    if text is None:
        return None
    try:
        return pd.read_csv(io.StringIO(text))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        data.problems.append(f"{path}: {err}")
        return None


def collect(
    rev: Revision,
    history_globs: Sequence[str] = HISTORY_GLOBS,
    per_class_globs: Sequence[str] = PER_CLASS_GLOBS,
    taxonomy: Mapping[str, str] | None = None,
) -> RevisionData:
    """Gather a revision's metrics; unreadable files are listed in ``problems`` instead of raising."""
    data = RevisionData(rev)
    for path in rev.glob("metrics/train/it*.json"):
        k, doc = _iteration(path), _json(rev, path, data)
        if k is None or not isinstance(doc, Mapping):
            continue
        timings = _json(rev, f"metrics/timing/train_it{k}.json", data) if k is not None else None
        if isinstance(timings, Mapping):  # train seconds and samples/s per member
            doc = {m: {**v, **timings.get(m, {})} if isinstance(v, Mapping) else v for m, v in doc.items()}
        members = {m: _numeric(v) for m, v in doc.items() if isinstance(v, Mapping)}
        flat = _numeric(doc)
        data.train[k] = members or ({"model": flat} if flat else {})
    for pattern in history_globs:
        for path in rev.glob(pattern):
            df = _csv(rev, path, data)
            if df is None or "epoch" not in df.columns:
                continue
            if "member" in df.columns:
                for member, part in df.groupby("member", sort=False):
                    data.histories.setdefault(str(member), part.reset_index(drop=True))
            else:
                p = Path(path)
                name = f"{p.parent.parent.name}_{p.parent.name}" if p.stem == "history" else p.stem
                data.histories.setdefault(name, df)
    for path in rev.glob("metrics/pseudo/it*.json"):
        doc = _json(rev, path, data)
        if isinstance(doc, Mapping) and _iteration(path) is not None:
            data.pseudo[_iteration(path)] = _numeric(doc)
    for name in ("ensemble", "infer", "export"):
        doc = _json(rev, f"metrics/{name}.json", data)
        if isinstance(doc, Mapping):  # speed, RSS, projected minutes: the stage's timing file (older revisions: here)
            timings = _json(rev, f"metrics/timing/{name}.json", data)
            setattr(data, name, {**doc, **(timings if isinstance(timings, Mapping) else {})})
    for pattern in per_class_globs:
        for path in rev.glob(pattern):
            df = _csv(rev, path, data)
            table = _per_class_table(df, taxonomy) if df is not None else None
            if table is not None:
                data.per_class = table
                break
        if data.per_class is not None:
            break
    data.train = dict(sorted(data.train.items()))
    data.pseudo = dict(sorted(data.pseudo.items()))
    data.histories = dict(sorted(data.histories.items(), key=lambda kv: natural_key(kv[0])))
    return data


def _per_class_table(df: pd.DataFrame, taxonomy: Mapping[str, str] | None) -> pd.DataFrame | None:
    label = next((c for c in LABEL_COLUMNS if c in df.columns), None)
    if label is None or "auc" not in df.columns:
        return None
    taxon = next((c for c in TAXON_COLUMNS if c in df.columns), None)
    out = pd.DataFrame({"label": df[label].astype(str), "auc": pd.to_numeric(df["auc"], errors="coerce")})
    if taxon is not None:
        out["taxon"] = df[taxon].astype(str)
    else:
        out["taxon"] = out["label"].map(dict(taxonomy or {})).fillna("")
    return out[["label", "taxon", "auc"]]


def taxon_scores(data: RevisionData) -> tuple[str, dict[str, float]]:
    """Per-taxon AUC of a revision, from the most downstream source that has it.

    Returns:
        ``(source, {taxon: auc})``: infer (``score_<taxon>``), else ensemble, else the last train iteration's
        soundscape AUC (``soundscape_auc_<Class>``, mean over members); ("", {}) when none exists.
    """
    for source, doc in (("infer", data.infer), ("ensemble", data.ensemble)):
        found = {k[len("score_"):]: float(v) for k, v in _numeric(doc).items()
                 if k.startswith("score_") and not k.startswith(("score_hand",))}  # fmt: skip
        if found:
            return source, {k.capitalize(): v for k, v in found.items()}
    if data.train:
        k = max(data.train)
        sums: dict[str, list[float]] = {}
        for metrics in data.train[k].values():
            for key, v in metrics.items():
                if key.startswith("soundscape_auc_"):
                    sums.setdefault(key[len("soundscape_auc_") :].capitalize(), []).append(v)
        if sums:
            return f"train it{k}", {t: sum(v) / len(v) for t, v in sums.items()}
    return "", {}


def read_taxonomy(path: Path | None) -> dict[str, str]:
    """``primary_label -> class_name`` from a taxonomy.csv on disk ({} when absent or malformed)."""
    if path is None or not path.is_file():
        return {}
    try:
        df = pd.read_csv(path, usecols=["primary_label", "class_name"], dtype=str)
    except (ValueError, pd.errors.ParserError):
        return {}
    return dict(zip(df["primary_label"], df["class_name"], strict=True))
