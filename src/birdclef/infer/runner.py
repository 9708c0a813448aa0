"""Streaming inference over a folder of soundscapes: decode once per file, run every member, combine, post-process.

Files are spread over worker processes (``multiprocessing.Pool.imap``, so results come back in file order
whatever the scheduling); each worker builds its predictors once, with ``threads`` intra-op threads, so
``workers * threads`` never exceeds the cores given. The parent only collects the small per-file window scores.
What the members are and how their predictors are built (the spec, a member's chunking, the torch and export
factories) is ``members``; torchrun ranks are ``sharded``.

Each file is decoded only as far as it is kept (``file_seconds``): a 3-hour file costs what a 1-minute one does.

Speed figures (``FolderPredictions.speed``): ``seconds_per_soundscape_minute`` = processing wall time (first file
started -> last result, excluding worker start-up and model loading) / minutes of audio processed (the scored
windows of the files that were predicted: not a long file's uncut length, nor a failed file), measured with
``cores = workers * threads`` cores;
``projected_kaggle_minutes = (700 * seconds_per_soundscape_minute * cores / 4 + startup_seconds) / 60``:
700 one-minute test soundscapes on Kaggle's 4 CPU cores, assuming throughput scales linearly with cores and a
Kaggle core is as fast as a local one.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import resource
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from birdclef import SAMPLE_RATE, WINDOW_SECONDS
from birdclef.audio.decode import AudioError, audio_info, load_audio
from birdclef.infer import ensemble, postprocess, teacher_member
from birdclef.infer.members import (  # the spec and factory names used to live here: still importable from here
    PREDICT_DEFAULTS,
    SPEC_FORMAT,
    ExportFactory,
    PredictorFactory,
    group_predictor,
    load_spec,
    make_factory,
    member_predict_cfg,
    torch_factory,
)
from birdclef.infer.windows import group_by_chunking, n_windows_for, predict_members

__all__ = [
    "PREDICT_DEFAULTS", "SPEC_FORMAT", "ExportFactory", "FolderPredictions", "InferenceError", "PredictorFactory",
    "finish", "finish_spec", "infer", "list_soundscapes", "load_spec", "make_factory", "predict_folder",
    "torch_factory",
]  # fmt: skip

log = logging.getLogger(__name__)

KAGGLE_SOUNDSCAPES = 700
KAGGLE_CORES = 4
AUDIO_SUFFIXES = (".ogg", ".flac", ".wav", ".mp3")
ON_ERROR = ("raise", "fallback", "skip")


class InferenceError(ValueError):
    """A soundscape that could not be predicted; the message names the file."""


def infer(
    spec: Mapping[str, Any], files: Sequence[str | os.PathLike[str]], factory: PredictorFactory, **kwargs: Any
) -> tuple[FolderPredictions, np.ndarray]:
    """Predict ``files`` with an ensemble spec: member predictions, then combined, post-processed scores.

    Args:
        spec: from ``load_spec``.
        files: soundscapes, in output order.
        factory: see ``make_factory``.
        kwargs: ``predict_folder`` options (workers, threads, on_error, file_seconds, start_method);
            ``file_seconds`` defaults to the spec's; a spec ``teacher`` joins over all rows (``teacher_member.join``).

    Returns:
        ``(member predictions with timing, (rows, C) final scores in spec class order)``.
    """
    kwargs.setdefault("file_seconds", spec.get("file_seconds", 60.0))
    preds = predict_folder(files, spec["members"], factory, spec["predict"], spec["postprocess"], **kwargs)
    return preds, teacher_member.join(spec, files, preds, finish_spec(spec, preds), **kwargs)  # T2, over all rows


def finish_spec(spec: Mapping[str, Any], preds: FolderPredictions) -> np.ndarray:
    """``finish`` with the weights, class sets, combination and post-processing of an ensemble spec."""
    members = spec["members"]
    counts = None if spec.get("class_counts") is None else np.asarray(spec["class_counts"], dtype=np.float64)
    return finish(
        preds, spec["classes"], [m["weight"] for m in members], [m["classes"] for m in members],
        spec["combination"], spec["postprocess"], counts,
    )  # fmt: skip


@dataclass
class FolderPredictions:
    """Member-level window scores of a folder of soundscapes (before combination).

    Attributes:
        stems: file stems in output order.
        n_windows: windows per file.
        members: per member, (sum(n_windows), C_m) window probabilities; rows of failed files are NaN.
        failed: stem -> reason for the files that fell back or were skipped (``on_error``: fallback, skip).
        audio_seconds: seconds of audio processed: the scored windows of the files predicted.
        process_seconds: wall time from the first file started to the last result.
        startup_seconds: wall time to start the workers and build the predictors.
        peak_rss_mb: parent peak RSS + the peak RSS of every worker (upper bound on the concurrent total).
        cores: workers * threads. teacher: the teacher member's run (``teacher_member.TeacherRun``), if any.
    """

    stems: list[str]
    n_windows: list[int]
    members: list[np.ndarray]
    failed: dict[str, str] = field(default_factory=dict)
    audio_seconds: float = 0.0
    process_seconds: float = 0.0
    startup_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    cores: int = 1
    teacher: Any = None

    def speed(self) -> dict[str, float]:
        """Speed and memory figures for metrics (see the module docstring; a teacher's time is added)."""
        spm = self.process_seconds / max(self.audio_seconds / 60.0, 1e-9)
        projected = (KAGGLE_SOUNDSCAPES * spm * self.cores / KAGGLE_CORES + self.startup_seconds) / 60.0
        return teacher_member.with_teacher_speed({
            "seconds_per_soundscape_minute": round(spm, 4),
            "projected_kaggle_minutes": round(projected, 2),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "startup_seconds": round(self.startup_seconds, 2),
            "cores": self.cores,
            "n_files": len(self.stems),
            "n_failed": len(self.failed),
        }, self.teacher)  # fmt: skip


def list_soundscapes(folder: str | os.PathLike[str]) -> list[Path]:
    """Audio files of ``folder`` sorted by name (deterministic output order)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"soundscape folder {folder} does not exist")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)


def predict_folder(
    files: Sequence[str | os.PathLike[str]],
    members: Sequence[Mapping[str, Any]],
    factory: PredictorFactory,
    predict: Mapping[str, Any] | None = None,
    post: Mapping[str, Any] | None = None,
    workers: int = 1,
    threads: int | None = None,
    on_error: str = "raise",
    file_seconds: float | None = 60.0,
    start_method: str = "spawn",
    on_truncated: str = "warn",
) -> FolderPredictions:
    """Run every member over every file; member-level post-processing (peak TTA, delta shift) included.

    Args:
        files: audio files, predicted and returned in this order.
        members: member specs (``name``, optional ``predict`` overrides, whatever ``factory`` needs).
        factory: builds one member's predictor (see ``PredictorFactory``).
        predict: ensemble-wide chunking config (keys of ``PREDICT_DEFAULTS``).
        post: post-processing params (``postprocess`` module); only member-level steps are used here.
        workers: worker processes (1 = in this process).
        threads: intra-op threads per worker; default ``cpu_count // workers``.
        on_error: ``raise`` (stop with an error naming the file), ``fallback`` (warn; the file's rows are
            filled later by ``finish`` with each class's mean score over the other files) or ``skip`` (no
            warning: the file is only listed in ``failed``, for the caller to report and leave out; its rows are
            NaN and, without ``file_seconds``, none).
        file_seconds: fit every file to this duration (pad/cut, with a warning when it differs by more than
            0.1 s); ``None`` keeps each file's own length (``windows.n_windows_for``).
        on_truncated: a file that decodes only partly (``audio.decode.ON_TRUNCATED``): ``warn`` and use what
            decodes, or ``raise`` (then ``on_error`` applies).
        start_method: multiprocessing start method. ``spawn`` (default) is safe whatever the parent did but
            needs a picklable ``factory`` and re-imports in each worker; ``fork`` starts faster but hangs when
            the parent already ran torch (its OpenMP pool does not survive a fork).
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, not {on_error!r}")
    if on_error == "fallback" and file_seconds is None:
        raise ValueError("on_error='fallback' needs file_seconds to size a failed file's rows")
    workers = max(1, min(int(workers), len(files) or 1))
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    job = _Job(members, factory, predict or {}, post or {}, threads, on_error, file_seconds, on_truncated)
    t0 = time.perf_counter()
    if workers == 1:
        _init_worker(job)
        startup = time.perf_counter() - t0
        t1 = time.perf_counter()
        outcomes = [_predict_one(str(f)) for f in files]
    else:
        ctx = mp.get_context(start_method)
        with ctx.Pool(workers, initializer=_init_worker, initargs=(job,)) as pool:
            # One warm-up task per worker would hide start-up; measure it from the first result instead.
            it = pool.imap(_predict_one, [str(f) for f in files], chunksize=1)
            first = next(it)
            startup = time.perf_counter() - t0 - first.seconds
            t1 = time.perf_counter() - first.seconds
            outcomes = [first, *it]
    process = time.perf_counter() - t1
    return _collect(outcomes, members, startup, process, workers * threads)


def finish(
    preds: FolderPredictions,
    classes: Sequence[str],
    weights: Sequence[float],
    member_classes: Sequence[Sequence[str] | None],
    combination: str = "mean",
    post: Mapping[str, Any] | None = None,
    class_counts: np.ndarray | None = None,
) -> np.ndarray:
    """Combine member scores and apply file-level post-processing; fill failed files' rows.

    Returns:
        (sum(n_windows), C) float32 scores in [0, 1], rows in file order.
    """
    ok_rows = np.concatenate(
        [np.full(n, s not in preds.failed) for s, n in zip(preds.stems, preds.n_windows, strict=True)]
    )
    if not ok_rows.any():
        raise InferenceError(f"every file failed: {dict(list(preds.failed.items())[:5])}")
    combined = ensemble.combine([m[ok_rows] for m in preds.members], weights, classes, member_classes, combination)
    out = np.empty((len(ok_rows), len(classes)), dtype=np.float32)
    out[ok_rows] = combined
    start = 0
    for stem, n in zip(preds.stems, preds.n_windows, strict=True):
        if stem not in preds.failed:
            out[start : start + n] = postprocess.apply_file(out[start : start + n], post, class_counts)
        start += n
    out[~ok_rows] = out[ok_rows].mean(axis=0)
    return out


@dataclass
class _Job:
    members: Sequence[Mapping[str, Any]]
    factory: PredictorFactory
    predict: Mapping[str, Any]
    post: Mapping[str, Any]
    threads: int
    on_error: str
    file_seconds: float | None
    on_truncated: str = "warn"


@dataclass
class _Outcome:
    stem: str
    n_windows: int
    windows: list[np.ndarray] | None
    error: str | None
    audio_seconds: float
    seconds: float
    pid: int
    rss_mb: float


_STATE: dict[str, Any] = {}


def _init_worker(job: _Job) -> None:
    # Runs once per worker process: predictors (and their thread pools / sessions) are built here.
    frame_tf = postprocess.frame_transform(job.post)
    _STATE["job"] = job
    # Members with the same chunking share one pass: one stacked batch per chunk group, one mel per config.
    chunkings = [member_predict_cfg(m, job.predict) for m in job.members]
    groups = []
    for chunking, positions in group_by_chunking(chunkings):
        predict = group_predictor(job.factory, [job.members[i] for i in positions], job.threads)
        groups.append((postprocess.wrap_predictor(predict, job.post), chunking, positions))
    _STATE["groups"] = groups
    _STATE["frame_transform"] = frame_tf


def _predict_one(path: str) -> _Outcome:
    job: _Job = _STATE["job"]
    stem = Path(path).stem
    t0 = time.perf_counter()
    n_windows = n_windows_for(round(job.file_seconds * SAMPLE_RATE)) if job.file_seconds else 0
    audio_seconds, windows, error = 0.0, None, None
    try:
        length_s = audio_info(path).duration_s
        # Decode only what is kept: the windows past file_seconds are never scored.
        wave = load_audio(path, 0.0, job.file_seconds or None, on_truncated=job.on_truncated)
        _warn_odd_input(path, wave, length_s, job.file_seconds)
        n_windows = n_windows or n_windows_for(wave.shape[0])
        windows = predict_members(_STATE["groups"], wave, n_windows, _STATE["frame_transform"])
        audio_seconds = n_windows * WINDOW_SECONDS  # what the members processed (padding included, the rest cut)
    except (AudioError, ValueError, RuntimeError) as err:
        why = err.detail if isinstance(err, AudioError) else str(err)  # an AudioError names the file already
        reason = f"{err.reason}: {why}" if isinstance(err, AudioError) else why
        if job.on_error == "raise":
            raise InferenceError(f"{path}: {reason}") from err
        if job.on_error == "fallback":  # skip: the caller reports the file (once), with what it does about it
            log.warning("%s: prediction failed, its rows get the fallback (class means): %s", path, reason)
        error, windows = reason, None
    return _Outcome(
        stem, n_windows, windows, error, audio_seconds, time.perf_counter() - t0, os.getpid(), _peak_rss_mb()
    )


def _peak_rss_mb() -> float:
    # VmHWM is this process image's own peak; ru_maxrss also keeps the peak of whatever process forked and
    # exec'ed it (a parent's gigabytes would count here).
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _warn_odd_input(path: str, wave: np.ndarray, seconds: float, file_seconds: float | None) -> None:
    # seconds: the file's whole length (header), of which ``wave`` is the part kept.
    if file_seconds and abs(seconds - file_seconds) > 0.1:
        action = "zero-padded" if seconds < file_seconds else "cut"
        log.warning("%s: %.2f s long, %s to %.0f s", path, seconds, action, file_seconds)
    if not np.any(wave):
        log.warning("%s: silent (all samples are zero)", path)


def _collect(
    outcomes: list[_Outcome], members: Sequence[Mapping[str, Any]], startup: float, process: float, cores: int
) -> FolderPredictions:
    widths = [None] * len(members)
    for o in outcomes:
        if o.windows is not None:
            widths = [w.shape[1] for w in o.windows]
            break
    stems = [o.stem for o in outcomes]
    dup = {s for s in stems if stems.count(s) > 1}
    if dup:
        raise InferenceError(f"several files share the stem(s) {sorted(dup)[:5]}: row ids would collide")
    blocks: list[list[np.ndarray]] = [[] for _ in members]
    for o in outcomes:
        for m in range(len(members)):
            if o.windows is not None:
                blocks[m].append(o.windows[m])
            else:
                blocks[m].append(np.full((o.n_windows, widths[m] or 1), np.nan, dtype=np.float32))
    worker_rss: dict[int, float] = {}
    for o in outcomes:
        worker_rss[o.pid] = max(worker_rss.get(o.pid, 0.0), o.rss_mb)
    parent = _peak_rss_mb()
    worker_rss.pop(os.getpid(), None)
    return FolderPredictions(
        stems=stems,
        n_windows=[o.n_windows for o in outcomes],
        members=[np.concatenate(b) if b else np.zeros((0, 0), np.float32) for b in blocks],
        failed={o.stem: o.error for o in outcomes if o.error is not None},
        audio_seconds=sum(o.audio_seconds for o in outcomes) or WINDOW_SECONDS * sum(o.n_windows for o in outcomes),
        process_seconds=process,
        startup_seconds=startup,
        peak_rss_mb=parent + sum(worker_rss.values()),
        cores=cores,
    )
