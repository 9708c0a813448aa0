"""The mel front end in numpy and scipy for inference: waveform batch -> normalised log-mel images.

Only numpy and the standard library are imported at module level (scipy and threadpoolctl are used when
installed), so the Kaggle bundle copies this file next to its standalone script.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

PathLike = str | os.PathLike[str]


class NumpyFrontEnd:
    """The mel front end in numpy (FFT-based): waveform (B, samples) -> (B, channels, n_mels, frames) float32.

    The same numbers as ``birdclef.features.frontend.MelFrontEnd`` (centred reflect-padded STFT, power 2, Slaney
    mel filterbank, dB, per-clip normalisation, optional deltas) up to float rounding, from the window and
    filterbank the export stage saved (``frontend_<mel>.npz``), so neither torch nor torchaudio is needed. An FFT
    costs O(n_fft log n_fft) per frame where the ONNX graph's Conv-DFT costs O(n_fft^2): on CPU this is the
    faster front end, and the export stage checks its parity against torch before recording it.

    With ``threads`` > 1 the rows of a batch are split over that many threads, each running the whole chain
    (framing, FFT, power, mel projection, dB) on its rows: numpy and scipy release the GIL in all of them, and
    working on a few rows at a time keeps the buffers in cache. This was twice as fast as one chain whose FFT
    alone is multi-threaded (60-s soundscape, n_fft 2048: about 25 against 53 ms on 2 cores). BLAS runs
    single-threaded inside the front end (with threadpoolctl installed): OpenBLAS's own threads would compete
    with the row threads, or with the other worker processes of the infer stage, for the same cores.
    """

    def __init__(self, config: dict[str, Any], window: np.ndarray, fb: np.ndarray, threads: int = 1) -> None:
        self.cfg = dict(config)
        self.n_fft, self.hop = int(config["n_fft"]), int(config["hop_length"])
        self.window = np.asarray(window, dtype=np.float32)  # (n_fft,)
        self.fb = np.asarray(fb, dtype=np.float32)  # (n_fft // 2 + 1, n_mels)
        self.threads = max(1, int(threads))
        self._pool = ProcessLocalPool(self.threads, "mel")

    @classmethod
    def load(cls, path: PathLike, threads: int = 1) -> NumpyFrontEnd:
        """The front end saved by ``save``; ``threads``: threads over the rows of a batch."""
        with np.load(path) as z:
            return cls(json.loads(str(z["config"])), z["window"], z["fb"], threads)

    def save(self, path: PathLike) -> None:
        with open(path, "wb") as f:
            np.savez(f, config=np.array(json.dumps(self.cfg)), window=self.window, fb=self.fb)

    def __call__(self, wave: np.ndarray) -> list[np.ndarray]:
        """``[mel]`` for a (B, samples) batch (a list, like an ONNX graph's outputs)."""
        x = np.asarray(wave, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"front end expects (batch, samples), got shape {x.shape}")
        groups = min(self.threads, x.shape[0])
        with _single_threaded_blas():
            if groups <= 1:
                return [self._rows(x, fft_workers=self.threads)]
            parts = self._pool.get().map(self._rows, np.array_split(x, groups))
            return [np.concatenate(list(parts))]

    def _rows(self, x: np.ndarray, fft_workers: int = 1) -> np.ndarray:
        # The whole chain for some rows (each row is independent): (b, samples) -> (b, channels, n_mels, frames).
        c = self.cfg
        if c.get("absmax"):
            x = x / np.maximum(np.abs(x).max(axis=1, keepdims=True), 1e-8)
        half = self.n_fft // 2
        padded = np.pad(x, ((0, 0), (half, half)), mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(padded, self.n_fft, axis=1)[:, :: self.hop]
        power = self._power(frames * self.window, fft_workers)  # (b, frames, bins)
        db = 10.0 * np.log10(np.maximum(np.swapaxes(power @ self.fb, 1, 2), 1e-10))  # (b, n_mels, frames)
        top = float(c.get("top_db", 80.0))
        peak = db.max(axis=(1, 2), keepdims=True)
        norm = c.get("norm", "ref_max")
        if norm == "ref_max":
            out = (np.maximum(db - peak, -top) + top) / top
        elif norm == "minmax":
            db = np.maximum(db, peak - top)
            low = db.min(axis=(1, 2), keepdims=True)
            out = (db - low) / np.maximum(peak - low, 1e-6)
        else:
            out = np.maximum(db, peak - top)
        out = out[:, None].astype(np.float32)
        if c.get("deltas"):
            d1 = _deltas(out)
            out = np.concatenate([out, d1, _deltas(d1)], axis=1)
        return out

    @staticmethod
    def _power(frames: np.ndarray, workers: int) -> np.ndarray:
        # |rfft|^2 in float32: (b, frames, n_fft) -> (b, frames, bins). The FFT dominates the front end's time.
        scipy_fft = _scipy_fft()
        if scipy_fft is not None:
            spec = scipy_fft.rfft(frames, axis=-1, workers=workers, overwrite_x=True)
        else:
            spec = np.fft.rfft(frames, axis=-1).astype(np.complex64, copy=False)
        power = np.abs(spec)
        return np.square(power, out=power)


class ProcessLocalPool:
    """A thread pool made on first use in each process: a forked child (an infer worker) gets its own instead of
    the parent's, whose threads do not exist in the child."""

    def __init__(self, workers: int, name: str) -> None:
        self.workers, self.name = int(workers), name
        self._pool: tuple[int, ThreadPoolExecutor] | None = None  # (owner pid, pool)

    def get(self) -> ThreadPoolExecutor:
        if self._pool is None or self._pool[0] != os.getpid():
            self._pool = (os.getpid(), ThreadPoolExecutor(self.workers, thread_name_prefix=self.name))
        return self._pool[1]


@functools.cache
def _scipy_fft() -> Any:
    """``scipy.fft`` when installed, else None (imported on first use, so the bundle needs only numpy).

    scipy's pocketfft runs single-precision transforms: about 5x numpy.fft on a 60-s soundscape here; an
    image without scipy still runs, on numpy.fft.
    """
    try:
        import scipy.fft
    except ImportError:
        return None
    return scipy.fft


@functools.cache
def _blas_controller() -> Any:
    # threadpoolctl's view of the BLAS libraries loaded so far (numpy's is: this module imports numpy), or None.
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


def _single_threaded_blas() -> contextlib.AbstractContextManager[Any]:
    """A context in which numpy's BLAS uses one thread (a no-op without threadpoolctl)."""
    controller = _blas_controller()
    return contextlib.nullcontext() if controller is None else controller.limit(limits=1, user_api="blas")


def _deltas(x: np.ndarray) -> np.ndarray:
    # torchaudio.functional.compute_deltas with win_length 5: replicate-padded, (sum_n n (x[t+n] - x[t-n])) / 10.
    p = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(2, 2)], mode="edge")
    t = x.shape[-1]
    return ((p[..., 3 : 3 + t] - p[..., 1 : 1 + t]) + 2 * (p[..., 4 : 4 + t] - p[..., 0:t])) / 10.0
