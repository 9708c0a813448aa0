"""The numpy-only core of the teachers: TFLite and ONNX model runtimes, 5-s window tiling and pooling, rank blending.

Module-level imports are numpy and the standard library only: the Kaggle bundle copies this file next to its
standalone script (as ``birdclef_bundle/teacher_runtime.py``), where neither birdclef nor torch exists. soxr,
onnxruntime and the TFLite interpreter are imported where they are used. The adapters (``birdnet``, ``onnx``,
``perch_v2``), ``predict_windows`` and ``blend`` of :mod:`birdclef.teachers` are built on these functions, so the
repository and the bundle run the same numbers.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 32_000
"""Hz of the project's audio; mirrors ``birdclef.SAMPLE_RATE`` (this file imports nothing from birdclef)."""
WINDOW_SECONDS = 5
"""Seconds per scored window; mirrors ``birdclef.WINDOW_SECONDS``."""
POOLS = ("max", "mean")
ACTIVATIONS = ("sigmoid", "softmax")
METHODS = ("rank", "percentile")
_EPS = 1e-6

ModelFn = Callable[[np.ndarray], tuple[np.ndarray, "np.ndarray | None"]]
"""``waves (batch, samples) float32 -> (logits (batch, classes), embeddings (batch, D) or None)``."""


def tile_offsets(window_s: float, stride_s: float | None = None, param: str = "teacher.stride_s") -> np.ndarray:
    """Start times (s) of the teacher windows tiling one 5-s window, relative to its start.

    Args:
        window_s: the teacher's window W in seconds.
        stride_s: seconds between tiles when W < 5 s; ``None``: the fewest tiles that cover the window
            (ceil(5 / W), evenly spaced). ``(5 - W) / stride_s`` must be a whole number, so that the last tile
            ends where the window ends.
        param: the param named in errors.

    Returns:
        (tiles,) float64 offsets; one negative offset ``-(W - 5) / 2`` when W >= 5 s.

    Raises:
        ValueError: a stride that does not tile the window, or a stride for a teacher with W >= 5 s.
    """
    span = WINDOW_SECONDS - window_s
    if span <= _EPS:
        if stride_s is not None:
            raise ValueError(f"{param} cannot apply: a {window_s:g}-s teacher runs once per 5-s window (leave it null)")
        return np.array([span / 2.0])
    if stride_s is None:
        n = math.ceil(WINDOW_SECONDS / window_s - _EPS)
        return np.linspace(0.0, span, n)
    steps = span / stride_s if stride_s > 0 else -1.0
    if steps < 1 - _EPS or abs(steps - round(steps)) > 1e-6:
        raise ValueError(
            f"{param} = {stride_s}: tiles of {window_s:g} s must end where the 5-s window ends, so "
            f"{span:g} / stride_s must be a whole number >= 1 (e.g. {span:g}, {span / 2:g} or {span / 4:g})"
        )
    return np.arange(round(steps) + 1) * float(stride_s)


