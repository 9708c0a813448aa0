"""torch.distributed plumbing for the stages: launching ranks (loopback or torchrun), and resumable sharded maps.

A sharded map splits a file list into fixed blocks of ``block`` items; block ``b`` belongs to rank ``b % world``.
Each rank writes one ``.npz`` per finished block (atomically), so a killed job resumes by skipping the blocks on
disk, whatever the number of ranks of the next attempt. Rank 0 waits for every block and merges them in the
original item order; the merged result is therefore the same for 1, 2 or N ranks.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from birdclef import launch
from birdclef.io import atomic_path

Result = dict[str, np.ndarray]
# Long jobs (a GPU labelling 100,000 hours) outlive gloo/nccl's 30-minute default barrier timeout.
BARRIER_TIMEOUT = datetime.timedelta(hours=24)


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` from the torchrun environment; ``(0, 1)`` outside torchrun."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


DEVICES = ("auto", "cpu", "cuda")


def torch_device(setting: str = "auto") -> str:
    """The torch device a stage trains on, from ``train.device``.

    Args:
        setting: ``auto`` (CUDA when a device is visible, else the CPU), ``cpu`` or ``cuda``.

    Returns:
        ``"cuda"`` or ``"cpu"`` (a torchrun rank picks its ``cuda:<LOCAL_RANK>`` itself).

    Raises:
        ValueError: an unknown setting. RuntimeError: ``cuda`` asked for where no CUDA device is visible (a GPU
            preset on a CPU machine would otherwise train for hours on the CPU without saying so).
    """
    import torch

    if setting not in DEVICES:
        raise ValueError(f"train.device must be one of {DEVICES}, not {setting!r}")
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
    return "cuda" if setting != "cpu" and torch.cuda.is_available() else "cpu"


def rank_device(device: str) -> str:
    """This process's device: ``cuda:<LOCAL_RANK>`` for a CUDA torchrun rank (and selected), else ``device``."""
    if device != "cuda" or "LOCAL_RANK" not in os.environ:
        return device
    import torch

    local = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    torch.cuda.set_device(local)
    return local


def start(setting: str = "auto") -> tuple[str, int]:
    """Set up a training process: its device and rank, the process group joined when torchrun started several.

    Args:
        setting: ``train.device`` (see ``torch_device``).

    Returns:
        ``(device, rank)``: ``cuda:<LOCAL_RANK>`` (selected) for a CUDA torchrun rank, else ``torch_device``'s
        answer; rank 0 outside torchrun. Several ranks join with nccl on CUDA, gloo on the CPU.
    """
    device = rank_device(torch_device(setting))
    init("nccl" if device.startswith("cuda") else "gloo")
    return device, rank_world()[0]


def relaunch(nproc: int) -> None:
    """Run the current command as ``nproc`` ranks unless it already is one: :func:`birdclef.launch.relaunch`."""
    launch.relaunch(nproc)


def init(backend: str = "gloo") -> bool:
    """Join the process group when running as one of several ranks; True when distributed.

    Ranks of :func:`birdclef.launch.launch_local` meet at their launcher's loopback store; torchrun's ranks by ``env://``.
    """
    import torch.distributed as dist

    if rank_world()[1] <= 1:
        return False
    if dist.is_initialized():
        return True
    rank, world = rank_world()
    if os.environ.get(launch.LOOPBACK_VAR) == "1":  # started by launch_local: the store is ours, on 127.0.0.1
        store = launch.loopback_store(rank, world)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=BARRIER_TIMEOUT)
    else:
        dist.init_process_group(backend, timeout=BARRIER_TIMEOUT)
    return True


