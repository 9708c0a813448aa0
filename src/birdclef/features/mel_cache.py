"""Mel caches: the MelFrontEnd image of every waveform-cache key, stored frames-first in one memory-mapped array."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from birdclef.features.cache import StreamArray, WaveCache
from birdclef.features.frontend import MelConfig, MelFrontEnd
from birdclef.io import read_json, write_json


def build_mel_cache(
    waves: WaveCache,
    cfg: MelConfig | dict[str, Any],
    out_dir: str | os.PathLike[str],
    name: str,
    dtype: str = "float16",
    enabled: bool = True,
) -> dict[str, Any]:
    """Write ``out_dir`` (mel.npy, index.parquet, meta.json) for every key of ``waves``.

    Each key's whole waveform goes through :class:`MelFrontEnd` in one call, so the cache holds exactly what
    the module gives for that audio (per-clip normalisation included). ``mel.npy`` has shape
    (total_frames, channels, n_mels) so that a time crop is one contiguous read; the index gives each key's
    ``offset`` and ``length`` in frames.

    Args:
        waves: the waveform cache.
        cfg: the mel config (``mels.<name>`` in params).
        out_dir: folder to create.
        name: the mel config's name (recorded in meta.json).
        dtype: ``float16`` or ``float32``.
        enabled: False writes only meta.json (``enabled: false``) and an empty index: the cheap marker
            output when ``features.cache_mel`` is off.

    Returns:
        Small metrics dict (keys, frames, MB).
    """
    cfg = cfg if isinstance(cfg, MelConfig) else MelConfig.from_dict(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keys = waves.keys() if enabled else []
    frames = np.array([cfg.frames(waves.length(k)) for k in keys], dtype=np.int64)
    index = pd.DataFrame({
        "key": keys,
        "kind": [waves.kind(k) for k in keys],
        "offset": np.concatenate([[0], np.cumsum(frames)[:-1]]).astype(np.int64) if len(keys) else [],
        "length": frames,
    }, columns=["key", "kind", "offset", "length"])
    if enabled:
        front = MelFrontEnd(cfg).eval()
        arr = StreamArray(out / "mel.npy", (int(frames.sum()), cfg.channels, cfg.n_mels), dtype)
        with torch.inference_mode():
            for key, offset in tqdm(list(zip(keys, index.offset, strict=True)), desc=f"mels {name}", unit="key",
                                    mininterval=1.0, disable=None):
                image = front(torch.from_numpy(waves.read(key))[None])[0]  # (channels, n_mels, frames)
                arr.write(int(offset), image.permute(2, 0, 1).numpy())
        arr.close()
    index.to_parquet(out / "index.parquet", index=False)
    write_json(out / "meta.json", {"name": name, "enabled": bool(enabled), "dtype": dtype, "config": cfg.to_dict(),
                                   "sample_rate": waves.sample_rate})
    return {"keys": len(keys), "frames": int(frames.sum()),
            "mb": round((out / "mel.npy").stat().st_size / 2**20, 2) if enabled else 0.0}


class MelCache:
    """Read access to a mel cache folder; memory-maps lazily once per process (safe in DataLoader workers).

    Attributes:
        config: the :class:`MelConfig` the cache was built with.
        name: the mel config's name.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        meta = read_json(self.root / "meta.json")
        if not meta.get("enabled", False):
            raise ValueError(f"{self.root}: mel cache {meta.get('name')!r} was not built (features.cache_mel is "
                             "false); compute mels in the model instead")
        self.name = meta["name"]
        self.config = MelConfig.from_dict(meta["config"])
        idx = pd.read_parquet(self.root / "index.parquet")
        self._keys: list[str] = idx.key.tolist()
        self._pos = {k: (int(o), int(n)) for k, o, n in zip(idx.key, idx.offset, idx.length, strict=True)}
        self._mel: np.ndarray | None = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_mel=None, _pid=-1)
        return state

    def _array(self) -> np.ndarray:
        if self._mel is None or self._pid != os.getpid():
            self._mel = np.load(self.root / "mel.npy", mmap_mode="r")
            self._pid = os.getpid()
        return self._mel

    def keys(self) -> list[str]:
        """Keys in cache order."""
        return list(self._keys)

    def frames(self, key: str) -> int:
        """Number of frames stored for ``key``."""
        return self._where(key)[1]

    def _where(self, key: str) -> tuple[int, int]:
        try:
            return self._pos[key]
        except KeyError:
            raise KeyError(f"{self.root}: no key {key!r} in the mel cache") from None

    def read(self, key: str, start: int = 0, length: int | None = None) -> np.ndarray:
        """Frames [start, start + length) of ``key`` as float32 (channels, n_mels, length); zeros past the ends."""
        offset, n = self._where(key)
        if length is None:
            length = max(n - start, 0)
        lo, hi = max(start, 0), min(start + length, n)
        out = np.zeros((length, self.config.channels, self.config.n_mels), dtype=np.float32)
        if hi > lo:
            out[lo - start : hi - start] = self._array()[offset + lo : offset + hi]
        return out.transpose(1, 2, 0)
