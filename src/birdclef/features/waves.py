"""The features stage's library: decode every kept segment and soundscape once into the waveform cache."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdclef import SAMPLE_RATE, schema
from birdclef.audio.decode import AudioError, AudioInfo, audio_info, load_audio
from birdclef.audio.parallel import ordered_map
from birdclef.features.cache import KINDS, CacheItem, WaveCacheWriter, encode


@dataclass(frozen=True)
class FeaturesConfig:
    """The ``features:`` params section.

    Attributes:
        workers: decoding processes (1 = in this process).
        on_bad: ``skip`` leaves an undecodable file out of the cache and reports it; ``fail`` raises.
        rms_hop: samples per RMS frame of the energy index (3200 = 0.1 s).
        full_scale: float amplitude stored as int16 32767 (headroom for resampler overshoot above 1.0).
        soundscape_splits: soundscape splits to cache (``train``, ``test``, ``val``; absent folders are skipped).
    """

    workers: int = 2
    on_bad: str = "skip"
    rms_hop: int = 3200
    full_scale: float = 2.0
    soundscape_splits: tuple[str, ...] = ("train", "test", "val")

    @classmethod
    def from_params(cls, section: dict[str, Any]) -> FeaturesConfig:
        """Build from the ``features:`` params dict; unknown keys raise."""
        known = {f.name for f in fields(cls)}
        unknown = set(section) - known
        if unknown:
            raise ValueError(f"params features: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
        kw = dict(section)
        if "soundscape_splits" in kw:
            kw["soundscape_splits"] = tuple(kw["soundscape_splits"] or ())
        cfg = cls(**kw)
        if cfg.on_bad not in ("skip", "fail"):
            raise ValueError(f"params features.on_bad must be skip or fail, not {cfg.on_bad!r}")
        if cfg.rms_hop < 1:
            raise ValueError("params features.rms_hop must be >= 1 sample")
        return cfg


@dataclass(frozen=True)
class _Job:
    key: str
    kind: str
    path: str
    start_s: float
    end_s: float | None


_ROOT: dict[str, Any] = {}


def _init(root: str, scale: float = 1.0, rms_hop: int = 1) -> None:
    _ROOT.update(root=Path(root), scale=scale, rms_hop=rms_hop)


def _info(path: str) -> AudioInfo | AudioError:
    try:
        return audio_info(_ROOT["root"] / path)
    except AudioError as err:
        return err


def _decode(job: _Job) -> tuple[np.ndarray, np.ndarray, int] | AudioError:
    # Workers also quantise and measure RMS: half the bytes cross the pipe and the writer only writes.
    try:
        wave = load_audio(_ROOT["root"] / job.path, job.start_s, job.end_s)
    except AudioError as err:
        return err
    return encode(wave, _ROOT["scale"], _ROOT["rms_hop"])


def _jobs(segments: pd.DataFrame, soundscapes: pd.DataFrame | None, splits: tuple[str, ...]) -> list[_Job]:
    schema.require_columns(segments, ("segment_id", "path", "start_s", "end_s"), "segments table")
    jobs = [_Job(k, "segment", p, float(s), float(e))
            for k, p, s, e in zip(segments.segment_id, segments.path, segments.start_s, segments.end_s, strict=True)]
    if soundscapes is not None and len(splits):
        schema.require_columns(soundscapes, ("soundscape_id", "path", "split"), "soundscapes table")
        sc = soundscapes[soundscapes.split.isin(splits)].sort_values(["split", "soundscape_id"], kind="stable")
        jobs += [_Job(k, f"{sp}_soundscape", p, 0.0, None)
                 for k, p, sp in zip(sc.soundscape_id, sc.path, sc.split, strict=True)]
    bad = {j.kind for j in jobs} - set(KINDS)
    if bad:
        raise ValueError(f"soundscapes table: split(s) {sorted(bad)} do not map to a cache kind {KINDS}")
    return jobs


def _length(job: _Job, info: AudioInfo) -> int:
    # The same arithmetic as load_audio's output length, so sizes are known before decoding anything.
    total = info.samples_at(SAMPLE_RATE)
    lo = min(round(job.start_s * SAMPLE_RATE), total)
    hi = total if job.end_s is None else min(round(job.end_s * SAMPLE_RATE), total)
    return max(hi - lo, 0)


def build_wave_cache(
    segments: pd.DataFrame,
    soundscapes: pd.DataFrame | None,
    data_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    cfg: FeaturesConfig,
) -> dict[str, Any]:
    """Decode every segment and soundscape to 32 kHz mono and write the cache folder ``out_dir``.

    Order: segments as in ``segments``, then soundscapes by split and id. Two passes over the files: headers
    first (sizes), then decoding streamed into the pre-allocated arrays, so memory stays flat.

    Args:
        segments: the clean stage's table (:data:`schema.SEGMENTS`); key = segment_id.
        soundscapes: the acquire manifest (:data:`schema.SOUNDSCAPES`) or None; key = soundscape_id.
        data_root: folder the ``path`` columns are relative to.
        out_dir: cache folder to create (waves.npy, rms.npy, index.parquet, meta.json, and failed.csv: key,
            path relative to ``data_root``, reason of each item left out).
        cfg: the features params.

    Returns:
        Flat metrics: keys and hours per kind, failures, clipped samples, cache size in MB.

    Raises:
        AudioError: on an unreadable file when ``cfg.on_bad == "fail"``.
    """
    jobs = _jobs(segments, soundscapes, cfg.soundscape_splits)
    root = str(data_root)
    paths = sorted({j.path for j in jobs})
    infos = dict(zip(paths, ordered_map(_info, paths, cfg.workers, _init, (root,), desc="probe"), strict=True))
    failed: dict[str, tuple[str, str]] = {}  # key -> (path, reason)
    items, todo = [], []
    for job in jobs:
        info = infos[job.path]
        if isinstance(info, AudioError):
            if cfg.on_bad == "fail":
                raise info
            failed[job.key] = (job.path, info.reason)
            continue
        n = _length(job, info)
        if n == 0:
            failed[job.key] = (job.path, "empty")
            continue
        items.append(CacheItem(job.key, job.kind, n))
        todo.append(job)
    writer = WaveCacheWriter(out_dir, items, cfg.rms_hop, cfg.full_scale)
    decoded = ordered_map(_decode, todo, cfg.workers, _init, (root, writer.scale, writer.rms_hop), desc="features",
                          unit="item")
    for job, enc in zip(todo, decoded, strict=True):
        if isinstance(enc, AudioError):
            if cfg.on_bad == "fail":
                raise enc
            failed[job.key] = (job.path, enc.reason)
            continue
        writer.write_encoded(job.key, *enc)
    index = writer.close()
    report = pd.DataFrame([(k, *v) for k, v in sorted(failed.items())], columns=["key", "path", "reason"])
    report.to_csv(Path(out_dir) / "failed.csv", index=False)
    m: dict[str, Any] = {}
    for kind in KINDS:
        sub = index[index.kind == kind]
        m[f"keys_{kind}"] = len(sub)
        m[f"hours_{kind}"] = round(float(sub.length.sum()) / SAMPLE_RATE / 3600, 4)
    m["failed"] = len(failed)
    reasons = [reason for _, reason in failed.values()]
    for reason in sorted(set(reasons)):
        m[f"failed_{reason}"] = reasons.count(reason)
    m["clipped_samples"] = writer.clipped
    m["cache_mb"] = round((Path(out_dir) / "waves.npy").stat().st_size / 2**20, 2)
    return m
