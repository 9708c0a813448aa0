"""Small I/O helpers shared by every stage: atomic writes (and sweeping their debris), JSON metrics (scores apart
from timings), params."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import tempfile
import time
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
        The temporary path to write to (same directory, so the rename is atomic on POSIX), inside a folder
        ``.<name>.<pid>.<random>.tmp``: the writer's process id lets :func:`sweep_temps` tell a killed writer's
        debris from a live one's.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp", dir=final.parent))
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


# atomic_path's temporary folder: .<name>.<pid>.<mkdtemp's 8 random characters>.tmp (no pid: older code).
_TEMP = re.compile(r"^\.(?P<name>.+?)(?:\.(?P<pid>\d+))?\.[a-z0-9_]{8}\.tmp$")


def sweep_temps(*outputs: str | os.PathLike[str] | None) -> list[Path]:
    """Remove what killed :func:`atomic_path` writers left of a stage's outputs; call it first thing in a stage.

    A SIGKILL between ``mkdtemp`` and the rename leaves ``.<name>.<pid>.<random>.tmp`` beside the output (an
    empty folder, or one holding a whole file that DVC would hash into a folder output). Swept: such siblings
    of each output, and such entries anywhere inside an output folder (persistent outputs: resume checkpoints,
    shard blocks), whose writer is gone (its pid is not a live process; a name without a pid predates them).
    A live writer's folder (another rank of this job, a stage running beside this one) stays. Only rank 0
    sweeps (``RANK`` unset or 0), so the other ranks of a job never race it.

    Args:
        outputs: the stage's declared output files and folders (missing ones and None, an optional output
            not asked for, are fine).

    Returns:
        The removed paths.
    """
    if os.environ.get("RANK", "0") != "0":
        return []
    removed: list[Path] = []
    for out in (Path(o) for o in outputs if o is not None):
        beside = out.parent.glob(f".{glob.escape(out.name)}.*.tmp") if out.parent.is_dir() else []
        inside = out.rglob(".*.tmp") if out.is_dir() and not out.is_symlink() else []
        for path in [*beside, *inside]:
            match = _TEMP.match(path.name)
            if match is None or path.parent == out.parent and match["name"] != out.name:
                continue  # not a temp, or another output's
            if match["pid"] and pid_alive(int(match["pid"])):
                continue  # its writer is still at work
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process of id ``pid`` exists on this machine (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


# A metric of the machine, not of the result: durations, rates, memory, cores, and the ONNX runtimes' float parity
# with torch (their threaded reductions differ by ~1e-7 from one run to the next: 4.9e-7 then 5.4e-7 on one commit).
# These go to a stage's timing file (metrics/timing/<stage>.json), so that a rerun of the same commit rewrites only
# those.
TIMING_KEY = re.compile(r"seconds|per_second|kaggle_minutes|rss_mb|(^|_)cores$|^parity_")


def split_timings(metrics: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(scores, timings)`` of a stage's metrics: the keys that :data:`TIMING_KEY` matches, at any depth.

    Nested dicts (``{member: {...}}``) split alike; one left empty on a side is left out of that side (an empty
    one stays with the scores).
    """
    scores: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            inner_scores, inner_timings = split_timings(value)
            if inner_scores or not value:
                scores[key] = inner_scores
            if inner_timings:
                timings[key] = inner_timings
        else:
            (timings if TIMING_KEY.search(str(key)) else scores)[key] = value
    return scores, timings


def write_metrics(
    metrics: Mapping[str, Any], path: str | os.PathLike[str], timings: str | os.PathLike[str]
) -> dict[str, Any]:
    """Write a stage's scores to ``path`` and its timings to ``timings`` (both JSON, atomic).

    The timings get ``stage_seconds``: wall time since this process started. Scores of an unchanged commit are
    then the same bytes on every rerun; only the timing files change.

    Returns:
        The scores written.
    """
    scores, times = split_timings(metrics)
    write_json(path, scores)
    write_json(timings, {**times, "stage_seconds": round(process_seconds(), 1)})
    return scores


def process_seconds() -> float:
    """Wall seconds since this process started (Linux: from /proc; elsewhere: since birdclef.io was imported)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))  # fmt: skip
        return max(time.time() - boot - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time() - _IMPORTED


_IMPORTED = time.time()


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
