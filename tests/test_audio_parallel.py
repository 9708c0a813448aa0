"""Tests of birdclef.audio.parallel: results in input order whatever the number of workers."""

from __future__ import annotations

import os

from birdclef.audio.parallel import ordered_map

_STATE: dict[str, int] = {}


def _init(offset: int) -> None:
    _STATE["offset"] = offset


def _work(x: int) -> tuple[int, int]:
    return x * x + _STATE["offset"], os.getpid()


def test_ordered_map_keeps_order_and_uses_workers() -> None:
    tasks = list(range(40))
    serial = list(ordered_map(_work, tasks, 1, _init, (5,)))
    parallel = list(ordered_map(_work, tasks, 2, _init, (5,)))
    assert [r for r, _ in serial] == [r for r, _ in parallel] == [x * x + 5 for x in tasks]
    assert {pid for _, pid in serial} == {os.getpid()}
    assert os.getpid() not in {pid for _, pid in parallel}
