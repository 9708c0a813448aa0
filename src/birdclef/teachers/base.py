"""The teacher interface: a frozen foundation model mapping fixed-length waveforms to class logits and embeddings.

Model files never come from the network: a path in params or an environment variable names them, and a missing file
is an error that names the param, the variable and where users get the file.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from birdclef.dist import file_digest
from birdclef.teachers.runtime import read_labels

__all__ = ["ADAPTER_OPTIONS", "Teacher", "check_options", "read_labels", "resolve_file", "resolve_labels"]

ADAPTER_OPTIONS = (
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
"""Every option any adapter takes; an adapter accepts the subset in its ``OPTIONS`` (the rest must be unset)."""


class Teacher(abc.ABC):
    """A foundation-model teacher: fixed windows at its own rate in, logits over its own classes and embeddings out.

    Attributes:
        name: registry name (set by ``register_teacher``).
        sample_rate: Hz the model expects.
        window_s: seconds per model input window.
        labels: the model's class names, in logit order.
        embedding_dim: length D of one embedding.
        files: model and label files, for the fingerprint of cached results.
    """

    name: ClassVar[str] = ""
    OPTIONS: ClassVar[tuple[str, ...]] = ("model_path", "labels_path", "threads")
    RUNTIME: ClassVar[str] = ""
    """``tflite`` | ``onnx``: the :mod:`birdclef.teachers.runtime` model class the Kaggle bundle rebuilds."""

    sample_rate: int
    window_s: float
    labels: list[str]
    embedding_dim: int
    files: dict[str, Path]

    @property
    def window_samples(self) -> int:
        """Samples per model input window at :attr:`sample_rate`."""
        return round(self.window_s * self.sample_rate)

    @abc.abstractmethod
    def predict(self, waves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the model on a batch of windows.

        Args:
            waves: (batch, window_samples) float32 mono at :attr:`sample_rate`.

        Returns:
            ``(logits, embeddings)``: (batch, len(labels)) float32 and (batch, embedding_dim) float32.
        """

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], where: str = "teacher") -> Teacher:
        """Build from adapter options (see :func:`birdclef.teachers.create_teacher`)."""
        check_options(cfg, cls.OPTIONS, where, cls.name)
        return cls(**{k: v for k, v in cfg.items() if v is not None}, where=where)

    def runtime_options(self) -> dict[str, Any]:
        """What rebuilds the model without birdclef (the ensemble member's spec entry): ``runtime`` plus, for
        ONNX, the input and output names. Files, rate and window come from :attr:`files`, :attr:`sample_rate`,
        :attr:`window_s`."""
        return {"runtime": self.RUNTIME}

    def fingerprint(self) -> dict[str, Any]:
        """What this teacher's outputs depend on: name, rate, window and the sha256 of its files."""
        return {
            "name": self.name,
            "sample_rate": self.sample_rate,
            "window_s": self.window_s,
            "files": {k: file_digest(p) for k, p in sorted(self.files.items())},
        }

    def _check_batch(self, waves: np.ndarray) -> np.ndarray:
        waves = np.ascontiguousarray(waves, dtype=np.float32)
        if waves.ndim != 2 or waves.shape[1] != self.window_samples:
            raise ValueError(
                f"{self.name} teacher: expected (batch, {self.window_samples}) samples "
                f"({self.window_s} s at {self.sample_rate} Hz), got shape {waves.shape}"
            )
        return waves

    def _check_outputs(self, logits: np.ndarray, emb: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
        logits = np.asarray(logits, dtype=np.float32).reshape(batch, -1)
        emb = np.asarray(emb, dtype=np.float32).reshape(batch, -1)
        if logits.shape[1] != len(self.labels):
            raise ValueError(
                f"{self.name} teacher: the model gives {logits.shape[1]} classes but its label file "
                f"{self.files.get('labels')} has {len(self.labels)} labels: model and labels do not belong together"
            )
        return logits, emb


def check_options(cfg: Mapping[str, Any], allowed: tuple[str, ...], where: str, name: str) -> None:
    """Refuse unknown adapter options and set options that cannot apply to adapter ``name``.

    Raises:
        ValueError: naming each offending ``<where>.<key>`` and the valid options.
    """
    errors = [f"unknown key {where}.{k}" for k in sorted(set(cfg) - set(ADAPTER_OPTIONS))]
    errors += [
        f"{where}.{k} cannot apply to the {name} teacher (leave it null)"
        for k in ADAPTER_OPTIONS
        if k not in allowed and cfg.get(k) is not None
    ]
    if errors:
        raise ValueError("; ".join(errors) + f" (the {name} teacher takes: {', '.join(allowed)})")


def resolve_file(value: str | os.PathLike[str] | None, env: str, param: str, what: str, how_to_get: str) -> Path:
    """The path of a model file from a param, else from an environment variable.

    Args:
        value: the param's value (``None`` or empty: use the environment variable).
        env: environment variable consulted when the param is unset.
        param: the param's full name for errors (``teacher.model_path``).
        what: what the file is, for errors.
        how_to_get: where users get the file, appended to errors.

    Raises:
        FileNotFoundError: neither is set, or the named file does not exist.
    """
    raw = str(value) if value not in (None, "") else os.environ.get(env, "")
    if not raw:
        raise FileNotFoundError(
            f"{param} is not set and neither is the environment variable {env}: point one of them at {what}. "
            f"{how_to_get}"
        )
    path = Path(raw).expanduser()
    if not path.is_file():
        source = param if value not in (None, "") else f"{env} (environment variable; {param} is unset)"
        raise FileNotFoundError(f"{source}: nothing at {path} (it should be {what}). {how_to_get}")
    return path


def resolve_labels(
    value: str | os.PathLike[str] | None, env: str, model: Path, beside: tuple[str, ...], param: str
) -> Path:
    """The label file: the param, else the environment variable, else a file of a known name beside the model.

    Raises:
        FileNotFoundError: naming the param, the variable and the names looked for.
    """
    if value not in (None, "") or os.environ.get(env):
        return resolve_file(value, env, param, "label file", "It lists the model's classes in logit order.")
    for name in beside:
        if (model.parent / name).is_file():
            return model.parent / name
    looked = f" nor {' / '.join(beside)} beside the model in {model.parent}" if beside else ""
    raise FileNotFoundError(f"{param} is not set, nor the environment variable {env}{looked}: no label file")