def finish() -> None:
    """Leave the process group (if joined)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def fingerprint(*parts: Any) -> str:
    """Short digest of whatever decides a result, so that stored work is reused only for the same inputs.

    The one fingerprint of the project: a sharded map's block folder (``fingerprint(items, salt)``: the item list
    plus params and checkpoint digests) and a training run's resume checkpoint (``fingerprint(name, settings...,
    segment table)``) are both keyed by it.

    Args:
        parts: JSON-able values (dicts by sorted keys; paths and other objects by ``str``) and pandas DataFrames
            (by their contents, column by column, as text).

    Returns:
        16 hex digits.
    """
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, pd.DataFrame):
            h.update(pd.util.hash_pandas_object(part.astype(str), index=False).to_numpy().tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")  # parts end where they end: ("ab", "c") is not ("a", "bc")
    return h.hexdigest()[:16]


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes (checkpoints in a fingerprint: a retrained teacher must not reuse old blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sharded_map(
    items: Sequence[str],
    compute: Callable[[list[str]], list[Result]],
    folder: str | os.PathLike[str],
    key: str,
    block: int = 32,
    progress: bool = True,
    desc: str = "blocks",
) -> list[Result] | None:
    """Compute ``compute(block_items)`` over ``items`` spread across torchrun ranks; merged on rank 0.

    Args:
        items: keys (file names, cache keys) in output order.
        compute: maps a list of items to one dict of arrays per item (same keys for every item).
        folder: where blocks are written (``folder/<key>/block-00000.npz``); keep it across attempts to resume.
        key: fingerprint of everything the results depend on (see :func:`fingerprint`); blocks of another key
            are never reused.
        block: items per block (the unit of resume and of work distribution).
        progress: show a progress bar (rank 0 only; it counts rank 0's own items).
        desc: progress bar label.

    Returns:
        On rank 0, one dict per item in ``items`` order; ``None`` on the other ranks.
    """
    rank, world = rank_world()
    distributed = init() if world > 1 else False
    root = Path(folder) / key
    root.mkdir(parents=True, exist_ok=True)
    blocks = [list(items[i : i + block]) for i in range(0, len(items), block)]
    mine = range(rank, len(blocks), world)
    with tqdm(total=sum(len(blocks[b]) for b in mine), desc=desc, disable=not progress or rank != 0) as bar:
        for b in mine:
            path = root / f"block-{b:05d}.npz"
            if not _valid_block(path, blocks[b]):
                results = compute(blocks[b])
                if len(results) != len(blocks[b]):
                    raise ValueError(f"compute returned {len(results)} results for {len(blocks[b])} items")
                _write_block(path, blocks[b], results)
            bar.update(len(blocks[b]))
    if distributed:
        import torch.distributed as dist

        dist.barrier()
    if rank != 0:
        return None
    merged: list[Result] = []
    for b, names in enumerate(blocks):
        merged.extend(_read_block(root / f"block-{b:05d}.npz", names))
    return merged


def clear(folder: str | os.PathLike[str], key: str) -> None:
    """Delete the blocks of ``key`` (after the merged output is safely written)."""
    shutil.rmtree(Path(folder) / key, ignore_errors=True)


def _write_block(path: Path, names: list[str], results: list[Result]) -> None:
    arrays: dict[str, np.ndarray] = {"__items__": np.asarray(names, dtype=str)}
    for i, res in enumerate(results):
        for name, value in res.items():
            arrays[f"{i}/{name}"] = np.asarray(value)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _valid_block(path: Path, names: list[str]) -> bool:
    if not path.exists():
        return False
    try:
        with np.load(path) as z:
            return z["__items__"].tolist() == names
    except (OSError, ValueError, KeyError):  # a torn or foreign file: recompute it
        return False


def _read_block(path: Path, names: list[str]) -> list[Result]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: block missing after the barrier (did a rank fail?)")
    with np.load(path) as z:
        if z["__items__"].tolist() != names:
            raise ValueError(f"{path}: holds other items than expected")
        out: list[Result] = [{} for _ in names]
        for k in z.files:
            if k == "__items__":
                continue
            i, name = k.split("/", 1)
            out[int(i)][name] = z[k]
    return out
