"""Column contracts of the tables that stages hand to each other (parquet files under build/)."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

RECORDINGS = (
    "recording_id",  # train.csv filename, e.g. "amerob/XC123.ogg" (unique)
    "path",  # audio path relative to the data root, e.g. "train_audio/amerob/XC123.ogg"
    "source",  # "train_audio" or the name of an extra source
    "primary_label",
    "secondary_labels",  # list[str], labels in the taxonomy
    "class_name",  # Aves | Amphibia | Insecta | Mammalia
    "rating",  # float 0-5 (0 = none)
    "collection",
    "author",
    "latitude",
    "longitude",
    "duration_s",  # float seconds
    "sample_rate",  # int Hz of the file as stored
    "channels",  # int
    "fold",  # int in [0, n_folds)
)
SOUNDSCAPES = ("soundscape_id", "path", "split", "duration_s", "sample_rate", "channels")
TAXONOMY = ("primary_label", "inat_taxon_id", "scientific_name", "common_name", "class_name")
SEGMENTS = (
    "segment_id",  # unique key of one piece of audio, also the key of the waveform cache
    "recording_id",
    "path",
    "start_s",  # seconds from the start of the source file
    "end_s",
    "primary_label",
    "secondary_labels",
    "class_name",
    "rating",
    "fold",
    "weight",  # sample weight (float, 1.0 by default)
    "copies",  # int >= 1: times the sampler sees this segment per epoch (rare-class duplication)
)
VOICE_SPANS = ("recording_id", "start_s", "end_s")


def require_columns(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Raise a ValueError naming ``what`` and every missing column."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)}; has {', '.join(map(str, df.columns))}")
