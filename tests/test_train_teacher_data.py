"""Tests for D4: teacher-confident soundscape windows become labelled segments that read the right audio."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from birdclef import SAMPLE_RATE
from birdclef.train.datasets import FocalDataset
from birdclef.train.teacher_data import teacher_segments

from train_fixtures import MemoryCache

SPECIES = ["a", "b", "c"]
TAXONOMY = pd.DataFrame({"primary_label": SPECIES, "class_name": ["Aves", "Aves", "Amphibia"]})


def _table() -> pd.DataFrame:
    rows = []
    probs = {0: [0.05, np.nan, 0.02], 1: [0.3, np.nan, 0.6], 2: [0.5, np.nan, 0.05], 3: [0.09, np.nan, 0.1]}
    for w, p in probs.items():
        rows.append({"soundscape_id": "ss0", "row_id": f"ss0_{5 * (w + 1)}", "start_s": 5.0 * w,
                     "end_s": 5.0 * (w + 1), **dict(zip(SPECIES, p, strict=True))})
    return pd.DataFrame(rows)


def test_confident_windows_become_segments_with_primary_and_secondary_labels():
    segs = teacher_segments(_table(), SPECIES, TAXONOMY, threshold=0.1)
    assert segs["start_s"].tolist() == [5.0, 10.0]  # window 0 below, window 3's 0.1 is not above 0.1
    assert segs["primary_label"].tolist() == ["c", "a"]
    assert segs["secondary_labels"].tolist() == [["a"], []]
    assert segs["class_name"].tolist() == ["Amphibia", "Aves"]
    assert (segs["fold"] == -1).all() and (segs["cache_key"] == "ss0").all()
    assert segs["offset_s"].tolist() == [5.0, 10.0]
    assert teacher_segments(_table(), SPECIES, TAXONOMY, threshold=0.55)["primary_label"].tolist() == ["c"]
    with pytest.raises(ValueError, match="threshold"):
        teacher_segments(_table(), SPECIES, TAXONOMY, threshold=0.0)


@pytest.mark.parametrize("policy", ["first", "random", "rms"])
def test_a_teacher_segment_reads_its_window_of_the_soundscape(policy):
    wave = np.concatenate([np.full(5 * SAMPLE_RATE, 0.01 * (w + 1), dtype=np.float32) for w in range(12)])
    cache = MemoryCache({"ss0": wave}, {"ss0": "train_soundscape"})
    segs = teacher_segments(_table(), SPECIES, TAXONOMY, threshold=0.1)
    ds = FocalDataset(segs, cache, SPECIES, crop_s=3.0, policy=policy, secondary_value=0.5)
    for row, window in ((0, 1), (1, 2)):
        for seed in range(5):
            item = ds[(row, seed)]
            np.testing.assert_allclose(item["wave"].numpy(), 0.01 * (window + 1), rtol=1e-6)
    # species b is not covered (NaN): no teacher signal, so out of the loss, never a zero label
    np.testing.assert_allclose(ds[(0, 0)]["target"].numpy(), [0.5, 0.0, 1.0])
    np.testing.assert_allclose(ds[(0, 0)]["mask"].numpy(), [1.0, 0.0, 1.0])


def test_negatives_mask_leaves_the_unflagged_covered_species_out_of_the_loss():
    """zero (rank 7): a covered species below the threshold is a negative; mask: it is out of the loss."""
    cache = MemoryCache({"ss0": np.zeros(60 * SAMPLE_RATE, np.float32)}, {"ss0": "train_soundscape"})
    zero = teacher_segments(_table(), SPECIES, TAXONOMY, threshold=0.1)
    masked = teacher_segments(_table(), SPECIES, TAXONOMY, threshold=0.1, negatives="mask")
    assert zero["masked_labels"].tolist() == [["b"], ["b"]]
    assert masked["masked_labels"].tolist() == [["b"], ["b", "c"]]  # window 2: c at 0.05 says nothing
    for segs, mask in ((zero, [1.0, 0.0, 1.0]), (masked, [1.0, 0.0, 0.0])):
        ds = FocalDataset(segs, cache, SPECIES, crop_s=5.0, policy="first", secondary_value=0.5)
        item = ds[(1, 0)]
        np.testing.assert_allclose(item["target"].numpy(), [1.0, 0.0, 0.0])
        np.testing.assert_allclose(item["mask"].numpy(), mask)
    with pytest.raises(ValueError, match="negatives must be one of zero, mask"):
        teacher_segments(_table(), SPECIES, TAXONOMY, negatives="drop")


def test_focal_rows_beside_teacher_segments_keep_every_cell_in_the_loss(tmp_path):
    """After the concat with the focal table (NaN in masked_labels) and a parquet round trip (arrays)."""
    cache = MemoryCache({"ss0": np.zeros(60 * SAMPLE_RATE, np.float32), "f0": np.zeros(SAMPLE_RATE * 5, np.float32)},
                        {"ss0": "train_soundscape", "f0": "train_audio"})  # fmt: skip
    segs = teacher_segments(_table(), SPECIES, TAXONOMY, threshold=0.1, negatives="mask")
    focal = segs.iloc[:1].drop(columns=["cache_key", "offset_s", "masked_labels"]).assign(
        segment_id="f0", primary_label="b", secondary_labels=[[]])
    both = pd.concat([focal, segs], ignore_index=True)
    both.to_parquet(tmp_path / "s.parquet")
    ds = FocalDataset(pd.read_parquet(tmp_path / "s.parquet"), cache, SPECIES, crop_s=5.0, policy="first")
    np.testing.assert_allclose(ds[(0, 0)]["mask"].numpy(), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(ds[(1, 0)]["mask"].numpy(), [1.0, 0.0, 1.0])
    np.testing.assert_allclose(ds[(2, 0)]["mask"].numpy(), [1.0, 0.0, 0.0])


# ---------------------------------------------------------------- load_teacher_segments (the train stage's D4 wiring)


def _teacher_folder(tmp_path, enabled=True, splits=("train_soundscape",)):
    """A teacher stage folder as stages/teacher.py writes it (teacher.json, <split>/probs.parquet + embeddings)."""
    from birdclef.io import write_json

    folder = tmp_path / "teacher"
    folder.mkdir()
    write_json(folder / "teacher.json", {"enabled": enabled, "splits": list(splits), "species": SPECIES,
                                         "covered": ["a", "c"]})  # fmt: skip
    for split in splits:
        (folder / split).mkdir()
        _table().to_parquet(folder / split / "probs.parquet", index=False)
        np.save(folder / split / "embeddings.npy", np.zeros((4, 8), np.float32))
    return folder


def test_the_train_stage_loads_segments_with_its_threshold_and_weight(tmp_path):
    from birdclef.train.teacher_data import load_teacher_segments

    folder = _teacher_folder(tmp_path)
    segs = load_teacher_segments(folder, {"teacher_segments": {"enabled": True, "threshold": 0.4, "weight": 0.3}},
                                 TAXONOMY)  # fmt: skip
    assert segs["start_s"].tolist() == [5.0, 10.0] and segs["primary_label"].tolist() == ["c", "a"]
    assert segs["secondary_labels"].tolist() == [[], []]  # 0.3 of window 1 is under 0.4 now
    assert segs["weight"].tolist() == [0.3, 0.3]
    assert len(load_teacher_segments(folder, {"teacher_segments": {"enabled": True}}, TAXONOMY)) == 2  # 0.1


def test_an_iteration_override_turns_the_segments_on(tmp_path):
    from birdclef.train.member import iteration_config
    from birdclef.train.teacher_data import load_teacher_segments

    folder = _teacher_folder(tmp_path)
    params = {"train": {"crop_s": 5, "teacher_segments": {"enabled": False, "threshold": 0.1, "weight": 1.0}}}
    it0, it1 = {"k": 0}, {"k": 1, "train": {"teacher_segments": {"enabled": True, "threshold": 0.55}}}
    assert load_teacher_segments(folder, iteration_config(params, it0)[0], TAXONOMY) is None
    segs = load_teacher_segments(folder, iteration_config(params, it1)[0], TAXONOMY)
    assert segs["primary_label"].tolist() == ["c"] and segs["weight"].tolist() == [1.0]


def test_off_reads_nothing_even_without_a_teacher_folder(tmp_path):
    from birdclef.train.teacher_data import load_teacher_segments

    assert load_teacher_segments(tmp_path / "absent", {"teacher_segments": {"enabled": False}}, TAXONOMY) is None
    assert load_teacher_segments(tmp_path / "absent", {}, TAXONOMY) is None


@pytest.mark.parametrize(("enabled", "splits", "reason"), [
    (False, (), "teacher.enabled: false"),
    (True, ("segment",), "add it to teacher.splits"),
])  # fmt: skip
def test_a_teacher_stage_that_ran_off_or_without_soundscapes_is_an_error(tmp_path, enabled, splits, reason):
    from birdclef.train.teacher_data import load_teacher_segments

    folder = _teacher_folder(tmp_path, enabled, splits)
    with pytest.raises(ValueError, match=r"train\.teacher_segments\.enabled is true") as err:
        load_teacher_segments(folder, {"teacher_segments": {"enabled": True}}, TAXONOMY)
    assert reason in str(err.value)
