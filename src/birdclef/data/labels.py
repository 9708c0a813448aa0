"""Labelled soundscapes: normalise test_labels.csv, val_labels.csv and the synthetic train-soundscape truth into one
table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

LABEL_FILES = {
    "test": "test_labels.csv",  # the local leaderboard: scored once, at the end of the pipeline
    "val": "val_labels.csv",  # labelled validation soundscapes: per-epoch scores, ensemble weights, every choice
    "train": "synth_truth/train_soundscape_labels.csv",  # SynthCLEF only: scores pseudo labels, never trains
}


def soundscape_labels(data_root: Path, species: list[str]) -> pd.DataFrame:
    """All labelled soundscape windows: ``row_id``, ``soundscape_id``, ``split`` then one 0/1 column a species.

    The competition has no such labels; the table is then empty (the columns are still there), and the stages
    that use it skip their soundscape scores.

    Raises:
        ValueError: a label file without ``row_id``, with species outside the taxonomy, or with non-0/1 values,
            naming the file.
    """
    frames = []
    for split, name in LABEL_FILES.items():
        path = data_root / name
        if not path.exists():
            continue
        df = pd.read_csv(path)
        if "row_id" not in df.columns:
            raise ValueError(f"{path}: no row_id column")
        unknown = [c for c in df.columns if c != "row_id" and c not in species]
        if unknown:
            raise ValueError(f"{path}: column(s) not in the taxonomy: {', '.join(unknown[:10])}")
        body = df.reindex(columns=species, fill_value=0)
        bad = ~body.isin([0, 1]).all(axis=1)
        if bad.any():
            raise ValueError(f"{path}: row {int(bad.idxmax()) + 2} has a value other than 0 or 1")
        body = body.astype("int8")
        body.insert(0, "split", split)
        body.insert(0, "soundscape_id", df["row_id"].str.rsplit("_", n=1).str[0])
        body.insert(0, "row_id", df["row_id"])
        frames.append(body)
    if not frames:
        return pd.DataFrame(columns=["row_id", "soundscape_id", "split", *species])
    return pd.concat(frames, ignore_index=True)
