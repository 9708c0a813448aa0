"""Human voice clips cut out by the clean stage, reused as background noise in training (TECHNIQUES.md A10)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from birdclef.audio import AudioError, load_audio


def voice_clips(
    data_root: Path, spans: pd.DataFrame, max_clips: int = 200, min_s: float = 0.5
) -> list[np.ndarray]:
    """Decode up to ``max_clips`` voiced spans (``recording_id``, ``start_s``, ``end_s``; the id is the path
    under ``train_audio/``) as 32 kHz mono clips. Unreadable spans are skipped: voice noise is optional."""
    clips: list[np.ndarray] = []
    spans = spans[(spans["end_s"] - spans["start_s"]) >= min_s].sort_values(["recording_id", "start_s"])
    for row in spans.head(max_clips).itertuples(index=False):
        try:
            clip = load_audio(data_root / "train_audio" / row.recording_id, row.start_s, row.end_s)
        except AudioError:
            continue
        if len(clip):
            clips.append(clip)
    return clips
