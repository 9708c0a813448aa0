"""Tests of mapping a teacher's classes onto the competition species (teachers/labels.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from birdclef.teachers import map_labels
from birdclef.teachers.labels import normalise, scientific_name

BIRDNET_LABELS = [
    "Turdus merula_Eurasian Blackbird",
    "Parus major_Great Tit",
    "Rhinella marina_Cane Toad",
    "Human vocal_Human vocal",
    "Parus major_Great Tit (duplicate name)",
]
TAXONOMY = pd.DataFrame({
    "primary_label": ["eurbla", "gretit1", "cantoa1", "1139490", "mamm1", "grasho1"],
    "scientific_name": ["Turdus  merula", "PARUS MAJOR ", "Rhinella marina", "Ragoniella pulchella", "Sus scrofa",
                        "Tettigonia viridissima"],
    "class_name": ["Aves", "Aves", "Amphibia", "Insecta", "Mammalia", "Insecta"],
})  # fmt: skip


def test_names_match_case_and_whitespace_insensitively():
    assert normalise("  Rhinella \t Marina ") == "rhinella marina"
    assert scientific_name("Parus major_Great Tit") == "Parus major"
    assert scientific_name("Parus major") == "Parus major"  # Perch v2 labels are scientific names


def test_species_map_by_scientific_name_and_the_rest_get_no_teacher_signal():
    lmap = map_labels(TAXONOMY, BIRDNET_LABELS)
    assert lmap.index.tolist() == [0, 1, 2, -1, -1, -1]  # the first of a repeated scientific name wins
    assert lmap.covered.tolist() == [True, True, True, False, False, False]
    assert lmap.matched_by[:3] == ("scientific_name",) * 3 and lmap.matched_by[3] == ""
    scores = np.array([[0.9, 0.1, 0.3, 0.7, 0.5], [0.0, 0.2, 0.4, 0.6, 0.8]], np.float32)
    mapped = lmap.apply(scores)
    np.testing.assert_array_equal(mapped[:, :3], scores[:, :3])
    assert np.isnan(mapped[:, 3:]).all()  # never a zero label for a species the teacher does not know
    assert lmap.apply(scores[None]).shape == (1, 2, 6)


def test_coverage_per_taxon_class():
    cov = map_labels(TAXONOMY, BIRDNET_LABELS).coverage()
    assert cov == {"coverage": 0.5, "n_covered": 3, "n_species": 6, "coverage_Amphibia": 1.0, "coverage_Aves": 1.0,
                   "coverage_Insecta": 0.0, "coverage_Mammalia": 0.0}  # fmt: skip


def test_a_mapping_csv_adds_renames_and_removes_matches(tmp_path: Path):
    csv = tmp_path / "map.csv"
    csv.write_text("primary_label,teacher_label\n"
                   "1139490,Human vocal_Human vocal\n"  # by full label
                   "mamm1,  parus MAJOR\n"  # by scientific name
                   "cantoa1,\n")  # an empty teacher label removes the scientific-name match  # fmt: skip
    lmap = map_labels(TAXONOMY, BIRDNET_LABELS, csv)
    assert lmap.index.tolist() == [0, 1, -1, 3, 1, -1]
    assert lmap.matched_by == ("scientific_name", "scientific_name", "", "mapping_csv", "mapping_csv", "")
    table = lmap.table()
    assert table.loc[3, "teacher_label"] == "Human vocal_Human vocal" and not table.loc[2, "covered"]
    assert list(table.columns) == ["primary_label", "class_name", "covered", "teacher_index", "teacher_label",
                                   "matched_by"]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("primary_label,label\nmamm1,Sus scrofa\n", "missing column\\(s\\) teacher_label"),
        ("primary_label,teacher_label\nboar,Sus scrofa\n", "row 2: primary_label 'boar' is not a taxonomy species"),
        ("primary_label,teacher_label\nmamm1,Sus scrofa\n", "row 2: the teacher has no class 'Sus scrofa'"),
        ("primary_label,teacher_label\nmamm1,\nmamm1,Parus major\n", "row 3: primary_label 'mamm1' is mapped more"),
    ],
)
def test_a_bad_mapping_csv_names_the_file_and_row(tmp_path: Path, text: str, error: str):
    csv = tmp_path / "map.csv"
    csv.write_text(text)
    with pytest.raises(ValueError, match=error):
        map_labels(TAXONOMY, BIRDNET_LABELS, csv)


def test_a_missing_mapping_csv_names_the_param(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="teacher.mapping_csv: no mapping CSV at .*gone.csv"):
        map_labels(TAXONOMY, BIRDNET_LABELS, tmp_path / "gone.csv")


def test_a_taxonomy_without_scientific_names_maps_only_through_the_csv(tmp_path: Path):
    csv = tmp_path / "map.csv"
    csv.write_text("primary_label,teacher_label\ngretit1,Parus major\n")
    lmap = map_labels(TAXONOMY[["primary_label"]], BIRDNET_LABELS, csv)
    assert lmap.index.tolist() == [-1, 1, -1, -1, -1, -1] and set(lmap.class_names) == {"unknown"}
