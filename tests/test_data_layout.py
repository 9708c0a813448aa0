"""Tests of birdclef.data.layout: required paths, CSV reading with row-level errors, secondary_labels quirks."""

import math

import pytest
from test_data_fixture import SUBMISSION_ORDER, TRAIN_COLUMNS, make_competition_layout, train_row, write_csv

from birdclef.data.layout import (
    LayoutError,
    TableError,
    check_layout,
    extra_source_paths,
    list_soundscapes,
    parse_metadata,
    parse_secondary_labels,
    read_csv_strings,
    read_species_columns,
    read_taxonomy,
)


@pytest.mark.parametrize(
    ("cell", "labels"),
    [("[]", []), ("['grekis', 'rumfly1']", ["grekis", "rumfly1"]), ('["a"]', ["a"]), ("['']", []), ("", []),
     ("nan", []), (math.nan, []), ("['a' 'b']", ["a", "b"]), ("[1139490, 41663]", ["1139490", "41663"]),
     ("a b", ["a", "b"]), ("a;b,c", ["a", "b", "c"]), ("['a', 'a', ' b ']", ["a", "b"]), ("('a',)", ["a"])],
)
def test_secondary_labels_quirks(cell, labels):
    assert parse_secondary_labels(cell) == labels


@pytest.mark.parametrize("cell", ["['a'", "[['a']]", "{'a': 1}", "[a, {b}]"])
def test_secondary_labels_unreadable(cell):
    with pytest.raises(ValueError, match="secondary_labels"):
        parse_secondary_labels(cell)


def test_check_layout_names_every_missing_path(tmp_path):
    root = make_competition_layout(tmp_path / "data")
    check_layout(root)
    (root / "train.csv").unlink()
    (root / "sample_submission.csv").unlink()
    with pytest.raises(LayoutError, match=r"missing train\.csv, sample_submission\.csv"):
        check_layout(root)


def test_malformed_rows_are_named_and_the_rest_kept(tmp_path):
    path = tmp_path / "train.csv"
    rows = [train_row("a/XC1.ogg"), train_row("a/XC2.ogg", rating="six"), ["a", "[]", "too", "few"],
            train_row("a/XC3.ogg", secondary="['b'", lat="95"), train_row("a/XC4.ogg", rating="", lat=""),
            train_row("a/XC5.ogg", rating="nan", lat="nan")]
    write_csv(path, TRAIN_COLUMNS, rows)
    raw, bad_lines = read_csv_strings(path, ("primary_label", "filename"))
    assert [str(p) for p in bad_lines] == ["train.csv:4: malformed: 4 fields, the header has 13"]
    typed, bad_values = parse_metadata(raw, "train.csv")
    assert [p.row for p in bad_values] == ["train.csv:3", "train.csv:5", "train.csv:7"]
    assert "rating 'six' is not a number in [0, 5]" in bad_values[0].problem
    assert "secondary_labels" in bad_values[1].problem and "latitude '95'" in bad_values[1].problem
    assert bad_values[2].problem == (  # its "nan" latitude is unknown, not a fault
        "rating 'nan' is not a number in [0, 5] (an unrated recording has rating 0 or an empty cell)"
    )
    empty = typed.iloc[-2]
    assert empty["rating"] == 0.0 and math.isnan(empty["latitude"])  # empty rating = unrated, lat/lon = unknown
    assert typed["rating"].dtype == "float64" and typed["row"].tolist()[-1] == "train.csv:7"


def test_unusable_csvs_raise_naming_file_and_line(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b"primary_label,filename\nok,a/b.ogg\n\xff\xfe,x\n")
    with pytest.raises(TableError, match=r"train\.csv line 3: not UTF-8"):
        read_csv_strings(path)
    path.write_text("primary_label,file\nok,a/b.ogg\n")
    with pytest.raises(TableError, match="missing column.s. filename"):
        read_csv_strings(path, ("primary_label", "filename"))
    path.write_text("primary_label,filename\nx,../../etc/passwd\n")
    raw, _ = read_csv_strings(path, ("filename",))
    _, problems = parse_metadata(raw, "t.csv")
    assert "'../../etc/passwd' is not a relative file path" in problems[0].problem


def test_taxonomy_problems_are_all_listed(tmp_path):
    path = tmp_path / "taxonomy.csv"
    write_csv(path, ["primary_label", "inat_taxon_id", "scientific_name", "common_name", "class_name"],
              [["a", "1", "s", "c", "Aves"], ["a", "2", "s", "c", "Aves"], ["b", "x", "s", "c", ""]])
    with pytest.raises(TableError) as err:
        read_taxonomy(path)
    message = str(err.value)
    assert "taxonomy.csv:3: duplicate primary_label 'a' (first on line 2)" in message
    assert "taxonomy.csv:4: empty class_name" in message and "inat_taxon_id 'x'" in message


def test_competition_tables_and_soundscapes(tmp_path):
    root = make_competition_layout(tmp_path / "data")
    taxonomy = read_taxonomy(root / "taxonomy.csv")
    assert taxonomy["inat_taxon_id"].dtype == "Int64" and "1139490" in set(taxonomy["primary_label"])
    assert read_species_columns(root / "sample_submission.csv") == SUBMISSION_ORDER
    scapes = list_soundscapes(root)
    assert scapes["split"].tolist() == ["train", "train", "test"]
    assert scapes["path"].iloc[-1] == "test_soundscapes/soundscape_8123.ogg"
    (root / "extra" / "xc" / "train_audio").mkdir(parents=True)
    with pytest.raises(LayoutError, match="no metadata CSV"):
        extra_source_paths(root, "xc")
    (root / "extra" / "xc" / "train_metadata.csv").write_text("primary_label,filename\n")
    assert extra_source_paths(root, "xc") == (root / "extra/xc/train_metadata.csv", "extra/xc/train_audio")
