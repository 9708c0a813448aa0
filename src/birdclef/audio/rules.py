"""Pure cleaning rules on spans and waveforms: cut, trim, loudness, content hash, sampling, rare classes."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

Span = tuple[float, float]


def merge_spans(spans: Iterable[Span]) -> list[Span]:
    """Sort spans (seconds) and merge the ones that overlap or touch; empty spans are dropped."""
    out: list[list[float]] = []
    for s, e in sorted((float(s), float(e)) for s, e in spans if e > s):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def subtract_spans(start: float, end: float, cuts: Iterable[Span]) -> list[Span]:
    """The pieces of [start, end) left after removing every span in ``cuts`` (seconds), in time order."""
    pieces: list[Span] = []
    cursor = start
    for s, e in merge_spans(cuts):
        if e <= cursor or s >= end:
            continue
        if s > cursor:
            pieces.append((cursor, s))
        cursor = max(cursor, e)
    if cursor < end:
        pieces.append((cursor, end))
    return pieces


def trim_pieces(pieces: Sequence[Span], max_s: float | None) -> list[Span]:
    """Keep the first ``max_s`` seconds of audio summed over ``pieces`` (in order); ``None``/0 keeps all."""
    if not max_s:
        return list(pieces)
    out: list[Span] = []
    left = float(max_s)
    for s, e in pieces:
        if left <= 0:
            break
        take = min(e - s, left)
        out.append((s, s + take))
        left -= take
    return out


def rms_dbfs(wave: np.ndarray) -> float:
    """RMS level of a float waveform in dB relative to full scale (1.0); -inf for digital silence."""
    if wave.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def content_hash(wave: np.ndarray) -> str:
    """Hash of the decoded samples (not the file bytes), so re-encoded or renamed copies of the same audio match."""
    return hashlib.blake2b(np.ascontiguousarray(wave, dtype=np.float32).tobytes(), digest_size=16).hexdigest()


def unit_hash(key: str, seed: int) -> float:
    """A deterministic pseudo-random number in [0, 1) for ``key`` and ``seed`` (same on every machine and run).

    Used to pick a fraction of files without depending on the order or number of the others.
    """
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def rare_class_copies(labels: pd.Series, min_files: int, copies: int) -> pd.Series:
    """Copies per file: ``copies`` for files whose label has fewer than ``min_files`` files, else 1.

    Args:
        labels: primary label of each kept file (one row per file).
        min_files: classes with fewer files than this are rare.
        copies: copies of each rare-class file the sampler sees per epoch (>= 1).
    """
    if copies < 1:
        raise ValueError(f"rare-class copies must be >= 1, got {copies}")
    counts = labels.map(labels.value_counts())
    return pd.Series(np.where(counts < min_files, copies, 1), index=labels.index, dtype="int64")


def load_exclusions(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a manual exclusion list.

    The CSV has a ``filename`` column (recording id such as ``amerob/XC123.ogg``, or its path relative to the
    data root) and optional ``start_s``/``end_s``: blank bounds exclude the whole file, a span cuts only that
    part. An optional ``reason`` column is carried into the quarantine table.

    Returns:
        DataFrame with columns filename, start_s, end_s (NaN for whole files), reason.

    Raises:
        ValueError: naming the file and row for a missing column, a half-given span or end <= start.
    """
    df = pd.read_csv(path, dtype={"filename": str})
    if "filename" not in df.columns:
        raise ValueError(f"{path}: exclusion list needs a 'filename' column; has {list(df.columns)}")
    for col in ("start_s", "end_s"):
        df[col] = pd.to_numeric(df[col], errors="raise") if col in df.columns else np.nan
    if "reason" not in df.columns:
        df["reason"] = "manual"
    df["reason"] = df["reason"].fillna("manual").astype(str)
    for i, row in df.iterrows():
        has_s, has_e = pd.notna(row.start_s), pd.notna(row.end_s)
        if has_s != has_e:
            raise ValueError(f"{path}: row {i + 2} ({row.filename}): give both start_s and end_s, or neither")
        if has_s and row.end_s <= row.start_s:
            raise ValueError(f"{path}: row {i + 2} ({row.filename}): end_s {row.end_s} <= start_s {row.start_s}")
    return df[["filename", "start_s", "end_s", "reason"]].reset_index(drop=True)


def overlap_s(a: Sequence[Span], b: Sequence[Span]) -> float:
    """Total seconds covered by both span lists (each merged first)."""
    a, b = merge_spans(a), merge_spans(b)
    total, j = 0.0, 0
    for s, e in a:
        while j < len(b) and b[j][1] <= s:
            j += 1
        k = j
        while k < len(b) and b[k][0] < e:
            total += max(0.0, min(e, b[k][1]) - max(s, b[k][0]))
            k += 1
    return total


def span_precision_recall(
    detected: Mapping[str, Sequence[Span]], truth: Mapping[str, Sequence[Span]]
) -> tuple[float, float]:
    """Time-overlap precision and recall of detected spans against true spans, pooled over files.

    Precision = overlapping seconds / detected seconds; recall = overlapping seconds / true seconds. A file
    missing from one side counts as having no spans there. Returns NaN where the denominator is zero.
    """
    hit = det = tru = 0.0
    for key in set(detected) | set(truth):
        d, t = merge_spans(detected.get(key, ())), merge_spans(truth.get(key, ()))
        det += sum(e - s for s, e in d)
        tru += sum(e - s for s, e in t)
        hit += overlap_s(d, t)
    return (hit / det if det else float("nan"), hit / tru if tru else float("nan"))
