"""Small I/O helpers shared by every stage: atomic writes, JSON metrics, params sections."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto ``path`` only if the block succeeds.

    Works for files and directories: whatever the block creates at the temporary path replaces ``path``.
    A killed or failing writer therefore never leaves a half-written output that looks valid.

    Args:
        path: final location of the file or directory.

    Yields:
        The temporary path to write to (same directory, so the rename is atomic on POSIX).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    target = tmp / final.name
    try:
        yield target
        if not target.exists():
            raise FileNotFoundError(f"atomic write of {final} produced nothing at {target}")
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """Yield a fresh temporary directory, removed afterwards (work whose outputs are not published)."""
    tmp = Path(tempfile.mkdtemp(prefix="birdclef-scratch-"))
    try:
        yield tmp / "out"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as stable, pretty JSON (sorted keys, trailing newline) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def write_parquet(df: Any, path: str | os.PathLike[str]) -> None:
    """Write a pandas DataFrame to parquet atomically, without the index."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_csv(df: Any, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """Write a pandas DataFrame to CSV atomically, without the index."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, **kwargs)


def load_params(path: str | os.PathLike[str] = "params.yaml", section: str | None = None) -> dict[str, Any]:
    """Load params.yaml, or one top-level section of it.

    Args:
        path: the params file.
        section: top-level key to return; ``None`` returns the whole file.

    Raises:
        KeyError: when ``section`` is missing, naming the file and the keys it has.
    """
    params = yaml.safe_load(Path(path).read_text()) or {}
    if section is None:
        return params
    if section not in params:
        raise KeyError(f"{path}: no section {section!r} (have: {', '.join(sorted(params))})")
    return params[section]


def merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in recursively (nested dicts merge, other values replace).

    How per-iteration and per-round overrides of params sections combine with the section itself. A nested dict
    whose ``name`` differs from the base's replaces it whole: ``scheduler: {name: constant}`` over a cosine
    schedule is the constant schedule with its own defaults, not constant with cosine's ``min_lr`` (which it
    does not take). The same holds for a new optimiser or loss name: restate the options to keep.
    """
    out = dict(base)
    for key, value in override.items():
        nested = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        if nested and "name" in value and "name" in out[key] and value["name"] != out[key]["name"]:
            nested = False
        out[key] = merged(out[key], value) if nested else value
    return out


def _json_default(obj: Any) -> Any:
    # numpy scalars and paths appear in metrics dicts; make them plain JSON.
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
