"""Per-epoch validation: macro AUC on held-out focal segments and on labelled soundscapes (the domain gap)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from birdclef import SAMPLE_RATE, WINDOW_SECONDS
from birdclef.infer.windows import predict_file
from birdclef.metric import macro_auc  # the one scoring summary; imported from here by older callers
from birdclef.train.datasets import WaveSource, tile_to


def model_predictor(model: nn.Module, device: torch.device | str = "cpu"):
    """Wrap a model in eval mode as a windows.Predictor: (B, samples) numpy -> {"clip", "frame"} probabilities."""

    def predict(wave: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            out = model(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)).to(device))
        return {k: torch.sigmoid(out[k]).float().cpu().numpy() for k in ("clip", "frame")}

    return predict


class Evaluator:
    """Scores a model on held-out focal segments and on labelled soundscapes.

    Args:
        classes: the model's class order.
        cache: waveform cache with the segments and soundscapes.
        val_segments: held-out segment rows (``segment_id``, ``primary_label``); each is scored on its first
            ``crop_s`` seconds (short clips repeated) with the clip output.
        soundscape_labels: solution rows (``row_id`` = ``<soundscape_id>_<end s>`` + 0/1 species columns) for
            soundscapes that are in the cache; scored per 5-s window through ``predict_file`` with chunks of
            ``crop_s`` (the length the model trains on: a 20-s model sees 20 s of context, the centre windows
            scored) every 5 s, both ends padded.
        crop_s: seconds per focal validation clip and per soundscape chunk.
        taxa: label -> taxon class name, for per-class summaries.
        batch_size: clips per forward pass.
    """

    def __init__(
        self,
        classes: Sequence[str],
        cache: WaveSource,
        val_segments: pd.DataFrame | None,
        soundscape_labels: pd.DataFrame | None,
        crop_s: float = WINDOW_SECONDS,
        taxa: Mapping[str, str] | None = None,
        batch_size: int = 32,
    ) -> None:
        self.classes = list(classes)
        self.cache = cache
        self.taxa = dict(taxa or {})
        self.batch_size = batch_size
        self.crop = int(round(crop_s * SAMPLE_RATE))
        self.chunk_s = float(crop_s)
        self.val = val_segments.reset_index(drop=True) if val_segments is not None and len(val_segments) else None
        self.solution = None
        if soundscape_labels is not None and len(soundscape_labels):
            cols = ["row_id"] + [c for c in self.classes if c in soundscape_labels.columns]
            self.solution = soundscape_labels[cols].reset_index(drop=True)
            self.soundscapes = sorted({r.rsplit("_", 1)[0] for r in self.solution["row_id"]})

    def focal_predictions(self, model: nn.Module, device: torch.device | str = "cpu") -> pd.DataFrame:
        """(n_val, 1 + C) frame: ``segment_id`` then one probability column per class."""
        predict = model_predictor(model, device)
        probs = []
        for lo in range(0, len(self.val), self.batch_size):
            keys = self.val["segment_id"].iloc[lo : lo + self.batch_size]
            waves = np.stack([tile_to(self.cache.read(k, 0, self.crop), self.crop) for k in keys])
            probs.append(predict(waves)["clip"])
        out = pd.DataFrame(np.concatenate(probs), columns=self.classes)
        out.insert(0, "segment_id", self.val["segment_id"].to_numpy())
        return out

    def soundscape_predictions(self, model: nn.Module, device: torch.device | str = "cpu") -> pd.DataFrame:
        """Submission-format frame for the labelled soundscapes: ``row_id`` + one column per class."""
        predict = model_predictor(model, device)
        rows = []
        for sid in self.soundscapes:
            wave = self.cache.read(sid)
            windows, _ = predict_file(predict, wave, chunk_s=max(self.chunk_s, WINDOW_SECONDS),
                                      stride_s=WINDOW_SECONDS, batch_size=self.batch_size)
            frame = pd.DataFrame(windows, columns=self.classes)
            frame.insert(0, "row_id", [f"{sid}_{WINDOW_SECONDS * (i + 1)}" for i in range(len(windows))])
            rows.append(frame)
        return pd.concat(rows, ignore_index=True)

    def focal_solution(self) -> pd.DataFrame:
        """One-hot primary labels of the held-out segments, with a ``row_id`` column."""
        sol = pd.DataFrame(0, index=range(len(self.val)), columns=self.classes, dtype=np.int64)
        for i, label in enumerate(self.val["primary_label"]):
            sol.at[i, label] = 1
        sol.insert(0, "row_id", self.val["segment_id"].to_numpy())
        return sol

    def __call__(self, model: nn.Module, epoch: int) -> dict[str, float]:
        """Metrics of one epoch: ``val_auc`` (focal, held-out fold) and ``soundscape_auc`` where labels exist."""
        device = next(model.parameters()).device
        out: dict[str, float] = {}
        if self.val is not None:
            pred = self.focal_predictions(model, device).rename(columns={"segment_id": "row_id"})
            out["val_auc"] = macro_auc(self.focal_solution(), pred)["auc"]
        if self.solution is not None:
            pred = self.soundscape_predictions(model, device)
            out.update({f"soundscape_{k}": v for k, v in macro_auc(self.solution, pred, self.taxa).items()})
        return out
