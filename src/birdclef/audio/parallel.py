"""Ordered process-pool map with a progress bar, shared by the clean and features stages."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(
    fn: Callable[[T], R],
    tasks: Sequence[T],
    workers: int,
    initializer: Callable[..., None] | None = None,
    initargs: Iterable[Any] = (),
    desc: str = "",
    unit: str = "file",
) -> Iterator[R]:
    """Yield ``fn(task)`` for every task, in input order, computed by ``workers`` processes.

    Results come back in the order of ``tasks`` whatever the scheduling, so outputs are deterministic.
    With ``workers <= 1`` (or a single task) everything runs in this process, which keeps tests cheap.
    ``fn`` and ``initializer`` must be module-level functions (they are pickled by reference).
    """
    bar = {"total": len(tasks), "desc": desc, "unit": unit, "mininterval": 1.0, "disable": None}
    if workers <= 1 or len(tasks) < 2:
        if initializer is not None:
            initializer(*initargs)
        yield from tqdm(map(fn, tasks), **bar)
        return
    # fork needs no `if __name__ == "__main__"` guard in the caller; the workers run soundfile, soxr and
    # onnxruntime only, never torch ops, so a torch thread pool inherited from the parent cannot deadlock them.
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    chunk = max(1, min(8, len(tasks) // (workers * 16)))
    with ctx.Pool(workers, initializer=initializer, initargs=tuple(initargs)) as pool:
        yield from tqdm(pool.imap(fn, tasks, chunksize=chunk), **bar)
