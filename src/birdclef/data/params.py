"""The ``acquire`` section of params.yaml, checked and typed."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

ON_BAD = ("fail", "skip")
COMPETITION_SOURCE = "train_audio"


@dataclass(frozen=True)
class AcquireParams:
    """Knobs of the acquire stage (params.yaml ``acquire.*``).

    Attributes:
        sources: ``"train_audio"`` (the competition's train.csv) and/or names of extra sources under
            ``<data>/extra/<name>/`` (see ``birdclef.data.ingest_kaggle``), read in this order; on a file name
            seen in an earlier source, the later row is a duplicate.
        min_rating: keep recordings with rating >= min_rating, and unrated ones (rating 0).
        class_filter: taxonomy class names to keep (e.g. ``["Aves", "Amphibia"]``); empty keeps all.
        max_files_per_class: cap on recordings per species (primary label), highest ratings first; 0 = no cap.
        n_folds: cross-validation folds (>= 2).
        seed: seed of the cap's tie-break and of the fold shuffle.
        on_bad: ``fail`` stops and lists every bad row and file; ``skip`` quarantines them and goes on.
        verify_decode: decode every audio file fully to find truncated ones (else read headers only).
        workers: threads that probe audio.
    """

    sources: tuple[str, ...] = (COMPETITION_SOURCE,)
    min_rating: float = 0.0
    class_filter: tuple[str, ...] = ()
    max_files_per_class: int = 0
    n_folds: int = 5
    seed: int = 0
    on_bad: str = "fail"
    verify_decode: bool = True
    workers: int = 2

    @classmethod
    def from_dict(cls, section: dict[str, Any] | None) -> AcquireParams:
        """Build from the params.yaml section; missing keys take the defaults above.

        Raises:
            ValueError: naming every unknown key and every bad value.
        """
        section = dict(section or {})
        known = {f.name for f in fields(cls)}
        errors = [f"unknown key acquire.{k}" for k in sorted(set(section) - known)]
        values: dict[str, Any] = {}
        for key in ("sources", "class_filter"):
            if key in section:
                value = section[key]
                if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
                    errors.append(f"acquire.{key} must be a list of names, got {value!r}")
                else:
                    values[key] = tuple(value)
        for key, kind in (("min_rating", float), ("max_files_per_class", int), ("n_folds", int), ("seed", int),
                          ("workers", int), ("verify_decode", bool), ("on_bad", str)):
            if key in section:
                value = section[key]
                ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
                if not ok or (kind is not bool and isinstance(value, bool)):
                    errors.append(f"acquire.{key} must be {kind.__name__}, got {value!r}")
                else:
                    values[key] = kind(value)
        params = cls(**values)
        if not params.sources or len(set(params.sources)) != len(params.sources):
            errors.append(f"acquire.sources must be a non-empty list of distinct names, got {list(params.sources)}")
        if not 0.0 <= params.min_rating <= 5.0:
            errors.append(f"acquire.min_rating must be in [0, 5], got {params.min_rating}")
        if params.max_files_per_class < 0:
            errors.append(f"acquire.max_files_per_class must be >= 0, got {params.max_files_per_class}")
        if params.n_folds < 2:
            errors.append(f"acquire.n_folds must be >= 2, got {params.n_folds}")
        if params.workers < 1:
            errors.append(f"acquire.workers must be >= 1, got {params.workers}")
        if params.on_bad not in ON_BAD:
            errors.append(f"acquire.on_bad must be one of {', '.join(ON_BAD)}, got {params.on_bad!r}")
        if errors:
            raise ValueError("bad acquire params: " + "; ".join(errors))
        return params
