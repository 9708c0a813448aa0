"""ONNX teachers through onnxruntime on the CPU: any model with declared rate, window and outputs, and Perch v2."""

from __future__ import annotations

import os
from typing import ClassVar

import numpy as np

from birdclef.teachers._registry import register_teacher
from birdclef.teachers.base import Teacher, read_labels, resolve_file, resolve_labels
from birdclef.teachers.runtime import OnnxModel


@register_teacher("onnx")
class OnnxTeacher(Teacher):
    """Any ONNX model taking (batch, samples) float32 mono and giving class logits and an embedding.

    Args:
        model_path: the .onnx file (``None``: the environment variable :attr:`MODEL_ENV`).
        labels_path: the label file (``None``: :attr:`LABELS_ENV`, else a known name beside the model); see
            :func:`birdclef.teachers.base.read_labels` for the formats.
        sample_rate: Hz the model expects.
        window_s: seconds per input window.
        input_name: the waveform input (``None``: the model's only input).
        logits_output: name of the (batch, classes) logits output.
        embedding_output: name of the (batch, D) embedding output.
        label_column: the label column of a .csv label file (``None``: its first column).
        threads: onnxruntime intra-op threads (``None``: its default).
        where: params prefix named in errors.
    """

    OPTIONS: ClassVar[tuple[str, ...]] = (
        "model_path",
        "labels_path",
        "label_column",
        "threads",
        "sample_rate",
        "window_s",
        "input_name",
        "logits_output",
        "embedding_output",
    )
    RUNTIME: ClassVar[str] = "onnx"
    MODEL_ENV: ClassVar[str] = "TEACHER_ONNX"
    LABELS_ENV: ClassVar[str] = "TEACHER_LABELS"
    LABELS_BESIDE: ClassVar[tuple[str, ...]] = ()
    HOW_TO_GET: ClassVar[str] = "Export your model to ONNX with a (batch, samples) waveform input."
    WHAT: ClassVar[str] = "an ONNX teacher model"

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        labels_path: str | os.PathLike[str] | None = None,
        *,
        sample_rate: int | None = None,
        window_s: float | None = None,
        input_name: str | None = None,
        logits_output: str | None = None,
        embedding_output: str | None = None,
        label_column: str | None = None,
        threads: int | None = None,
        where: str = "teacher",
    ) -> None:
        missing = [
            f"{where}.{k}"
            for k, v in (("sample_rate", sample_rate), ("window_s", window_s), ("logits_output", logits_output),
                         ("embedding_output", embedding_output))
            if v is None
        ]  # fmt: skip
        if missing:
            raise ValueError(f"the {self.name} teacher needs {', '.join(missing)} declared")
        model = resolve_file(model_path, self.MODEL_ENV, f"{where}.model_path", self.WHAT, self.HOW_TO_GET)
        labels = resolve_labels(labels_path, self.LABELS_ENV, model, self.LABELS_BESIDE, f"{where}.labels_path")
        self.files = {"model": model, "labels": labels}
        self.labels = read_labels(labels, label_column, f"{where}.labels_path")
        self.sample_rate = int(sample_rate)  # type: ignore[arg-type]
        self.window_s = float(window_s)  # type: ignore[arg-type]
        self.model = OnnxModel(model, self.window_samples, str(logits_output), str(embedding_output), input_name,
                               threads, embeddings=True, where=where)  # fmt: skip
        self.session, self.input_name = self.model.session, self.model.input_name
        self.output_names = self.model.output_names
        self.embedding_dim = int(self.model.embedding_dim or 0)

    def runtime_options(self) -> dict[str, object]:
        """``runtime: onnx`` and the input and output names (see :meth:`Teacher.runtime_options`)."""
        names = {"input_name": self.input_name, "logits_output": self.output_names[0]}
        return {"runtime": self.RUNTIME, **names, "embedding_output": self.output_names[1]}

    def predict(self, waves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(batch, window_samples) float32 -> (logits (batch, classes), embeddings (batch, D))."""
        waves = self._check_batch(waves)
        logits, emb = self.model(waves)
        return self._check_outputs(logits, emb, waves.shape[0])


@register_teacher("perch_v2")
class PerchV2Teacher(OnnxTeacher):
    """Google's Perch v2 (Apache-2.0) from a community ONNX export: 5-s windows at 32 kHz (160,000 samples),
    14,795 class logits (output ``label``) and a 1536-d embedding (output ``embedding``); input ``inputs``.

    The defaults match the community export (``perch_v2.onnx`` / ``perch_v2_no_dft.onnx``, whose other outputs
    ``spatial_embedding`` and ``spectrogram`` are not read) and its ``labels.csv`` (header ``inat2024_fsd50k``,
    then one scientific name per class); every name can be overridden in params.
    """

    MODEL_ENV: ClassVar[str] = "PERCH_ONNX"
    LABELS_ENV: ClassVar[str] = "PERCH_LABELS"
    LABELS_BESIDE: ClassVar[tuple[str, ...]] = ("labels.csv",)
    HOW_TO_GET: ClassVar[str] = (
        "Perch v2 ONNX exports (perch_v2.onnx) and their labels.csv are published by the community; "
        "put labels.csv beside the model or set teacher.labels_path. Licence: Apache-2.0."
    )
    WHAT: ClassVar[str] = "the Perch v2 ONNX model (perch_v2.onnx)"
    DEFAULTS: ClassVar[dict[str, object]] = {
        "sample_rate": 32_000,
        "window_s": 5.0,
        "input_name": "inputs",
        "logits_output": "label",
        "embedding_output": "embedding",
    }

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        labels_path: str | os.PathLike[str] | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(model_path, labels_path, **{**self.DEFAULTS, **kwargs})  # type: ignore[arg-type]