def n_windows(samples: int, sample_rate: int = SAMPLE_RATE) -> int:
    """Number of 5-s windows of a waveform of ``samples`` (the last one zero-padded; at least one)."""
    return max(1, -(-samples // (WINDOW_SECONDS * sample_rate)))


def activate(logits: np.ndarray, activation: str = "sigmoid") -> np.ndarray:
    """Logits -> probabilities: ``sigmoid`` (multi-label, BirdNET's and Perch's default) or ``softmax`` over classes."""
    logits = np.asarray(logits, dtype=np.float64)
    if activation == "sigmoid":
        return (1.0 / (1.0 + np.exp(-np.clip(logits, -60.0, 60.0)))).astype(np.float32)
    if activation == "softmax":
        z = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)
    raise ValueError(f"teacher.activation must be one of {ACTIVATIONS}, not {activation!r}")


def resample(wave: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """soxr HQ resampling of a 1-D float32 wave, as ``birdclef.audio.decode.resample`` (unchanged at equal rates)."""
    if sr_in == sr_out:
        return wave
    import soxr

    return soxr.resample(wave, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def run_windows(
    model: ModelFn,
    wave: np.ndarray,
    *,
    teacher_rate: int,
    window_s: float,
    sample_rate: int = SAMPLE_RATE,
    stride_s: float | None = None,
    pool: str = "max",
    activation: str = "sigmoid",
    batch_size: int = 16,
    peak_normalize: float | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """A teacher's probabilities (and embeddings) per 5-s window of one waveform.

    The wave is resampled to ``teacher_rate``, each 5-s window is tiled with the teacher's windows
    (:func:`tile_offsets`), the model runs on batches of tiles, and each 5-s window pools its tiles: the max (or
    mean) of their probabilities, the mean of their embeddings (see :mod:`birdclef.teachers.windows`).

    Args:
        model: see ``ModelFn``; returning ``None`` embeddings skips them.
        wave: (samples,) float32 mono at ``sample_rate``.
        teacher_rate: Hz the model expects. window_s: seconds per model input.
        sample_rate: Hz of ``wave``.
        stride_s, pool, activation, batch_size, peak_normalize: as ``birdclef.teachers.predict_windows``.

    Returns:
        ``(probs, embeddings)``: (n_windows, classes) float32 and (n_windows, D) float32 or ``None``.
    """
    if pool not in POOLS:
        raise ValueError(f"teacher.pool must be one of {POOLS}, not {pool!r}")
    offsets = tile_offsets(window_s, stride_s)
    n_win = n_windows(len(wave), sample_rate)
    starts_s = (np.arange(n_win)[:, None] * WINDOW_SECONDS + offsets[None, :]).ravel()
    wave = resample(np.ascontiguousarray(wave, dtype=np.float32), sample_rate, teacher_rate)
    starts = np.rint(starts_s * teacher_rate).astype(np.int64)
    length = round(window_s * teacher_rate)
    probs, embs = [], []
    for i in range(0, len(starts), batch_size):
        batch = np.stack([crop(wave, int(s), length) for s in starts[i : i + batch_size]])
        if peak_normalize is not None:
            peak = np.abs(batch).max(axis=1, keepdims=True)
            batch = np.where(peak > 0, batch * (peak_normalize / np.maximum(peak, 1e-12)), batch).astype(np.float32)
        logits, emb = model(batch)
        probs.append(activate(logits, activation))
        if emb is not None:
            embs.append(np.asarray(emb, dtype=np.float32))
    tiles = len(offsets)
    p = np.concatenate(probs).reshape(n_win, tiles, -1)
    e = np.concatenate(embs).reshape(n_win, tiles, -1).mean(axis=1) if embs else None
    return (p.max(axis=1) if pool == "max" else p.mean(axis=1)), e


def crop(wave: np.ndarray, start: int, length: int) -> np.ndarray:
    """Samples [start, start + length) of ``wave``, zeros outside it."""
    if start >= 0 and start + length <= len(wave):
        return wave[start : start + length]
    out = np.zeros(length, dtype=np.float32)
    lo, hi = max(start, 0), min(start + length, len(wave))
    if hi > lo:
        out[lo - start : hi - start] = wave[lo:hi]
    return out


def read_labels(
    path: str | os.PathLike[str], column: str | None = None, param: str = "teacher.labels_path"
) -> list[str]:
    """A teacher's class names in logit order.

    ``.csv`` files have a header row and the labels in ``column`` (default: the first column; Perch v2's
    ``labels.csv`` has the header ``inat2024_fsd50k``); any other file has one label per line (BirdNET's
    ``Scientific name_Common name`` lines). Blank lines are skipped.

    Raises:
        ValueError: an empty file or a missing column, naming the file.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
        if not rows:
            raise ValueError(f"{path} ({param}): empty label file")
        header = [c.strip() for c in rows[0]]
        if column is not None and column not in header:
            raise ValueError(f"{path}: no column {column!r} (label_column); columns: {', '.join(header)}")
        col = header.index(column) if column is not None else 0
        labels = [r[col].strip() if col < len(r) else "" for r in rows[1:]]
    else:
        if column is not None:
            raise ValueError(f"{path}: label_column applies to .csv label files only")
        labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise ValueError(f"{path} ({param}): no labels")
    return labels


def tflite_interpreter(path: str | os.PathLike[str], threads: int = 1, delegates: bool = False) -> Any:
    """A TFLite interpreter from ``ai-edge-litert``, else ``tflite_runtime``, else TensorFlow's (a Kaggle image's).

    Args:
        delegates: keep the default delegates (XNNPACK: about twice as fast on one thread); without them the
            built-in kernels run and every intermediate tensor stays readable (BirdNET's embedding).
    """
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter, OpResolverType  # type: ignore[no-redef]
        except ImportError:
            try:
                import tensorflow as tf  # type: ignore[import-not-found]
            except ImportError:
                raise ImportError(
                    "a TFLite teacher needs an interpreter: pip install -e '.[teachers]' (ai-edge-litert), "
                    "tflite_runtime or tensorflow"
                ) from None
            Interpreter, OpResolverType = tf.lite.Interpreter, tf.lite.experimental.OpResolverType
    resolver = OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(model_path=str(path), num_threads=int(threads), experimental_op_resolver_type=resolver)
    interp.allocate_tensors()
    return interp


class TFLiteModel:
    """A TFLite waveform classifier (``ModelFn``): logits from its first output, optionally the embedding tensor
    just before it (index ``output - 1``: BirdNET's ``GLOBAL_AVG_POOL``, as BirdNET-Analyzer reads it).

    Args:
        path: the .tflite file.
        threads: interpreter threads.
        embeddings: read the embedding too; that tensor is readable only without the default XNNPACK delegate,
            so the built-in kernels run then. Logits only (the ensemble member) keeps XNNPACK: BirdNET V2.4 runs
            about twice as fast on one thread, its logits within 1e-4 of the built-in kernels'.

    Attributes:
        input_samples: samples per input window; n_classes: logits; embedding_dim: D (``None`` without embeddings).
    """

    def __init__(self, path: str | os.PathLike[str], threads: int = 1, embeddings: bool = True) -> None:
        self.interpreter = tflite_interpreter(path, threads, delegates=not embeddings)
        inp = self.interpreter.get_input_details()[0]
        out = self.interpreter.get_output_details()[0]
        self.input_index, self.logits_index = inp["index"], out["index"]
        self.input_samples, self.n_classes = int(inp["shape"][-1]), int(out["shape"][-1])
        self.embedding_index = out["index"] - 1 if embeddings else None
        self.embedding_dim = None
        if embeddings:
            emb = next(t for t in self.interpreter.get_tensor_details() if t["index"] == self.embedding_index)
            self.embedding_dim = int(emb["shape"][-1])
        self._batch = 0

    def __call__(self, waves: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(batch, input_samples) float32 -> (logits (batch, n_classes), embeddings (batch, D) or None)."""
        waves = np.ascontiguousarray(waves, dtype=np.float32)
        if waves.shape[0] != self._batch:  # resizing re-plans the arena: only when the batch size changes
            self.interpreter.resize_tensor_input(self.input_index, list(waves.shape))
            self.interpreter.allocate_tensors()
            self._batch = waves.shape[0]
        self.interpreter.set_tensor(self.input_index, waves)
        self.interpreter.invoke()
        logits = self.interpreter.get_tensor(self.logits_index).copy()
        emb = None if self.embedding_index is None else self.interpreter.get_tensor(self.embedding_index).copy()
        return logits, emb


def ort_session(path: str | os.PathLike[str], threads: int | None = None) -> Any:
    """An onnxruntime CPU session; ``threads`` intra-op threads (``None``: its default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


class OnnxModel:
    """An ONNX waveform classifier (``ModelFn``) on onnxruntime: named logits and embedding outputs.

    Args:
        path: the .onnx file.
        input_samples: samples per window the caller feeds (checked against a static input length).
        logits_output, embedding_output: output names.
        input_name: the waveform input (``None``: the model's only input).
        threads: intra-op threads (``None``: onnxruntime's default).
        embeddings: also run the embedding output.
        where: params prefix named in errors.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        input_samples: int,
        logits_output: str,
        embedding_output: str,
        input_name: str | None = None,
        threads: int | None = None,
        embeddings: bool = True,
        where: str = "teacher",
    ) -> None:
        self.session = ort_session(path, threads)
        inputs = {i.name: i for i in self.session.get_inputs()}
        if input_name is None:
            if len(inputs) != 1:
                raise ValueError(f"{path}: {len(inputs)} inputs; name the waveform one in {where}.input_name")
            input_name = next(iter(inputs))
        if input_name not in inputs:
            raise ValueError(f"{path}: no input {input_name!r} ({where}.input_name); inputs: {', '.join(inputs)}")
        last = inputs[input_name].shape[-1]
        if isinstance(last, int) and last != input_samples:
            raise ValueError(
                f"{path}: input {input_name!r} takes {last} samples, but {where}.window_s * sample_rate = "
                f"{input_samples}"
            )
        outputs = {o.name: o for o in self.session.get_outputs()}
        for key, out in (("logits_output", logits_output), ("embedding_output", embedding_output)):
            if out not in outputs:
                raise ValueError(f"{path}: no output {out!r} ({where}.{key}); outputs: {', '.join(outputs)}")
        self.input_name, self.input_samples = input_name, int(input_samples)
        self.output_names = [str(logits_output)] + ([str(embedding_output)] if embeddings else [])
        self.embedding_dim = None
        if embeddings:
            dim = outputs[str(embedding_output)].shape[-1]
            if not isinstance(dim, int):  # a symbolic dimension: ask the model once
                dim = self(np.zeros((1, self.input_samples), np.float32))[1].shape[-1]
            self.embedding_dim = int(dim)

    def __call__(self, waves: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(batch, input_samples) float32 -> (logits (batch, classes), embeddings (batch, D) or None)."""
        out = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(waves, dtype=np.float32)})
        return out[0], (out[1] if len(out) > 1 else None)


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of a 1-D array, ties sharing their average rank (``scipy.stats.rankdata``'s default)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return np.zeros(0)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse.reshape(-1)]


def blend(
    student: np.ndarray, teacher: np.ndarray, weight: float | np.ndarray = 0.2, method: str = "rank"
) -> np.ndarray:
    """Blend student and teacher scores per class (column) over the rows (windows) given.

    ``rank``: each column becomes ``(1 - w) * r_s + w * r_t``, with ``r`` the rank of a row within the column
    divided by the number of rows (ties share their average rank), so every column lies in (0, 1]; a column the
    teacher does not cover becomes the students' ``r_s``. (2026 winner: 0.8 students + 0.2 teacher.)

    ``percentile``: the teacher's rank percentile of each row is read off the students' own score distribution in
    that column (quantile mapping), and ``(1 - w) * s + w * Q_s(pct_t)`` keeps the students' probability scale;
    uncovered columns stay the students' scores.

    A teacher NaN in some rows of a column leaves those cells to the students (their ``r_s`` or ``s``), and the
    teacher's ranks are then taken over the rows it scored.

    Args:
        student: (rows, C) student probabilities (the ensemble's).
        teacher: (rows, C) teacher probabilities in the same species order, NaN where the teacher has no signal.
        weight: the teacher's weight w in [0, 1], one for every column or (C,) one per column (a per-class fit).
        method: ``rank`` | ``percentile``.

    Returns:
        (rows, C) float64 blended scores.

    Raises:
        ValueError: mismatched shapes, a weight outside [0, 1], an unknown method, or a NaN student score.
    """
    student = np.asarray(student, dtype=np.float64)
    teacher = np.asarray(teacher, dtype=np.float64)
    if student.ndim != 2 or student.shape != teacher.shape:
        raise ValueError(f"blend: student {student.shape} and teacher {teacher.shape} must be the same (rows, C)")
    weights = np.asarray(weight, dtype=np.float64)
    if weights.ndim == 0:
        weights = np.full(student.shape[1], float(weights))
    if weights.shape != student.shape[1:] or not ((weights >= 0.0) & (weights <= 1.0)).all():
        raise ValueError(
            f"blend: the teacher weight must be in [0, 1], one or one per column ({student.shape[1]}), got {weight}"
        )
    if method not in METHODS:
        raise ValueError(f"blend: method must be one of {METHODS}, not {method!r}")
    if not np.isfinite(student).all():
        raise ValueError("blend: student scores must be finite")
    rows = student.shape[0]
    if rows == 0:
        return student.copy()
    out = student.copy()
    for c in range(student.shape[1]):
        have = np.isfinite(teacher[:, c])
        n, w = int(have.sum()), float(weights[c])
        r_s = average_ranks(student[:, c]) / rows if method == "rank" else None
        if r_s is not None:
            out[:, c] = r_s
        if n == 0 or w == 0.0:
            continue
        r_t = average_ranks(teacher[have, c])
        if r_s is not None:
            out[have, c] = (1 - w) * r_s[have] + w * r_t / n
        else:
            pct = (r_t - 1) / (n - 1) if n > 1 else np.full(1, 0.5)
            out[have, c] = (1 - w) * student[have, c] + w * np.quantile(student[:, c], pct)
    return out
