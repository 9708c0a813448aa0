"""Ordered process-pool map with a progress bar, shared by the clean and features stages."""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
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
    ahead: int = 4,
) -> Iterator[R]:
    """Yield ``fn(task)`` for every task, in input order, computed by ``workers`` processes.

    Results come back in the order of ``tasks`` whatever the scheduling, so outputs are deterministic. At
    most ``workers * ahead`` tasks are in flight, so results waiting for a slow consumer never pile up in
    memory. A worker that dies (segfault, OOM kill) raises ``BrokenProcessPool`` instead of hanging.
    With ``workers <= 1`` (or a single task) everything runs in this process, which keeps tests cheap.
    ``fn`` and ``initializer`` must be module-level functions (they are pickled by reference), and results
    must pickle.
    """
    bar = tqdm(total=len(tasks), desc=desc, unit=unit, mininterval=1.0, disable=None)
    with bar:
        if workers <= 1 or len(tasks) < 2:
            if initializer is not None:
                initializer(*initargs)
            for task in tasks:
                yield fn(task)
                bar.update()
            return
        # fork needs no `if __name__ == "__main__"` guard in the caller; the workers run soundfile, soxr and
        # onnxruntime only, never torch ops, so a torch thread pool inherited from the parent cannot deadlock them.
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=initializer, initargs=tuple(initargs)) as pool:
            pending: deque[Future[R]] = deque()
            it = iter(tasks)
            for task in it:
                pending.append(pool.submit(fn, task))
                if len(pending) >= workers * ahead:
                    break
            while pending:
                result = pending.popleft().result()
                for task in it:
                    pending.append(pool.submit(fn, task))
                    break
                bar.update()
                yield result
