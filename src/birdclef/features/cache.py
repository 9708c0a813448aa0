"""The memory-mapped waveform cache: one int16 array of every segment and soundscape, its writer and reader."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdclef import SAMPLE_RATE
from birdclef.io import read_json, write_json

KINDS = ("segment", "train_soundscape", "test_soundscape", "val_soundscape")
"""What a cache key is: a cleaned train_audio segment or a soundscape of either split."""
INDEX_COLUMNS = ("key", "kind", "offset", "length", "rms_offset", "rms_length")


def frame_rms(wave: np.ndarray, hop: int) -> np.ndarray:
    """RMS energy per non-overlapping frame of ``hop`` samples (the last, partial frame over what it has).

    Args:
        wave: (samples,) float waveform.
        hop: frame length = hop in samples.

    Returns:
        (ceil(samples / hop),) float32.
    """
    n = wave.shape[0]
    n_frames = -(-n // hop)
    if n_frames == 0:
        return np.zeros(0, dtype=np.float32)
    sq = np.zeros(n_frames * hop, dtype=np.float64)
    sq[:n] = np.square(wave, dtype=np.float64)
    counts = np.full(n_frames, hop, dtype=np.float64)
    counts[-1] = n - (n_frames - 1) * hop
    return np.sqrt(sq.reshape(n_frames, hop).sum(axis=1) / counts).astype(np.float32)


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, byte offset of the data)`` of a C-order .npy file."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        return tuple(shape), np.dtype(dtype), f.tell()


class PositionalArray:
    """Read-only rows of a 1-D .npy file through positional reads (``os.preadv``), never a memory map.

    A mapped page that a process has touched counts in its resident set until the mapping goes, so reading every
    soundscape of a mapped cache once (``pseudo@k``, a training epoch) grew RSS by the bytes read: 3.84 MB per
    soundscape minute, ~37 GB for the competition's 9,726. Positional reads leave those pages in the kernel's page
    cache (shared between processes, reclaimable) and RSS at what the caller keeps.

    Args:
        path: a 1-D .npy file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        shape, self.dtype, self.base = _npy_header(Path(path))
        self.size = int(np.prod(shape, dtype=np.int64))
        self.fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.size

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Elements ``[lo, hi)`` (0 <= lo <= hi <= size) as a fresh (hi - lo,) array of the file's dtype."""
        if not 0 <= lo <= hi <= self.size:
            raise IndexError(f"rows [{lo}, {hi}) outside a file of {self.size}")
        out = np.empty(hi - lo, dtype=self.dtype)
        view, pos = memoryview(out).cast("B"), self.base + lo * self.dtype.itemsize
        while len(view):
            done = os.preadv(self.fd, [view], pos)
            if done == 0:
                raise EOFError(f"short read at byte {pos} of a .npy file of {self.size} rows")
            view, pos = view[done:], pos + done
        return out

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()


class StreamArray:
    """A .npy file of known shape, filled by rows with positional writes (no mapping, so no RSS growth).

    Args:
        path: file to create.
        shape: full array shape; rows are along the first axis.
        dtype: element type.
    """

    def __init__(self, path: str | os.PathLike[str], shape: tuple[int, ...], dtype: Any) -> None:
        # open_memmap writes a valid header and sizes the file; the data then go in through plain pwrite, so
        # the written pages live in the kernel's page cache rather than in this process's resident memory.
        np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(shape[1:])
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.row_shape, dtype=np.int64))
        self.base = _npy_header(Path(path))[2]
        self.fd = os.open(path, os.O_RDWR)

    def write(self, row: int, values: np.ndarray) -> None:
        """Write ``values`` (rows, *row_shape) starting at row ``row``."""
        if tuple(values.shape[1:]) != self.row_shape:
            raise ValueError(f"rows of shape {values.shape[1:]} do not fit an array of rows {self.row_shape}")
        data = memoryview(np.ascontiguousarray(values, dtype=self.dtype)).cast("B")
        pos = self.base + row * self.row_bytes
        while len(data):
            done = os.pwrite(self.fd, data, pos)
            data, pos = data[done:], pos + done

    def close(self) -> None:
        """Flush to disk and close."""
        os.fsync(self.fd)
        os.close(self.fd)


