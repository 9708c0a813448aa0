"""Training datasets: labelled focal segments and pseudo-labelled soundscape windows, read from the wave cache."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from birdclef import SAMPLE_RATE, WINDOW_SECONDS
from birdclef.train.targets import make_targets

CROP_POLICIES = ("random", "first", "rms")


class WaveSource(Protocol):
    """What the datasets need from the waveform cache (birdclef.features.cache.WaveCache)."""

    rms_hop: int

    def length(self, key: str) -> int: ...

    def read(self, key: str, start: int = 0, length: int | None = None) -> np.ndarray: ...

    def rms(self, key: str) -> np.ndarray: ...


def crop_start(n: int, crop: int, policy: str, rng: np.random.Generator, rms: np.ndarray | None, hop: int) -> int:
    """Pick the first sample of a crop (TECHNIQUES.md S1).

    Args:
        n: samples in the source.
        crop: crop length in samples.
        policy: ``random`` (uniform), ``first`` (start of the file) or ``rms`` (start drawn with probability
            proportional to the RMS energy inside the crop, so crops land on calls rather than gaps).
        rng: random generator.
        rms: (frames,) per-frame RMS of the source, required for ``rms``.
        hop: samples per RMS frame.
    """
    if policy not in CROP_POLICIES:
        raise ValueError(f"crop policy must be one of {CROP_POLICIES}, not {policy!r}")
    if n <= crop or policy == "first":
        return 0
    if policy == "random" or rms is None or len(rms) == 0:
        return int(rng.integers(0, n - crop + 1))
    win = max(1, crop // hop)
    energy = np.convolve(rms.astype(np.float64) ** 2, np.ones(win), mode="valid")
    last = max(1, min(len(energy), (n - crop) // hop + 1))
    energy = energy[:last] + 1e-12
    frame = int(rng.choice(last, p=energy / energy.sum()))
    jitter = int(rng.integers(0, hop))
    return int(min(frame * hop + jitter, n - crop))


def tile_to(wave: np.ndarray, crop: int) -> np.ndarray:
    """Repeat a short clip until it fills ``crop`` samples (a call repeated beats silence padding)."""
    if len(wave) >= crop:
        return wave[:crop]
    if len(wave) == 0:
        return np.zeros(crop, dtype=np.float32)
    reps = -(-crop // len(wave))
    return np.tile(wave, reps)[:crop]


def _is_list(value: Any) -> bool:
    """A list-like table cell (a list, or the array a parquet round trip makes of one); NaN / None are not."""
    return isinstance(value, list | tuple | np.ndarray)


def segment_span(segments: pd.DataFrame, row: int, cache: WaveSource) -> tuple[str, int, int]:
    """(cache key, first sample, samples) of a segment row's audio: a whole cache entry (``segment_id``), or the
    span ``[offset_s, offset_s + end_s - start_s)`` of entry ``cache_key`` when the row has one (D4)."""
    key = segments["cache_key"].iat[row] if "cache_key" in segments else None
    if key is None or pd.isna(key):
        key = segments["segment_id"].iat[row]
        return key, 0, cache.length(key)
    offset = int(round(float(segments["offset_s"].iat[row]) * SAMPLE_RATE))
    length = int(round((float(segments["end_s"].iat[row]) - float(segments["start_s"].iat[row])) * SAMPLE_RATE))
    return str(key), offset, max(0, min(length, cache.length(key) - offset))


class FocalDataset(Dataset):
    """Labelled focal segments (the clean stage's segment table) as fixed-length crops.

    Items are addressed by ``(row, item_seed)`` pairs from :class:`~birdclef.train.sampling.EpochSampler`,
    so every crop is a function of the seed alone.

    A segment is a whole cache entry (key ``segment_id``) unless the table has ``cache_key`` / ``offset_s``
    columns: a row with a ``cache_key`` is the span ``[offset_s, offset_s + end_s - start_s)`` of that cache entry
    (D4: a window of a train soundscape that a foundation-model teacher is confident about).

    Args:
        segments: segment table (birdclef.schema.SEGMENTS columns).
        cache: waveform cache holding every segment under its ``segment_id``.
        classes: the species order of the target vectors.
        crop_s: crop length in seconds.
        policy: crop policy (see :func:`crop_start`).
        secondary_value: target value of secondary labels, or ``"mask"`` to leave them out of the loss.

    Returns (per item): dict with ``wave`` (samples,) float32, ``target`` (C,), ``mask`` (C,), ``weight`` ().
    """

    def __init__(
        self,
        segments: pd.DataFrame,
        cache: WaveSource,
        classes: Sequence[str],
        crop_s: float,
        policy: str = "random",
        secondary_value: float | str = 0.5,
    ) -> None:
        self.df = segments.reset_index(drop=True)
        self.cache = cache
        self.classes = list(classes)
        self.index = {c: i for i, c in enumerate(self.classes)}
        self.crop = int(round(crop_s * SAMPLE_RATE))
        self.policy = policy
        self.secondary_value = secondary_value
        self.primary = np.array([self.index.get(c, -1) for c in self.df["primary_label"]])
        if (self.primary < 0).any():
            bad = self.df.loc[self.primary < 0, "primary_label"].unique()[:5]
            raise ValueError(f"segments have primary labels outside the class list: {list(bad)}")
        self.secondary = [
            [self.index[s] for s in (sec if sec is not None else []) if s in self.index]
            for sec in self.df["secondary_labels"]
        ]
        # D4 segments name the species they say nothing about (train/teacher_data.py); focal rows have none (NaN).
        masked = self.df["masked_labels"] if "masked_labels" in self.df else [None] * len(self.df)
        self.masked = [[self.index[s] for s in m if s in self.index] if _is_list(m) else [] for m in masked]

    def __len__(self) -> int:
        return len(self.df)

    def target(self, row: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(C,) target and (C,) loss mask of one row."""
        target, mask = make_targets([int(self.primary[row])], [self.secondary[row]], len(self.classes),
                                    self.secondary_value)
        if self.masked[row]:
            target[0, self.masked[row]] = 0.0
            mask[0, self.masked[row]] = 0.0
        return target[0], mask[0]

    def _span(self, row: int) -> tuple[str, int, int]:
        return segment_span(self.df, row, self.cache)

    def __getitem__(self, item: tuple[int, int] | int) -> dict[str, Any]:
        row, seed = item if isinstance(item, tuple) else (item, 0)
        key, offset, n = self._span(row)
        rng = np.random.default_rng(seed)
        rms = None
        if self.policy == "rms":
            hop = self.cache.rms_hop
            rms = self.cache.rms(key)[offset // hop : (offset + n) // hop]
        start = crop_start(n, self.crop, self.policy, rng, rms, self.cache.rms_hop)
        wave = tile_to(self.cache.read(key, offset + start, min(self.crop, n)), self.crop)
        target, mask = self.target(row)
        return {
            "wave": torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)),
            "target": target,
            "mask": mask,
            "weight": torch.tensor(float(self.df.at[row, "weight"]), dtype=torch.float32),
        }


