"""Tests of birdclef.data.manifest: the manifest of a quirky layout, every bad input listed or quarantined."""

import pandas as pd
import pytest
from test_data_fixture import (
    SUBMISSION_ORDER,
    append_train_rows,
    make_competition_layout,
    train_row,
    truncate_file,
    write_audio,
    write_csv,
)

from birdclef import schema
from birdclef.data.layout import TableError
from birdclef.data.manifest import build_manifest, read_manifest, write_manifest
from birdclef.data.params import AcquireParams
from birdclef.data.problems import BadInputError


def params(**kw) -> AcquireParams:
    return AcquireParams.from_dict({"n_folds": 3, **kw})


@pytest.fixture
def layout(tmp_path):
    return make_competition_layout(tmp_path / "data")


def test_manifest_of_a_quirky_layout_round_trips(layout, tmp_path):
    m = build_manifest(layout, params(), progress=False)
    rec = m.recordings.set_index("recording_id")
    assert list(m.recordings.columns) == list(schema.RECORDINGS) and len(rec) == 8
    assert rec.loc["amerob/XC2.ogg", "secondary_labels"] == ["bkcdon", "frog1"]
    assert rec.loc["bkcdon/XC5.mp3", "secondary_labels"] == ["amerob", "frog1"]  # "['amerob' 'frog1']"
    assert rec.loc["amerob/iNat3.ogg", "secondary_labels"] == []  # "['']"
    assert tuple(rec.loc["bkcdon/XC5.mp3", ["sample_rate", "channels"]]) == (44100, 2)
    assert rec.loc["1139490/CSA6.ogg", "class_name"] == "Insecta"
    assert rec.loc["frog1/XC7.wav", "path"] == "train_audio/frog1/XC7.wav"
    assert m.taxonomy["primary_label"].tolist() == SUBMISSION_ORDER
    assert m.stats["species_without_recordings"] == 1 and m.stats["quarantined_items"] == 0
    assert m.soundscapes["split"].tolist() == ["train", "train", "test"]
    for label, group in m.recordings.groupby("primary_label"):
        assert group["fold"].nunique() == min(len(group), 3), label

    write_manifest(m, tmp_path / "manifest")
    back = read_manifest(tmp_path / "manifest")
    pd.testing.assert_frame_equal(back["recordings"], m.recordings, check_dtype=False)
    assert back["recordings"]["secondary_labels"].iloc[1] == ["bkcdon", "frog1"]
    assert {c: str(t) for c, t in back["recordings"].dtypes.items() if c in ("rating", "sample_rate", "fold")} == \
        {"rating": "float64", "sample_rate": "int64", "fold": "int64"}
    assert list(back["soundscapes"].columns) == list(schema.SOUNDSCAPES)
    assert list(back["taxonomy"].columns) == list(schema.TAXONOMY) and back["quarantine"].empty


def _break(root):
    """Add one instance of every kind of bad input; return the (kind, row, file) triples expected."""
    write_audio(root / "train_audio/amerob/XC90.ogg", seed=90)
    write_audio(root / "train_audio/amerob/XC91.ogg", seed=91)
    (root / "train_audio/amerob/XC92.ogg").write_bytes(b"")
    (root / "train_audio/amerob/XC93.ogg").write_text("<html>403 Forbidden</html>")
    truncate_file(root / "train_audio/amerob/XC1.ogg")
    truncate_file(root / "train_soundscapes/H02_20230420_080000.ogg")
    write_audio(root / "train_audio/zzzunk/XC94.ogg", seed=94)
    append_train_rows(root, [
        train_row("zzzunk/XC94.ogg"),  # line 10: unknown primary label
        train_row("amerob/XC90.ogg", secondary="['bkcdon', 'nosuch']"),  # 11: unknown secondary label
        train_row("bkcdon/XC4.ogg"),  # 12: repeats line 5 (which stays)
        train_row("amerob/XC99.ogg"),  # 13: missing file
        ["amerob", "[]", "call"],  # 14: wrong field count
        train_row("amerob/XC91.ogg", rating="9"),  # 15: rating out of range
        train_row("amerob/XC92.ogg"),  # 16: empty file
        train_row("amerob/XC93.ogg"),  # 17: unreadable
    ])
    a = "train_audio/amerob/"
    return {("truncated", "train.csv:2", a + "XC1.ogg"),
            ("unknown_label", "train.csv:10", "train_audio/zzzunk/XC94.ogg"),
            ("unknown_label", "train.csv:11", a + "XC90.ogg"),
            ("duplicate", "train.csv:12", "train_audio/bkcdon/XC4.ogg"),
            ("missing", "train.csv:13", a + "XC99.ogg"), ("malformed", "train.csv:14", ""),
            ("malformed", "train.csv:15", ""), ("empty", "train.csv:16", a + "XC92.ogg"),
            ("unreadable", "train.csv:17", a + "XC93.ogg"),
            ("truncated", "", "train_soundscapes/H02_20230420_080000.ogg")}


def test_fail_lists_every_bad_row_and_file(layout):
    expected = _break(layout)
    with pytest.raises(BadInputError) as err:
        build_manifest(layout, params(), progress=False)
    found = {(p.kind, p.row, p.file) for p in err.value.problems}
    assert found == expected
    assert "'nosuch'" in str(err.value) and "train.csv:14: malformed: 3 fields" in str(err.value)


