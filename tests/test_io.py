"""birdclef.io.merged: how per-iteration and per-round overrides combine with their params sections."""

from __future__ import annotations

from birdclef.io import merged

TRAIN = {"crop_s": 5, "loop": {"epochs": 12, "scheduler": {"name": "cosine", "warmup_epochs": 1, "min_lr": 1e-6},
                               "optimizer": {"name": "adamw", "lr": 0.002}}}  # fmt: skip


def test_nested_dicts_merge_and_the_base_is_left_alone():
    out = merged(TRAIN, {"loop": {"epochs": 3, "scheduler": {"warmup_epochs": 0}}})
    assert out == {"crop_s": 5, "loop": {"epochs": 3, "scheduler": {"name": "cosine", "warmup_epochs": 0,
                                                                      "min_lr": 1e-6},
                                         "optimizer": {"name": "adamw", "lr": 0.002}}}  # fmt: skip
    assert TRAIN["loop"]["epochs"] == 12 and TRAIN["loop"]["scheduler"]["warmup_epochs"] == 1


def test_a_dict_of_another_name_replaces_the_base():
    out = merged(TRAIN, {"loop": {"scheduler": {"name": "constant"}}})
    assert out["loop"]["scheduler"] == {"name": "constant"}  # not constant with cosine's min_lr
    assert out["loop"]["epochs"] == 12 and out["loop"]["optimizer"] == {"name": "adamw", "lr": 0.002}
    radam = merged(TRAIN, {"loop": {"optimizer": {"name": "radam", "lr": 0.001}}})["loop"]["optimizer"]
    assert radam == {"name": "radam", "lr": 0.001}


def test_the_same_name_or_a_missing_name_merges():
    same = merged(TRAIN, {"loop": {"scheduler": {"name": "cosine", "min_lr": 0.0}}})["loop"]["scheduler"]
    assert same == {"name": "cosine", "warmup_epochs": 1, "min_lr": 0.0}
    unnamed_base = merged({"scheduler": {"warmup_epochs": 2}}, {"scheduler": {"name": "constant"}})
    assert unnamed_base == {"scheduler": {"warmup_epochs": 2, "name": "constant"}}
    assert merged({"a": {"name": "x", "v": 1}}, {"a": 3}) == {"a": 3}  # a non-dict value replaces, as before