def encode(wave: np.ndarray, scale: float, rms_hop: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Float waveform -> (int16 samples, float32 RMS per frame, number of clipped samples).

    Args:
        wave: (samples,) float at 32 kHz.
        scale: float amplitude of one int16 step.
        rms_hop: samples per RMS frame.
    """
    q = np.rint(wave / scale)
    clipped = int(np.count_nonzero(np.abs(q) > 32767))
    return np.clip(q, -32767, 32767).astype(np.int16), frame_rms(wave, rms_hop), clipped


@dataclass(frozen=True)
class CacheItem:
    """One entry to be cached: its key, kind and number of samples at 32 kHz."""

    key: str
    kind: str
    length: int


class WaveCacheWriter:
    """Writes the cache folder (waves.npy, rms.npy, index.parquet, meta.json) item by item, in a fixed order.

    Sizes are known up front (from the items' lengths), so both arrays are pre-allocated on disk and filled
    streaming: memory stays flat whatever the size of the dataset.

    Args:
        out_dir: folder to create (write it inside :func:`birdclef.io.atomic_path` for atomicity).
        items: every entry, in cache order.
        rms_hop: samples per RMS frame.
        full_scale: float amplitude stored as int16 32767 (values beyond are clipped; resampling can
            overshoot 1.0, hence a default headroom of 2).
    """

    def __init__(self, out_dir: str | os.PathLike[str], items: Sequence[CacheItem], rms_hop: int,
                 full_scale: float = 2.0) -> None:
        for it in items:
            if it.kind not in KINDS:
                raise ValueError(f"cache item {it.key!r}: kind {it.kind!r} not in {KINDS}")
        keys = [it.key for it in items]
        if len(set(keys)) != len(keys):
            dup = pd.Series(keys)[pd.Series(keys).duplicated()].iloc[0]
            raise ValueError(f"cache key {dup!r} appears more than once")
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.rms_hop = int(rms_hop)
        self.scale = float(full_scale) / 32767.0
        lengths = np.array([it.length for it in items], dtype=np.int64)
        rms_lengths = -(-lengths // self.rms_hop)
        self.index = pd.DataFrame({
            "key": keys,
            "kind": [it.kind for it in items],
            "offset": np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(items) else [],
            "length": lengths,
            "rms_offset": np.concatenate([[0], np.cumsum(rms_lengths)[:-1]]).astype(np.int64) if len(items) else [],
            "rms_length": rms_lengths,
        }, columns=list(INDEX_COLUMNS))
        self._row = {k: i for i, k in enumerate(keys)}
        self._written = np.zeros(len(items), dtype=bool)
        self.clipped = 0
        self._waves = StreamArray(self.out / "waves.npy", (int(lengths.sum()),), np.int16)
        self._rms = StreamArray(self.out / "rms.npy", (int(rms_lengths.sum()),), np.float32)

    def write(self, key: str, wave: np.ndarray) -> None:
        """Store ``wave`` ((length,) float32 at 32 kHz, exactly the item's length) under ``key``."""
        self.write_encoded(key, *encode(wave, self.scale, self.rms_hop))

    def write_encoded(self, key: str, q: np.ndarray, rms: np.ndarray, clipped: int = 0) -> None:
        """Store what :func:`encode` made of a waveform (lets decoding workers do the encoding)."""
        i = self._row[key]
        row = self.index.iloc[i]
        if q.shape != (row.length,) or rms.shape != (row.rms_length,):
            raise ValueError(f"cache key {key!r}: expected {row.length} samples, got shape {q.shape}")
        self.clipped += clipped
        self._waves.write(int(row.offset), q)
        self._rms.write(int(row.rms_offset), rms)
        self._written[i] = True

    def close(self, drop_unwritten: bool = True) -> pd.DataFrame:
        """Flush the arrays, write index.parquet and meta.json; returns the index.

        Args:
            drop_unwritten: leave keys never written (failed decodes) out of the index; their space stays zero.
        """
        self._waves.close()
        self._rms.close()
        index = self.index[self._written] if drop_unwritten else self.index
        index.reset_index(drop=True).to_parquet(self.out / "index.parquet", index=False)
        write_json(self.out / "meta.json", {"sample_rate": SAMPLE_RATE, "rms_hop": self.rms_hop,
                                            "scale": self.scale, "dtype": "int16"})
        return index


class WaveCache:
    """Read access to a waveform cache folder.

    The arrays are read by position (:class:`PositionalArray`), opened lazily once per process: an instance can
    be handed to DataLoader workers (fork or spawn) and each worker opens the files itself, sharing the kernel's
    page cache; resident memory stays at what the caller holds, whatever the number of keys read.

    Attributes:
        sample_rate: Hz (32 kHz).
        rms_hop: samples per RMS frame of :meth:`rms`.
        scale: float amplitude of one int16 step.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        meta = read_json(self.root / "meta.json")
        self.sample_rate = int(meta["sample_rate"])
        self.rms_hop = int(meta["rms_hop"])
        self.scale = float(meta["scale"])
        idx = pd.read_parquet(self.root / "index.parquet")
        self._keys: list[str] = idx.key.tolist()
        self._kind: dict[str, str] = dict(zip(idx.key, idx.kind, strict=True))
        self._pos: dict[str, tuple[int, int, int, int]] = {
            k: (int(o), int(n), int(ro), int(rn))
            for k, o, n, ro, rn in zip(idx.key, idx.offset, idx.length, idx.rms_offset, idx.rms_length, strict=True)
        }
        self._waves: PositionalArray | None = None
        self._rms: PositionalArray | None = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_waves=None, _rms=None, _pid=-1)
        return state

    def _arrays(self) -> tuple[PositionalArray, PositionalArray]:
        if self._waves is None or self._pid != os.getpid():
            # A forked child gets its own descriptors (the parent's stay the parent's to close).
            self._waves = PositionalArray(self.root / "waves.npy")
            self._rms = PositionalArray(self.root / "rms.npy")
            self._pid = os.getpid()
        return self._waves, self._rms  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._pos

    def _where(self, key: str) -> tuple[int, int, int, int]:
        try:
            return self._pos[key]
        except KeyError:
            raise KeyError(f"{self.root}: no key {key!r} in the waveform cache") from None

    def keys(self, kind: str | None = None) -> list[str]:
        """Keys in cache order, optionally only those of one kind (see :data:`KINDS`)."""
        if kind is None:
            return list(self._keys)
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        return [k for k in self._keys if self._kind[k] == kind]

    def kind(self, key: str) -> str:
        """The kind of ``key``."""
        self._where(key)
        return self._kind[key]

    def length(self, key: str) -> int:
        """Number of samples stored for ``key``."""
        return self._where(key)[1]

    def read(self, key: str, start: int = 0, length: int | None = None) -> np.ndarray:
        """Samples [start, start + length) of ``key`` as float32; zeros where the request runs past either end.

        Args:
            key: cache key (segment_id or soundscape_id).
            start: first sample (may be negative or past the end: that part is zeros).
            length: number of samples; ``None`` = to the end.

        Returns:
            (length,) float32 waveform at :attr:`sample_rate`.
        """
        offset, n, _, _ = self._where(key)
        if length is None:
            length = max(n - start, 0)
        if length < 0:
            raise ValueError(f"read of {key!r}: negative length {length}")
        lo, hi = max(start, 0), min(start + length, n)
        waves, _ = self._arrays()
        if lo == start and hi - lo == length:
            return waves.read(offset + lo, offset + hi).astype(np.float32) * np.float32(self.scale)
        out = np.zeros(length, dtype=np.float32)
        if hi > lo:
            out[lo - start : hi - start] = waves.read(offset + lo, offset + hi) * np.float32(self.scale)
        return out

    def rms(self, key: str) -> np.ndarray:
        """(ceil(length / rms_hop),) float32 RMS energy per frame of ``key`` (for energy-weighted crops)."""
        _, _, ro, rn = self._where(key)
        _, rms = self._arrays()
        return rms.read(ro, ro + rn)
