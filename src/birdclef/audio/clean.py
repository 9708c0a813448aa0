"""The clean stage's library: recordings manifest -> voice-free, trimmed, deduplicated segment table + report."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdclef import SAMPLE_RATE, schema
from birdclef.audio import rules
from birdclef.audio.decode import MIN_SAMPLE_RATE, REASONS, AudioError, load_audio
from birdclef.audio.parallel import ordered_map
from birdclef.audio.vad import VadConfig, VoiceDetector

FILE_REASONS = (*REASONS, "manual", "duplicate", "silent", "nothing_left")
"""Why a whole recording is quarantined (decode failures first, then cleaning decisions)."""
SEGMENT_REASONS = ("manual_span", "silent_segment", "short_segment")
"""Why one piece of a kept recording is dropped."""
QUARANTINE_COLUMNS = ("recording_id", "path", "reason", "detail", "start_s", "end_s")


@dataclass(frozen=True)
class CleanConfig:
    """The ``clean:`` params section. Durations in seconds, levels in dBFS.

    Attributes:
        workers: processes decoding files in parallel (1 = in this process).
        on_bad: ``skip`` quarantines undecodable files and goes on; ``fail`` raises on the first.
        min_sample_rate: files stored below this rate (Hz) are bad audio.
        voice: run Silero VAD and cut voiced spans (TECHNIQUES.md D2).
        voice_remove_fraction: share of voiced files that are cut, picked deterministically by seed
            (1.0 = all; rank 9 used 0.5). Voice stays in the others.
        vad: thresholds of :class:`VadConfig`.
        trim_voice_cleaned_s: keep the first N seconds of a voice-cleaned file (0/None = all; rank 5: 60).
        trim_other_s: keep the first N seconds of every other file (rank 5: 30).
        silence_dbfs: files and segments whose RMS level is below this are dropped as (near) silent.
        min_segment_s: pieces shorter than this (after cutting) are dropped.
        dedupe: drop files whose decoded samples equal an earlier file's (first by recording_id wins).
        rare_min_files: classes with fewer kept files than this are rare (TECHNIQUES.md S2, rank 5: 20).
        rare_copies: copies per epoch of each rare-class segment (1 = switched off).
        exclude_csv: manual exclusion list (see :func:`rules.load_exclusions`), or None.
        seed: seed of the voice_remove_fraction draw.
    """

    workers: int = 2
    on_bad: str = "skip"
    min_sample_rate: int = MIN_SAMPLE_RATE
    voice: bool = True
    voice_remove_fraction: float = 1.0
    vad: VadConfig = field(default_factory=VadConfig)
    trim_voice_cleaned_s: float | None = 60.0
    trim_other_s: float | None = 30.0
    silence_dbfs: float = -60.0
    min_segment_s: float = 1.0
    dedupe: bool = True
    rare_min_files: int = 20
    rare_copies: int = 2
    exclude_csv: str | None = None
    seed: int = 0

    @classmethod
    def from_params(cls, section: dict[str, Any]) -> CleanConfig:
        """Build from the ``clean:`` params dict; unknown keys raise (a typo must not pass silently)."""
        known = {f.name for f in fields(cls)}
        unknown = set(section) - known
        if unknown:
            raise ValueError(f"params clean: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
        kw = dict(section)
        kw["vad"] = VadConfig.from_dict(kw.get("vad") or {})
        if kw.get("on_bad", "skip") not in ("skip", "fail"):
            raise ValueError(f"params clean.on_bad must be skip or fail, not {kw['on_bad']!r}")
        if not 0.0 <= float(kw.get("voice_remove_fraction", 1.0)) <= 1.0:
            raise ValueError("params clean.voice_remove_fraction must be in [0, 1]")
        return cls(**kw)


@dataclass
class CleanResult:
    """Outputs of :func:`run_clean`: the three tables and the flat metrics dict."""

    segments: pd.DataFrame
    voice_spans: pd.DataFrame
    quarantine: pd.DataFrame
    metrics: dict[str, Any]


@dataclass
class _FileResult:
    duration_s: float = 0.0
    error: tuple[str, str] | None = None
    digest: str = ""
    silent: bool = False
    voice: list[tuple[float, float]] = field(default_factory=list)
    cleaned: bool = False
    pieces: list[tuple[float, float]] = field(default_factory=list)
    dropped: list[tuple[float, float, str, str]] = field(default_factory=list)


_WORKER: dict[str, Any] = {}


def _init_worker(cfg: CleanConfig, data_root: str) -> None:
    _WORKER.update(cfg=cfg, root=Path(data_root), vad=VoiceDetector(cfg.vad))


def _process(task: tuple[str, str, list[tuple[float, float]]]) -> _FileResult:
    """Decode one recording and decide which pieces of it survive (runs in a worker)."""
    rid, path, manual_cuts = task
    cfg: CleanConfig = _WORKER["cfg"]
    try:
        wave = load_audio(_WORKER["root"] / path, min_sample_rate=cfg.min_sample_rate)
    except AudioError as err:
        return _FileResult(error=(err.reason, err.detail))
    res = _FileResult(duration_s=wave.shape[0] / SAMPLE_RATE)
    res.digest = rules.content_hash(wave) if cfg.dedupe else ""
    if rules.rms_dbfs(wave) < cfg.silence_dbfs:
        res.silent = True
        return res
    if cfg.voice:
        res.voice = _WORKER["vad"].detect(wave, SAMPLE_RATE)
    res.cleaned = bool(res.voice) and rules.unit_hash(rid, cfg.seed) < cfg.voice_remove_fraction
    cuts = list(manual_cuts) + (res.voice if res.cleaned else [])
    # Short and silent pieces go first, so the trim keeps the first N seconds of usable audio.
    usable = []
    for s, e in rules.subtract_spans(0.0, res.duration_s, cuts):
        s, e = round(s, 3), round(e, 3)
        level = rules.rms_dbfs(wave[round(s * SAMPLE_RATE) : round(e * SAMPLE_RATE)])
        if e - s < cfg.min_segment_s:
            res.dropped.append((s, e, "short_segment", f"{e - s:.3f} s < {cfg.min_segment_s} s"))
        elif level < cfg.silence_dbfs:
            res.dropped.append((s, e, "silent_segment", f"{level:.1f} dBFS < {cfg.silence_dbfs} dBFS"))
        else:
            usable.append((s, e))
    trim = cfg.trim_voice_cleaned_s if res.cleaned else cfg.trim_other_s
    for s, e in rules.trim_pieces(usable, trim):
        e = round(e, 3)
        if e - s < cfg.min_segment_s:  # the trim can leave a sliver at the end
            res.dropped.append((s, e, "short_segment", f"{e - s:.3f} s < {cfg.min_segment_s} s after trim"))
        else:
            res.pieces.append((s, e))
    return res


def _manual_rules(
    recordings: pd.DataFrame, exclusions: pd.DataFrame | None
) -> tuple[dict[str, str], dict[str, list[tuple[float, float]]]]:
    whole: dict[str, str] = {}
    spans: dict[str, list[tuple[float, float]]] = {}
    if exclusions is None or exclusions.empty:
        return whole, spans
    alias = {**dict(zip(recordings.path, recordings.recording_id, strict=True)),
             **{r: r for r in recordings.recording_id}}
    for row in exclusions.itertuples():
        rid = alias.get(str(row.filename))
        if rid is None:
            continue
        if pd.isna(row.start_s):
            whole[rid] = row.reason
        else:
            spans.setdefault(rid, []).append((float(row.start_s), float(row.end_s)))
    return whole, spans


def run_clean(
    recordings: pd.DataFrame,
    data_root: str | os.PathLike[str],
    cfg: CleanConfig,
    exclusions: pd.DataFrame | None = None,
    voice_truth: pd.DataFrame | None = None,
) -> CleanResult:
    """Clean every recording of the manifest.

    Args:
        recordings: manifest rows (columns :data:`schema.RECORDINGS`); ``path`` is relative to ``data_root``.
        data_root: folder the paths are relative to.
        cfg: the cleaning rules.
        exclusions: manual exclusion list from :func:`rules.load_exclusions`, or None.
        voice_truth: planted voice (columns file, start_s, end_s; ``file`` is a recording id or path); when
            given, metrics gain ``voice_precision`` and ``voice_recall`` (time overlap, pooled).

    Returns:
        Segments (:data:`schema.SEGMENTS`, sorted by recording then time), detected voice spans
        (:data:`schema.VOICE_SPANS`), quarantine table (:data:`QUARANTINE_COLUMNS`) and metrics.

    Raises:
        AudioError: on bad audio when ``cfg.on_bad == "fail"``.
    """
    schema.require_columns(recordings, schema.RECORDINGS, "recordings manifest")
    recs = recordings.sort_values("recording_id", kind="stable").reset_index(drop=True)
    if recs.recording_id.duplicated().any():
        dup = recs.recording_id[recs.recording_id.duplicated()].iloc[0]
        raise ValueError(f"recordings manifest: recording_id {dup!r} appears more than once")
    whole, manual_spans = _manual_rules(recs, exclusions)
    todo = recs[~recs.recording_id.isin(whole)]
    tasks = [(r, p, manual_spans.get(r, [])) for r, p in zip(todo.recording_id, todo.path, strict=True)]
    done = ordered_map(_process, tasks, cfg.workers, _init_worker, (cfg, str(data_root)), desc="clean")
    results = dict(zip(todo.recording_id, done, strict=True))

    quarantine: list[tuple[Any, ...]] = []
    kept: dict[str, _FileResult] = {}
    first_of: dict[str, str] = {}
    for rid, path in zip(recs.recording_id, recs.path, strict=True):
        res = results.get(rid)
        if res is None:
            quarantine.append((rid, path, "manual", whole[rid], np.nan, np.nan))
            continue
        if res.error is not None:
            if cfg.on_bad == "fail":
                raise AudioError(path, *res.error)
            quarantine.append((rid, path, res.error[0], res.error[1], np.nan, np.nan))
            continue
        if res.digest and res.digest in first_of:
            quarantine.append((rid, path, "duplicate", f"same audio as {first_of[res.digest]}", np.nan, np.nan))
            continue
        if res.digest:
            first_of[res.digest] = rid
        for s, e in manual_spans.get(rid, []):
            quarantine.append((rid, path, "manual_span", "manual exclusion span", s, e))
        quarantine.extend((rid, path, reason, detail, s, e) for s, e, reason, detail in res.dropped)
        if res.silent:
            quarantine.append((rid, path, "silent", f"file below {cfg.silence_dbfs} dBFS", np.nan, np.nan))
        elif not res.pieces:
            quarantine.append((rid, path, "nothing_left", "no segment survived cleaning", np.nan, np.nan))
        else:
            kept[rid] = res

    segments = _segment_table(recs, kept, cfg)
    voice = [(rid, s, e) for rid, r in results.items() if r.error is None for s, e in r.voice]
    voice_spans = pd.DataFrame(voice, columns=list(schema.VOICE_SPANS)).astype({"start_s": float, "end_s": float})
    qdf = pd.DataFrame(quarantine, columns=list(QUARANTINE_COLUMNS)).astype({"start_s": float, "end_s": float})
    metrics = _metrics(recs, results, segments, qdf, cfg, voice_truth)
    return CleanResult(segments, voice_spans, qdf, metrics)


def _segment_table(recs: pd.DataFrame, kept: dict[str, _FileResult], cfg: CleanConfig) -> pd.DataFrame:
    by_id = recs.set_index("recording_id", drop=False)
    rows = [(rid, s, e) for rid, res in kept.items() for s, e in res.pieces]
    seg = pd.DataFrame(rows, columns=["recording_id", "start_s", "end_s"])
    meta = by_id.loc[seg.recording_id, ["path", "primary_label", "secondary_labels", "class_name", "rating", "fold"]]
    seg = pd.concat([seg, meta.reset_index(drop=True)], axis=1)
    seg["segment_id"] = [f"{r}@{s:.3f}-{e:.3f}" for r, s, e in zip(seg.recording_id, seg.start_s, seg.end_s,
                                                                   strict=True)]
    seg["weight"] = 1.0
    files = by_id.loc[list(kept), "primary_label"]
    per_file = (
        rules.rare_class_copies(files, cfg.rare_min_files, cfg.rare_copies)
        if cfg.rare_copies > 1 else pd.Series(1, index=files.index, dtype="int64")
    )
    seg["copies"] = per_file.loc[seg.recording_id].to_numpy(dtype="int64") if len(seg) else []
    # Fixed dtypes even for an empty table, so downstream readers never see object columns.
    seg = seg.astype({"segment_id": "str", "start_s": "float64", "end_s": "float64", "weight": "float64",
                      "copies": "int64"})
    return seg[list(schema.SEGMENTS)].reset_index(drop=True)


def _metrics(
    recs: pd.DataFrame,
    results: dict[str, _FileResult],
    segments: pd.DataFrame,
    quarantine: pd.DataFrame,
    cfg: CleanConfig,
    voice_truth: pd.DataFrame | None,
) -> dict[str, Any]:
    whole = quarantine[quarantine.start_s.isna()].reason.value_counts()
    parts = quarantine[quarantine.start_s.notna()]
    ok = {rid: r for rid, r in results.items() if r.error is None}
    m: dict[str, Any] = {
        "files_in": len(recs),
        "files_kept": int(segments.recording_id.nunique()),
        "segments_kept": len(segments),
        "hours_in": round(sum(r.duration_s for r in ok.values()) / 3600, 4),
        "hours_kept": round(float((segments.end_s - segments.start_s).sum()) / 3600, 4),
        "voice_files_detected": sum(bool(r.voice) for r in ok.values()),
        "voice_files_cleaned": sum(r.cleaned for r in ok.values()),
        "voice_hours_detected": round(sum(e - s for r in ok.values() for s, e in r.voice) / 3600, 4),
        "rare_files": int(segments.loc[segments.copies > 1, "recording_id"].nunique()),
    }
    m.update({f"removed_{r}": int(whole.get(r, 0)) for r in FILE_REASONS})
    for reason in SEGMENT_REASONS:
        sub = parts[parts.reason == reason]
        m[f"removed_{reason}"] = len(sub)
        m[f"hours_removed_{reason}"] = round(float((sub.end_s - sub.start_s).sum()) / 3600, 4)
    dur = (segments.end_s - segments.start_s).groupby(segments.class_name).sum()
    for cls in sorted(recs.class_name.dropna().unique()):
        m[f"hours_kept_{cls}"] = round(float(dur.get(cls, 0.0)) / 3600, 4)
    if voice_truth is not None and cfg.voice:
        alias = {**dict(zip(recs.path, recs.recording_id, strict=True)), **{r: r for r in recs.recording_id}}
        truth: dict[str, list[tuple[float, float]]] = {}
        for f, s, e in zip(voice_truth.file, voice_truth.start_s, voice_truth.end_s, strict=True):
            rid = alias.get(str(f))
            if rid in ok:
                truth.setdefault(rid, []).append((float(s), float(e)))
        precision, recall = rules.span_precision_recall({rid: r.voice for rid, r in ok.items()}, truth)
        # NaN (nothing detected / nothing planted) is not valid JSON: report null instead.
        m["voice_precision"] = None if np.isnan(precision) else round(precision, 4)
        m["voice_recall"] = None if np.isnan(recall) else round(recall, 4)
        m["voice_truth_files"] = len(truth)
    return m
