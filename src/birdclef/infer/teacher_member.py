"""T2: the foundation teacher (BirdNET, Perch v2, any ONNX) as an ensemble member, blended per class with the students.

numpy and the standard library only at module level: the Kaggle bundle copies this file next to its standalone
script, with :mod:`birdclef.teachers.runtime` as ``teacher_runtime.py``. The ensemble stage's side (params,
the spec entry, scores, the reference distribution) is :mod:`birdclef.infer.teacher_spec`.

Where the blend happens:

- ``ensemble`` stage, ``infer`` stage, Kaggle bundle: over **all rows of the run**. The metric ranks a species'
  windows across every test row, so the students' final scores (combined, post-processed) and the teacher's are
  blended per class once every file is predicted (:func:`blend_rows`: ``rank`` or ``percentile`` of
  :func:`birdclef.teachers.blend`). Streaming, writing a file's rows as soon as it is done, cannot work for a
  rank blend: a row's rank depends on the rows still to come. Both ``infer`` and ``predict_kaggle.py`` therefore
  run the students over every file, then the teacher over every file, then blend.
- ``birdclef predict`` (one recording at a time, any length): against a **stored reference distribution**. The
  ensemble stage stores, per covered species, quantiles of the students' and the teacher's scores on the
  labelled soundscapes (``reference``); a window's teacher score becomes its percentile among the reference
  teacher scores, read off the students' reference quantiles (``Q_s(F_t(t))``), and mixes in as
  ``(1 - w) s + w Q_s(F_t(t))`` (:func:`blend_file`). That works per file and keeps the students' probability
  scale (Raven thresholds keep their meaning), whatever ``method``; it is an approximation of the set-wide blend.

Species the teacher does not cover keep the students' scores unchanged. The teacher runs with XNNPACK (logits
only), ``infer.workers`` processes of ``infer.threads`` threads, after the students; its time is added to the
projected Kaggle minutes (:func:`with_teacher_speed`).
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

try:  # the bundle layout: birdclef_bundle/teacher_runtime.py
    from . import teacher_runtime as runtime  # type: ignore[attr-defined]
except ImportError:  # the repository
    from birdclef.teachers import runtime

log = logging.getLogger(__name__)

KAGGLE_SOUNDSCAPES, KAGGLE_CORES = 700, 4
Loader = Callable[[str], np.ndarray]
"""``path -> (samples,) float32 mono at 32 kHz`` (``birdclef.audio.decode.load_audio``; the script's load_wave)."""


def sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes (as ``birdclef.dist.file_digest``)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def teacher_files(
    entry: Mapping[str, Any], root: str | os.PathLike[str] | None = None, verify: bool = True
) -> dict[str, Path]:
    """The member's ``{"model": Path, "labels": Path}``; relative paths are under ``root`` (a bundle's model/).

    Raises:
        FileNotFoundError: a file is gone. ValueError: a file's bytes changed since the ensemble stage.
    """
    out = {}
    for key, info in entry["files"].items():
        path = Path(info["path"])
        path = path if path.is_absolute() or root is None else Path(root) / path
        if not path.is_file():
            raise FileNotFoundError(
                f"the ensemble's {entry['name']} teacher {key} file {path} is gone: restore it (teacher.model_path / "
                "teacher.labels_path) or rerun the ensemble stage with ensemble.teacher off"
            )
        if verify and sha256(path) != info["sha256"]:
            raise ValueError(f"{path}: the teacher {key} file changed since the ensemble stage: rerun it")
        out[key] = path
    return out


class TeacherMember:
    """The teacher of a spec entry, rebuilt without birdclef: window probabilities in the spec's class order.

    Args:
        entry: ``spec["teacher"]`` (see :func:`birdclef.infer.teacher_spec.describe`).
        root: folder that relative file paths are under (a bundle's ``model/``).
        threads: model threads.
        verify: check the files' sha256 (once per run is enough; workers skip it).
    """

    def __init__(
        self, entry: Mapping[str, Any], root: str | os.PathLike[str] | None = None, threads: int = 1, verify=True
    ) -> None:
        self.entry = entry
        files = teacher_files(entry, root, verify)
        labels = runtime.read_labels(files["labels"], entry.get("label_column"), "teacher.labels_path")
        self.index = np.asarray(entry["index"], dtype=np.int64)
        self.covered = self.index >= 0
        mapped = [str(entry["teacher_labels"][j]) for j in np.flatnonzero(self.covered)]
        found = [labels[k] if k < len(labels) else "" for k in self.index[self.covered]]
        if len(labels) != entry["n_labels"] or mapped != found:
            raise ValueError(
                f"{files['labels']}: not the label file the ensemble stage mapped ({entry['n_labels']} labels, "
                f"{sum(a != b for a, b in zip(mapped, found, strict=True))} mapped species moved)"
            )
        if entry["sample_rate"] != runtime.SAMPLE_RATE:
            try:  # fail at start, not on the first file
                import soxr  # noqa: F401
            except ImportError as err:
                raise ImportError(f"the {entry['name']} teacher needs soxr to resample to {entry['sample_rate']} Hz "
                                  "(pip install soxr; Kaggle images have it, with librosa)") from err  # fmt: skip
        samples = round(entry["window_s"] * entry["sample_rate"])
        if entry["runtime"] == "tflite":
            self.model = runtime.TFLiteModel(files["model"], threads, embeddings=False)
        elif entry["runtime"] == "onnx":
            self.model = runtime.OnnxModel(
                files["model"], samples, entry["logits_output"], entry["embedding_output"], entry.get("input_name"),
                threads, embeddings=False,
            )  # fmt: skip
        else:
            raise ValueError(f"teacher runtime must be tflite or onnx, not {entry['runtime']!r}")

    def __call__(self, wave: np.ndarray, n_windows: int) -> np.ndarray:
        """(samples,) 32-kHz wave -> (n_windows, C) float32 probabilities, NaN for uncovered species; the wave is
        zero-padded or cut to ``n_windows`` 5-s windows first, as the students' timeline."""
        need = n_windows * runtime.WINDOW_SECONDS * runtime.SAMPLE_RATE
        wave = np.asarray(wave, dtype=np.float32)[:need]
        wave = np.concatenate([wave, np.zeros(need - len(wave), np.float32)]) if len(wave) < need else wave
        e = self.entry
        probs, _ = runtime.run_windows(
            self.model, wave, teacher_rate=e["sample_rate"], window_s=e["window_s"], stride_s=e.get("stride_s"),
            pool=e.get("pool", "max"), activation=e.get("activation", "sigmoid"),
            batch_size=int(e.get("batch_size", 16)), peak_normalize=e.get("peak_normalize"),
        )  # fmt: skip
        if probs.shape[1] != e["n_labels"]:
            raise ValueError(f"the {e['name']} teacher gives {probs.shape[1]} classes, its labels {e['n_labels']}")
        out = np.full((n_windows, len(self.index)), np.nan, dtype=np.float32)
        out[:, self.covered] = probs[:, self.index[self.covered]]
        return out


@dataclass
class TeacherRun:
    """The teacher over a run's files: (rows, C) probabilities (NaN: uncovered species, failed files) and timing.

    ``process_seconds``: first file started -> last result; ``startup_seconds``: workers and models built.
    """

    probs: np.ndarray
    failed: dict[str, str] = field(default_factory=dict)
    audio_seconds: float = 0.0
    process_seconds: float = 0.0
    startup_seconds: float = 0.0
    cores: int = 1
    peak_rss_mb: float = 0.0

    def speed(self) -> dict[str, float]:
        """``teacher_seconds_per_soundscape_minute`` and ``teacher_projected_kaggle_minutes`` = (700 * s/min *
        cores / 4 + startup) / 60, as ``runner.FolderPredictions.speed`` for the students."""
        spm = self.process_seconds / max(self.audio_seconds / 60.0, 1e-9)
        projected = (KAGGLE_SOUNDSCAPES * spm * self.cores / KAGGLE_CORES + self.startup_seconds) / 60.0
        return {
            "teacher_seconds_per_soundscape_minute": round(spm, 4),
            "teacher_projected_kaggle_minutes": round(projected, 2),
            "teacher_startup_seconds": round(self.startup_seconds, 2),
            "teacher_n_failed": len(self.failed),
        }


_WORKER: dict[str, Any] = {}


def _init_worker(entry: Mapping[str, Any], root: str | None, threads: int, load: Loader | None, verify: bool) -> None:
    if load is None:
        from birdclef.audio.decode import load_audio as load
    _WORKER.update(member=TeacherMember(entry, root, threads, verify), load=load)


def _predict_one(job: tuple[str, int, str]) -> tuple[np.ndarray | None, str | None, float, float, float]:
    path, n_windows, on_error = job
    t0 = time.perf_counter()
    try:
        wave = _WORKER["load"](path)
        probs, error = _WORKER["member"](wave, n_windows), None
        seconds = len(wave) / runtime.SAMPLE_RATE
    except Exception as err:  # any decoder's error (birdclef's AudioError, soundfile's, OSError): the file's
        if on_error == "raise":  # rows fall back; predict_files refuses a run where every file failed
            raise ValueError(f"{path}: the teacher failed: {err}") from err
        log.warning("%s: the teacher failed, its rows come from the students alone: %s", path, err)
        probs, error, seconds = None, f"{type(err).__name__}: {err}", 0.0
    return probs, error, seconds, time.perf_counter() - t0, _peak_rss_mb()


def predict_files(
    entry: Mapping[str, Any],
    files: Sequence[str | os.PathLike[str]],
    n_windows: Sequence[int],
    *,
    load: Loader | None = None,
    root: str | os.PathLike[str] | None = None,
    workers: int = 1,
    threads: int | None = None,
    on_error: str = "raise",
    start_method: str = "spawn",
) -> TeacherRun:
    """Run the teacher over ``files`` (``n_windows[i]`` rows each) in ``workers`` processes of ``threads`` threads.

    Args:
        load: the decoder (``None``: ``birdclef.audio.decode.load_audio``).
        on_error: ``raise`` or ``fallback`` (warn; the file's rows stay NaN, so the students alone score them).
        start_method: ``spawn`` (the repository's default) or ``fork`` (the Kaggle script).
    """
    teacher_files(entry, root, verify=True)  # once, before any worker starts
    workers = max(1, min(int(workers), len(files) or 1))
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    args = (dict(entry), None if root is None else str(root), int(threads), load, False)
    jobs = [(str(f), int(n), on_error) for f, n in zip(files, n_windows, strict=True)]
    t0 = time.perf_counter()
    if workers == 1:
        _init_worker(*args)
        startup = time.perf_counter() - t0
        outcomes = [_predict_one(job) for job in jobs]
    else:
        with mp.get_context(start_method).Pool(workers, _init_worker, args) as pool:
            it = pool.imap(_predict_one, jobs, chunksize=1)
            first = next(it)
            startup = time.perf_counter() - t0 - first[3]
            outcomes = [first, *it]
    process = time.perf_counter() - t0 - startup
    width = len(entry["index"])
    if jobs and all(o[1] is not None for o in outcomes):
        raise RuntimeError(f"the teacher failed on every file, e.g. {jobs[0][0]}: {outcomes[0][1]}")
    blocks = [p if p is not None else np.full((n, width), np.nan, np.float32) for (p, *_), (_, n, _) in
              zip(outcomes, jobs, strict=True)]  # fmt: skip
    return TeacherRun(
        probs=np.concatenate(blocks) if blocks else np.zeros((0, width), np.float32),
        failed={Path(j[0]).stem: o[1] for j, o in zip(jobs, outcomes, strict=True) if o[1] is not None},
        audio_seconds=sum(o[2] for o in outcomes),
        process_seconds=process,
        startup_seconds=startup,
        cores=workers * threads,
        peak_rss_mb=max([o[4] for o in outcomes] or [0.0]),
    )


def class_weights(entry: Mapping[str, Any]) -> np.ndarray:
    """(C,) the teacher's weight per class: ``entry["class_weights"]`` where a per-class fit wrote them, else the
    one ``weight`` for every class."""
    n = len(entry["index"])
    if entry.get("class_weights") is None:
        return np.full(n, float(entry["weight"]))
    weights = np.asarray(entry["class_weights"], dtype=np.float64)
    if weights.shape != (n,):
        raise ValueError(f"the teacher's class_weights hold {weights.size} values for {n} classes")
    return weights


def blend_rows(entry: Mapping[str, Any], students: np.ndarray, teacher: np.ndarray) -> np.ndarray:
    """The run's final scores: covered columns ``blend(students, teacher, weight, method)`` over all rows (the
    weight per class: :func:`class_weights`), uncovered columns the students' scores unchanged.
    Returns (rows, C) float32 in [0, 1]."""
    covered = np.asarray(entry["index"]) >= 0
    students = np.asarray(students, dtype=np.float32)
    out = students.copy()
    w = class_weights(entry)[covered]
    mixed = runtime.blend(students[:, covered], teacher[:, covered], w, entry["method"])
    out[:, covered] = np.clip(mixed, 0.0, 1.0)
    return out


def blend_file(entry: Mapping[str, Any], students: np.ndarray, teacher: np.ndarray) -> np.ndarray:
    """One recording's scores with the teacher mixed in against the stored reference (``birdclef predict``):
    ``(1 - w) s + w Q_s(F_t(t))`` on covered species, ``F_t`` the reference teacher scores' percentile (ties
    take their mean level) and ``Q_s`` the reference students' quantile function. Returns (rows, C) float32."""
    ref = entry.get("reference")
    if not ref:
        raise ValueError("the ensemble spec's teacher has no reference distribution (rerun the ensemble stage)")
    weights = class_weights(entry)
    out = np.asarray(students, dtype=np.float64).copy()
    for c, q_s, q_t in zip(ref["columns"], ref["students"], ref["teacher"], strict=True):
        w = float(weights[c])
        have = np.isfinite(teacher[:, c])
        if not q_t or not have.any():
            continue
        levels = np.linspace(0.0, 1.0, len(q_t))
        x, q_t = np.asarray(teacher[have, c], np.float64), np.asarray(q_t)
        lo, hi = np.searchsorted(q_t, x, "left"), np.searchsorted(q_t, x, "right")
        pct = np.interp(x, q_t, levels)
        tie = hi > lo
        pct[tie] = (levels[lo[tie]] + levels[hi[tie] - 1]) / 2.0
        out[have, c] = (1 - w) * out[have, c] + w * np.interp(pct, np.linspace(0.0, 1.0, len(q_s)), q_s)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def join(
    spec: Mapping[str, Any],
    files: Sequence[str | os.PathLike[str]],
    preds: Any,
    scores: np.ndarray,
    *,
    workers: int = 1,
    threads: int | None = None,
    on_error: str = "raise",
    start_method: str = "spawn",
    file_seconds: float | None = None,
    root: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """``runner.infer``'s last step: with a teacher in ``spec``, run it over every file and blend over all rows.

    Args:
        spec: the ensemble spec; without ``teacher`` the scores come back unchanged.
        preds: the students' ``runner.FolderPredictions`` (``n_windows`` per file); the teacher's run is put in
            ``preds.teacher`` so ``preds.speed()`` counts it.
        scores: the students' final (rows, C) scores.
        workers, threads, on_error, start_method: as ``runner.predict_folder`` (``file_seconds`` is already in
            ``preds.n_windows``).
    """
    entry = spec.get("teacher")
    if not entry:
        return scores
    run = predict_files(entry, files, preds.n_windows, root=root, workers=workers, threads=threads,
                        on_error=on_error, start_method=start_method)  # fmt: skip
    t0 = time.perf_counter()
    out = blend_rows(entry, scores, run.probs)
    run.process_seconds += time.perf_counter() - t0
    preds.teacher = run
    return out


def with_teacher_speed(speed: dict[str, Any], run: TeacherRun | None) -> dict[str, Any]:
    """The students' speed figures plus the teacher's: ``seconds_per_soundscape_minute`` and
    ``projected_kaggle_minutes`` become the totals (students, then teacher, on the same cores), the students'
    own figures keep a ``students_`` prefix."""
    if run is None:
        return speed
    t = run.speed()
    out = {**speed, **t, **{f"students_{k}": speed[k] for k in ("seconds_per_soundscape_minute",
                                                                "projected_kaggle_minutes")}}  # fmt: skip
    out["seconds_per_soundscape_minute"] = round(speed["seconds_per_soundscape_minute"] +
                                                 t["teacher_seconds_per_soundscape_minute"], 4)  # fmt: skip
    total = speed["projected_kaggle_minutes"] + t["teacher_projected_kaggle_minutes"]
    out["projected_kaggle_minutes"] = round(total, 2)
    out["peak_rss_mb"] = round(max(speed.get("peak_rss_mb", 0.0), run.peak_rss_mb), 1)
    return out


def _peak_rss_mb() -> float:
    # This process's own peak (VmHWM), as runner._peak_rss_mb.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0
