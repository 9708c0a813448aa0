"""Tests for the labelled-soundscape table."""

import pandas as pd
import pytest

from birdclef.data.labels import soundscape_labels

SPECIES = ["a", "b", "c"]


def test_reads_test_and_train_truth_with_split(tmp_path):
    pd.DataFrame({"row_id": ["s1_5", "s1_10"], "a": [1, 0], "c": [0, 1]}).to_csv(
        tmp_path / "test_labels.csv", index=False
    )
    (tmp_path / "synth_truth").mkdir()
    pd.DataFrame({"row_id": ["t_5"], "b": [1]}).to_csv(
        tmp_path / "synth_truth/train_soundscape_labels.csv", index=False
    )
    df = soundscape_labels(tmp_path, SPECIES)
    assert list(df.columns) == ["row_id", "soundscape_id", "split", *SPECIES]
    assert df["split"].tolist() == ["test", "test", "train"]
    assert df["soundscape_id"].tolist() == ["s1", "s1", "t"]
    assert df[SPECIES].to_numpy().tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]


def test_no_label_files_gives_an_empty_table(tmp_path):
    df = soundscape_labels(tmp_path, SPECIES)
    assert df.empty and list(df.columns) == ["row_id", "soundscape_id", "split", *SPECIES]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ({"a": [1]}, "no row_id"),
        ({"row_id": ["s_5"], "zzz": [1]}, "not in the taxonomy"),
        ({"row_id": ["s_5"], "a": [0.5]}, "other than 0 or 1"),
    ],
)
def test_bad_label_files_name_the_file(tmp_path, frame, message):
    pd.DataFrame(frame).to_csv(tmp_path / "test_labels.csv", index=False)
    with pytest.raises(ValueError, match=message) as err:
        soundscape_labels(tmp_path, SPECIES)
    assert "test_labels.csv" in str(err.value)
