"""The ``teacher`` section of params.yaml, checked and typed."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from birdclef.features.cache import KINDS
from birdclef.teachers._registry import list_teachers
from birdclef.teachers.base import ADAPTER_OPTIONS as ADAPTER_KEYS
from birdclef.teachers.windows import ACTIVATIONS, POOLS, tile_offsets

EMBEDDING_DTYPES = ("float16", "float32")
_WINDOW_S = {"birdnet": 3.0, "perch_v2": 5.0}


@dataclass(frozen=True)
class TeacherParams:
    """Knobs of the teacher stage (params.yaml ``teacher.*``).

    Attributes:
        enabled: run the teacher (off: the stage writes a fixed marker).
        name: adapter (``birdnet`` | ``perch_v2`` | ``onnx``).
        model_path: model file; ``None``: the adapter's environment variable (``BIRDNET_TFLITE``,
            ``PERCH_ONNX``, ``TEACHER_ONNX``).
        labels_path: label file; ``None``: the adapter's variable, else the known file beside the model.
        label_column: column of a .csv label file (``None``: the first).
        mapping_csv: ``primary_label,teacher_label`` rows for species whose scientific name does not match.
        splits: cache kinds to run on: ``train_soundscape``, ``test_soundscape``, ``val_soundscape``, ``segment``.
        stride_s: seconds between the tiles of a teacher with windows under 5 s (``None``: fewest tiles).
        pool: tiles -> 5-s window for probabilities: ``max`` | ``mean`` (embeddings: mean).
        activation: ``sigmoid`` | ``softmax``.
        peak_normalize: scale each teacher window to this peak first (``None``: off).
        batch_size: teacher windows per model call.
        threads: model threads (``None``: the runtime's default; BirdNET: 1).
        block: files per resumable block.
        embedding_dtype: stored embeddings' dtype.
        sample_rate, window_s, input_name, logits_output, embedding_output: the ``onnx`` adapter's declared model
            (``perch_v2``: overrides of its defaults; ``birdnet``: must stay null).
    """

    enabled: bool = False
    name: str = "birdnet"
    model_path: str | None = None
    labels_path: str | None = None
    label_column: str | None = None
    mapping_csv: str | None = None
    splits: tuple[str, ...] = ("train_soundscape",)
    stride_s: float | None = None
    pool: str = "max"
    activation: str = "sigmoid"
    peak_normalize: float | None = None
    batch_size: int = 16
    threads: int | None = None
    block: int = 16
    embedding_dtype: str = "float16"
    sample_rate: int | None = None
    window_s: float | None = None
    input_name: str | None = None
    logits_output: str | None = None
    embedding_output: str | None = None

    @classmethod
    def from_dict(cls, section: dict[str, Any] | None) -> TeacherParams:
        """Build from the params.yaml section; missing keys take the defaults above.

        Raises:
            ValueError: naming every unknown key (with the valid ones) and every bad value.
        """
        section = dict(section or {})
        known = [f.name for f in fields(cls)]
        errors = []
        unknown = sorted(set(section) - set(known))
        if unknown:
            errors.append(f"unknown key(s) {', '.join('teacher.' + k for k in unknown)} (valid: {', '.join(known)})")
        values: dict[str, Any] = {}
        kinds = {
            "enabled": (bool,), "name": (str,), "model_path": (str, None), "labels_path": (str, None),
            "label_column": (str, None), "mapping_csv": (str, None), "stride_s": (float, None), "pool": (str,),
            "activation": (str,), "peak_normalize": (float, None), "batch_size": (int,), "threads": (int, None),
            "block": (int,), "embedding_dtype": (str,), "sample_rate": (int, None), "window_s": (float, None),
            "input_name": (str, None), "logits_output": (str, None), "embedding_output": (str, None),
        }  # fmt: skip
        for key, allowed in kinds.items():
            if key not in section:
                continue
            value = section[key]
            if value is None and None in allowed:
                values[key] = None
            elif _is(value, allowed[0]):
                values[key] = float(value) if allowed[0] is float else value
            else:
                want = allowed[0].__name__ + (" or null" if None in allowed else "")
                errors.append(f"teacher.{key} must be {want}, got {value!r}")
        if "splits" in section:
            value = section["splits"]
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                errors.append(f"teacher.splits must be a list of cache kinds ({', '.join(KINDS)}), got {value!r}")
            else:
                values["splits"] = tuple(value)
        params = cls(**values)
        errors += params._check()
        if errors:
            raise ValueError("bad teacher params: " + "; ".join(errors))
        return params

    def _check(self) -> list[str]:
        errors = []
        if self.name not in list_teachers():
            errors.append(f"teacher.name must be one of {', '.join(list_teachers())}, got {self.name!r}")
        bad = [s for s in self.splits if s not in KINDS]
        if bad or not self.splits or len(set(self.splits)) != len(self.splits):
            errors.append(
                f"teacher.splits must be distinct cache kinds from {', '.join(KINDS)}, got {list(self.splits)}"
            )
        for key, options in (("pool", POOLS), ("activation", ACTIVATIONS), ("embedding_dtype", EMBEDDING_DTYPES)):
            if getattr(self, key) not in options:
                errors.append(f"teacher.{key} must be one of {', '.join(options)}, got {getattr(self, key)!r}")
        for key in ("batch_size", "block", "threads", "sample_rate"):
            value = getattr(self, key)
            if value is not None and value < 1:
                errors.append(f"teacher.{key} must be >= 1, got {value}")
        for key in ("peak_normalize", "window_s"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                errors.append(f"teacher.{key} must be > 0, got {value}")
        window = self.window_s if self.window_s is not None else _WINDOW_S.get(self.name)
        if window is not None and window > 0:
            try:
                tile_offsets(window, self.stride_s)
            except ValueError as err:
                errors.append(str(err))
        return errors

    def adapter_config(self) -> dict[str, Any]:
        """The options handed to :func:`birdclef.teachers.create_teacher` (null ones included: the adapter
        refuses a set option that cannot apply to it)."""
        return {k: getattr(self, k) for k in ADAPTER_KEYS}


def _is(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)