def test_skip_quarantines_and_counts(layout):
    _break(layout)
    m = build_manifest(layout, params(on_bad="skip"), progress=False)
    assert sorted(m.recordings["recording_id"]) == sorted(
        ["amerob/XC2.ogg", "amerob/iNat3.ogg", "bkcdon/XC4.ogg", "bkcdon/XC5.mp3", "1139490/CSA6.ogg",
         "frog1/XC7.wav", "frog1/XC8.ogg"])
    assert m.soundscapes["soundscape_id"].tolist() == ["H02_20230420_074000", "soundscape_8123"]
    assert m.quarantine["kind"].tolist()[:2] == ["malformed", "malformed"]  # grouped by reason
    assert m.stats["quarantined_truncated"] == 2 and m.stats["quarantined_unknown_label"] == 2
    assert m.stats["quarantined_items"] == len(m.quarantine) == 10
    assert m.stats["csv_rows"] == 16


def test_filters_cap_and_folds(layout):
    m = build_manifest(layout, params(min_rating=3.0), progress=False)
    assert set(m.recordings["rating"]) == {0.0, 3.0, 3.5, 4.5, 5.0} and m.stats["filtered_rating"] == 2
    m = build_manifest(layout, params(class_filter=["Aves", "Insecta"]), progress=False)
    assert set(m.recordings["class_name"]) == {"Aves", "Insecta"} and m.stats["filtered_class"] == 2
    m = build_manifest(layout, params(max_files_per_class=1, seed=4), progress=False)
    assert m.recordings.groupby("primary_label")["rating"].max().to_dict() == \
        {"1139490": 0.0, "amerob": 4.5, "bkcdon": 5.0, "frog1": 3.5}
    assert m.stats["capped"] == 4
    with pytest.raises(ValueError, match="not among the taxonomy classes"):
        build_manifest(layout, params(class_filter=["Reptilia"]), progress=False)


def test_extra_source_rows_and_cross_source_duplicates(layout):
    extra = layout / "extra" / "xc"
    write_audio(extra / "amerob" / "XC500.ogg", seed=5)
    write_audio(extra / "amerob" / "XC1.ogg", seed=6)  # the same upload as train_audio/amerob/XC1.ogg
    write_csv(extra / "metadata.csv", ["primary_label", "filename", "rating"],
              [["amerob", "amerob/XC500.ogg", "4"], ["amerob", "amerob/XC1.ogg", "4"]])
    m = build_manifest(layout, params(sources=["train_audio", "xc"], on_bad="skip"), progress=False)
    row = m.recordings.set_index("recording_id").loc["xc/amerob/XC500.ogg"]
    assert row["path"] == "extra/xc/amerob/XC500.ogg" and row["source"] == "xc" and row["secondary_labels"] == []
    dup = m.quarantine.iloc[0]
    assert (dup["kind"], dup["row"]) == ("duplicate", "extra/xc/metadata.csv:3")
    assert "train_audio/amerob/XC1.ogg" in dup["problem"]


def test_taxonomy_and_submission_must_agree(layout):
    header, *rows = (layout / "sample_submission.csv").read_text().splitlines()
    (layout / "sample_submission.csv").write_text("\n".join([header + ",extra1", *(r + ",0" for r in rows)]))
    with pytest.raises(TableError, match=r"only in sample_submission \['extra1'\]"):
        build_manifest(layout, params(), progress=False)


def test_manifest_of_the_synthclef_tiny_preset(tmp_path):
    synth = pytest.importorskip("birdclef.synth")
    summary = synth.generate("tiny", 0, tmp_path / "data", workers=1, progress=False,
                             overrides={"soundscape.seconds": 10})  # the layout, not the scenes, is under test
    m = build_manifest(tmp_path / "data", params(), progress=False)  # on_bad=fail: the generator's data is clean
    assert len(m.recordings) == summary["train_files"] and len(m.taxonomy) == summary["species"]
    assert m.recordings["duration_s"].sum() == pytest.approx(summary["audio_seconds"]["train_audio"], abs=0.1)
    assert m.stats["soundscapes_train"] == summary["train_soundscapes"]
    assert m.stats["soundscapes_test"] == summary["test_soundscapes"]
    assert m.taxonomy["class_name"].value_counts().to_dict() == summary["classes"]
    assert set(m.recordings["sample_rate"]) == {32000}


def test_a_nan_rating_is_reported_per_on_bad_and_an_empty_one_is_unrated(layout):
    write_audio(layout / "train_audio/amerob/XC95.ogg", seed=95)
    write_audio(layout / "train_audio/amerob/XC96.ogg", seed=96)
    append_train_rows(layout, [train_row("amerob/XC95.ogg", rating="nan"), train_row("amerob/XC96.ogg", rating="")])
    with pytest.raises(BadInputError) as err:
        build_manifest(layout, params(), progress=False)
    [problem] = err.value.problems
    assert (problem.kind, problem.row) == ("malformed", "train.csv:10")
    assert "rating 'nan' is not a number in [0, 5] (an unrated recording has rating 0" in str(err.value)
    m = build_manifest(layout, params(on_bad="skip"), progress=False)
    assert m.quarantine[["kind", "row"]].values.tolist() == [["malformed", "train.csv:10"]]
    assert "amerob/XC95.ogg" not in set(m.recordings["recording_id"])
    kept = m.recordings.set_index("recording_id").loc["amerob/XC96.ogg"]
    assert kept["rating"] == 0.0  # an empty cell is the competition's "not rated"
