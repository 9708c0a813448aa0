"""Inference spread over torchrun ranks: each rank predicts its blocks of files, rank 0 merges and finishes.

Blocks are written atomically and skipped when a killed job is rerun (``birdclef.dist.sharded_map``), so a
100,000-hour archive can be labelled in restartable pieces on any number of nodes. The merged member scores are
those of a single-process run: every file is predicted by the same code, only on another process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from birdclef import dist
from birdclef.infer import runner, teacher_member
from birdclef.infer.members import PredictorFactory

OPTIONS = ("threads", "on_error", "file_seconds")
"""The ``infer`` params a sharded run takes (each rank is one process: no ``workers``, no ``start_method``)."""


def infer_ranks(
    spec: Mapping[str, Any],
    files: Sequence[str | os.PathLike[str]],
    factory: PredictorFactory,
    folder: str | os.PathLike[str],
    cfg: Mapping[str, Any],
) -> tuple[runner.FolderPredictions, np.ndarray] | None:
    """The infer stage's run under torchrun: ``infer_sharded`` with the ``infer`` params (``block`` and
    ``OPTIONS``), the process group closed, then on rank 0 a teacher member joined over every file.

    Returns:
        On rank 0 ``(member predictions, final scores)`` as ``runner.infer``; ``None`` on other ranks (their blocks
        are on disk, rank 0 merged them).
    """
    opts = {k: cfg[k] for k in OPTIONS if k in cfg}
    done = infer_sharded(spec, files, factory, folder, int(cfg.get("block", 16)), **opts)
    dist.finish()
    if done is None:
        return None
    # A teacher member blends over all rows: rank 0 runs it over every file once the students are merged.
    return done[0], teacher_member.join(spec, files, *done, **opts)


def infer_sharded(
    spec: Mapping[str, Any],
    files: Sequence[str | os.PathLike[str]],
    factory: PredictorFactory,
    folder: str | os.PathLike[str],
    block: int = 16,
    threads: int | None = None,
    on_error: str = "raise",
    file_seconds: float | None = None,
) -> tuple[runner.FolderPredictions, np.ndarray] | None:
    """``runner.infer`` over torchrun ranks (one process per rank, ``threads`` intra-op threads each).

    Args:
        spec, files, factory: as ``runner.infer``.
        folder: block folder (kept across attempts: finished blocks are skipped).
        block: files per block.
        threads: intra-op threads per rank; default cores / ranks on this node.
        on_error, file_seconds: as ``runner.predict_folder`` (``file_seconds`` defaults to the spec's).

    Returns:
        On rank 0 ``(member predictions, final scores)`` as ``runner.infer``; ``None`` on other ranks.
        Timing: ``process_seconds`` is rank 0's wall time from its first file to the merge (so it includes
        waiting for the slowest rank), ``cores`` = ranks x threads.
    """
    _, world = dist.rank_world()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    threads = threads or max(1, (os.cpu_count() or 1) // local)
    if file_seconds is None:
        file_seconds = spec.get("file_seconds", 60.0)
    job = runner._Job(spec["members"], factory, spec["predict"], spec["postprocess"], threads, on_error, file_seconds)
    t0 = time.perf_counter()
    runner._init_worker(job)
    startup = time.perf_counter() - t0
    names = [str(f) for f in files]
    digests = {m["name"]: _member_digest(m) for m in spec["members"]}
    key = dist.fingerprint(names, {"spec": spec, "members": digests, "on_error": on_error, "seconds": file_seconds})

    def compute(block_files: list[str]) -> list[dict[str, np.ndarray]]:
        return [_to_arrays(runner._predict_one(f), len(spec["members"])) for f in block_files]

    t1 = time.perf_counter()
    merged = dist.sharded_map(names, compute, folder, key, block, desc="inference")
    if merged is None:
        return None
    outcomes = [_from_arrays(r, len(spec["members"])) for r in merged]
    preds = runner._collect(outcomes, spec["members"], startup, time.perf_counter() - t1, world * threads)
    dist.clear(folder, key)
    return preds, runner.finish_spec(spec, preds)


def _member_digest(member: Mapping[str, Any]) -> str:
    # The checkpoint's bytes (a re-trained member must not reuse old blocks); its path when it is not a file.
    path = member.get("checkpoint")
    return dist.file_digest(path) if path and Path(path).is_file() else str(path)


def _to_arrays(o: runner._Outcome, n_members: int) -> dict[str, np.ndarray]:
    out = {
        "stem": np.array(o.stem), "n_windows": np.array(o.n_windows), "error": np.array(o.error or ""),
        "failed": np.array(o.error is not None), "audio_seconds": np.array(o.audio_seconds),
        "seconds": np.array(o.seconds), "pid": np.array(o.pid), "rss_mb": np.array(o.rss_mb),
    }  # fmt: skip
    for m in range(n_members):
        if o.windows is not None:
            out[f"m{m}"] = o.windows[m]
    return out


def _from_arrays(r: Mapping[str, np.ndarray], n_members: int) -> runner._Outcome:
    failed = bool(r["failed"])
    return runner._Outcome(
        stem=str(r["stem"]), n_windows=int(r["n_windows"]),
        windows=None if failed else [r[f"m{m}"] for m in range(n_members)],
        error=str(r["error"]) if failed else None, audio_seconds=float(r["audio_seconds"]),
        seconds=float(r["seconds"]), pid=int(r["pid"]), rss_mb=float(r["rss_mb"]),
    )  # fmt: skip