class PseudoBank:
    """Pseudo-labelled soundscape windows to mix into training batches (TECHNIQUES.md P1, P3, P4, P8).

    A crop of ``crop_s`` seconds covers ``span = crop_s / 5`` consecutive 5-s windows of one soundscape; its label is
    the max over those windows. A crop may start at a kept window only if the next ``span - 1`` windows of the same
    file are kept too and follow it without a gap in time (thresholds and ``drop_bottom`` remove windows, and a crop
    across a removed window would read audio from one span and labels from another).

    A label cell that is NaN is unknown (P11's uncertain middle, a species a foundation-model teacher does not
    cover): it is left out of the loss through the mask, never trained towards 0. A crop's cell is unknown when any
    of its windows is unknown there, unless a known window already says 1 (the max is then known).

    Args:
        labels: the pseudo stage's window table: ``soundscape_id``, ``start_s``, ``end_s``, ``weight`` and one
            probability column per class in ``classes`` (NaN: unknown).
        sampler_weights: ``soundscape_id`` -> sampler weight (P3: sum over species of the max over time). The
            weight is the soundscape's: a soundscape is drawn with probability weight / sum of weights, whatever
            its number of usable crops, then a crop uniformly within it. Without positive weights every soundscape
            is equally likely.
        cache: waveform cache holding the train soundscapes under their ``soundscape_id``.
        classes: species order of the label vectors.
        crop_s: crop length in seconds, a whole number of 5-s windows.
    """

    def __init__(
        self,
        labels: pd.DataFrame,
        sampler_weights: dict[str, float],
        cache: WaveSource,
        classes: Sequence[str],
        crop_s: float,
    ) -> None:
        missing = [c for c in classes if c not in labels.columns]
        if missing:
            raise ValueError(f"pseudo labels lack class column(s) {missing[:5]}")
        span = crop_s / WINDOW_SECONDS
        if span < 1 or abs(span - round(span)) > 1e-9:
            raise ValueError(
                f"train.crop_s = {crop_s} s: pseudo-labelled crops must be a whole number of "
                f"{WINDOW_SECONDS}-s windows (5, 10, 20, ...)"
            )
        self.cache = cache
        self.crop = int(round(crop_s * SAMPLE_RATE))
        self.span = int(round(span))
        labels = labels.sort_values(["soundscape_id", "start_s"]).reset_index(drop=True)
        self.ids = labels["soundscape_id"].to_numpy()
        self.starts = np.round(labels["start_s"].to_numpy() * SAMPLE_RATE).astype(np.int64)
        probs = labels[list(classes)].to_numpy(dtype=np.float32)
        self.loss_weight = labels["weight"].to_numpy(dtype=np.float32) if "weight" in labels else None
        # Window i starts a crop only if windows i + j (j < span) are of the same file and exactly j windows later.
        step = WINDOW_SECONDS * SAMPLE_RATE
        n = len(labels)
        ok = np.ones(n, dtype=bool)
        for j in range(1, self.span):
            nxt = np.zeros(n, dtype=bool)
            if n > j:
                same_file = self.ids[j:] == self.ids[: n - j]
                nxt[: n - j] = same_file & (self.starts[j:] - self.starts[: n - j] == j * step)
            ok &= nxt
        self.valid = np.flatnonzero(ok)
        if len(self.valid) == 0:
            raise ValueError(
                f"no pseudo-labelled crop of {crop_s} s fits: no soundscape keeps {self.span} consecutive windows"
            )
        self.labels, self.known = self._crop_labels(probs)
        # P3 per soundscape: crop weight = soundscape weight / its number of crops.
        crop_ids = self.ids[self.valid]
        uniq, inverse, counts = np.unique(crop_ids, return_inverse=True, return_counts=True)
        w = np.array([max(float(sampler_weights.get(s, 0.0)), 0.0) for s in uniq])
        if w.sum() <= 0:
            w = np.ones(len(uniq))
        per_crop = w[inverse] / counts[inverse]
        self.p = per_crop / per_crop.sum()
        filled = np.where(self.known, self.labels, -1.0)
        self.argmax = filled.argmax(axis=1)
        self.maxp = filled.max(axis=1)

    def _crop_labels(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(crops, C) labels (max over the crop's windows) and (crops, C) known-cell mask of every valid start."""
        stack = np.stack([probs[self.valid + j] for j in range(self.span)])  # (span, crops, C)
        unknown = np.isnan(stack)
        best = np.where(unknown, -np.inf, stack).max(axis=0)
        known = ~unknown.any(axis=0) | (best >= 1.0)
        return np.where(known, best, 0.0).astype(np.float32), known

    def __len__(self) -> int:
        return len(self.valid)

    def _crop(self, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Crop number ``c`` (an index into ``valid``): wave (samples,), label (C,), known mask (C,), loss weight."""
        i = int(self.valid[c])
        wave = tile_to(self.cache.read(self.ids[i], int(self.starts[i]), self.crop), self.crop)
        w = float(self.loss_weight[i : i + self.span].mean()) if self.loss_weight is not None else 1.0
        return wave, self.labels[c], self.known[c].astype(np.float32), w

    def sample(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw ``n`` crops by sampler weight.

        Returns:
            wave (n, samples), labels (n, C), known-cell mask (n, C), loss weights (n,).
        """
        picks = rng.choice(len(self.valid), size=n, p=self.p)
        return self._stack([self._crop(int(c)) for c in picks])

    def sample_class(
        self, classes: Sequence[int], min_prob: float, rng: np.random.Generator
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, float] | None]:
        """For each class index, a crop whose label argmax is that class with max prob >= ``min_prob`` (or None)."""
        out: list[tuple[np.ndarray, np.ndarray, np.ndarray, float] | None] = []
        for c in classes:
            pool = np.flatnonzero((self.argmax == c) & (self.maxp >= min_prob))
            out.append(self._crop(int(rng.choice(pool))) if len(pool) else None)
        return out

    @staticmethod
    def _stack(
        items: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        waves = torch.from_numpy(np.stack([i[0] for i in items]).astype(np.float32))
        labels = torch.from_numpy(np.stack([i[1] for i in items]).astype(np.float32))
        known = torch.from_numpy(np.stack([i[2] for i in items]).astype(np.float32))
        weights = torch.tensor([i[3] for i in items], dtype=torch.float32)
        return waves, labels, known, weights
