"""train_member: one member end to end on toy data; per-iteration overrides, fine-tuning a checkpoint with a frozen
backbone (D1/D3), and teacher-in-the-loop distillation (P6/P7) switched from params."""

import numpy as np
import pandas as pd
import pytest
import torch

from birdclef.models import load_checkpoint
from birdclef.train.member import MemberInputs, merged, train_member

from train_fixtures import toy_segments

MEL = {"n_fft": 512, "hop_length": 320, "n_mels": 32, "fmin": 40, "fmax": 15000}


def _params(**selftrain):
    return {
        "models": {"tiny": {"head": "sed", "backbone": "test_efficientnet", "pretrained": False, "mel": "m"}},
        "mels": {"m": MEL},
        "train": {"crop_s": 1.0, "crop_policy": "random", "secondary_value": 0.5, "val_fold": 0,
                  "loop": {"epochs": 1, "batch_size": 4, "progress": False}, "augment": {}, "loss": {"name": "bce"}},
        "selftrain": selftrain,
    }  # fmt: skip


def _inputs():
    segs, cache = toy_segments()
    taxonomy = pd.DataFrame({"primary_label": ["a", "b", "c"], "class_name": ["Aves", "Amphibia", "Aves"]})
    return MemberInputs(segments=segs, taxonomy=taxonomy, cache=cache)


@pytest.fixture(scope="module")
def it0(tmp_path_factory):
    out = tmp_path_factory.mktemp("it0")
    metrics = train_member("it0_tiny", "tiny", _params(), {"k": 0}, _inputs(), out)
    return out, metrics


def test_member_writes_checkpoint_history_and_metrics(it0):
    out, metrics = it0
    assert (out / "model.pt").is_file() and (out / "val_predictions.parquet").is_file()
    assert len(pd.read_csv(out / "history.csv")) == 1
    assert 0.0 <= metrics["val_auc"] <= 1.0
    model, meta = load_checkpoint(out / "model.pt")
    assert model.classes == ["a", "b", "c"] and meta["iteration"] == 0


def test_merged_overrides_nested_keys():
    base = {"loop": {"epochs": 12, "batch_size": 16}, "crop_s": 5}
    assert merged(base, {"loop": {"epochs": 3}}) == {"loop": {"epochs": 3, "batch_size": 16}, "crop_s": 5}
    assert base["loop"]["epochs"] == 12


def test_frozen_backbone_fine_tuning_keeps_the_backbone(it0, tmp_path):
    inputs = _inputs()
    inputs.init_checkpoint = it0[0] / "model.pt"
    iteration = {"k": 1, "train": {"freeze_backbone": True, "loop": {"balance": "equal"}}}
    train_member("it1_tiny", "tiny", _params(), iteration, inputs, tmp_path)
    donor, _ = load_checkpoint(it0[0] / "model.pt")
    tuned, _ = load_checkpoint(tmp_path / "model.pt")
    d, t = donor.state_dict(), tuned.state_dict()
    backbone = [k for k in d if k.startswith("backbone.") and d[k].is_floating_point()]
    assert backbone and all(torch.equal(d[k], t[k]) for k in backbone)
    assert any(not torch.equal(d[k], t[k]) for k in d if k.startswith("head.") and d[k].is_floating_point())


@pytest.mark.parametrize("mode", ["blend", "online"])
def test_distillation_modes_train(it0, tmp_path, mode):
    inputs = _inputs()
    inputs.teacher_checkpoint = it0[0] / "model.pt"
    params = _params(init="scratch", distill={"mode": mode, "blend": 0.5, "threshold": 0.4, "kl_weight": 1.0})
    metrics = train_member("it1_tiny", "tiny", params, {"k": 1, "teacher": 0}, inputs, tmp_path)
    assert 0.0 <= metrics["val_auc"] <= 1.0


def test_distillation_needs_the_students_classes(it0, tmp_path):
    inputs = _inputs()
    inputs.teacher_checkpoint = it0[0] / "model.pt"
    params = _params(distill={"mode": "blend"})
    params["models"]["tiny"]["classes"] = ["Aves"]  # a taxon-group student: the teacher covers other classes
    with pytest.raises(ValueError, match="distill"):
        train_member("it1_tiny", "tiny", params, {"k": 1, "teacher": 0}, inputs, tmp_path)


def _switch(path: str, value):
    """A train.* override dict from a dotted path under train (e.g. 'loop.ema' -> {'loop': {'ema': value}})."""
    out: dict = {}
    node = out
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


SWITCHES = [
    *[(f"augment.wave.{name}", {"enabled": True, "p": 1.0}) for name in
      ("time_flip", "filter", "gain", "mixup", "hard_mixup", "sumix", "cutmix", "background", "voice", "noise")],
    *[(f"augment.spec.{name}", {"enabled": True, "p": 1.0}) for name in ("freq_mask", "time_mask", "erasing")],
    *[("loss", {"name": name}) for name in ("bce", "focal", "bce_focal", "ce", "soft_auc")],
    ("loss", {"name": "bce", "sed_dual": True, "label_smoothing": 0.1, "soft_auc_weight": 0.5,
              "neg_penalty": {"weight": 0.1, "margin": 0.0}}),
    ("secondary_value", "mask"),
    ("crop_policy", "first"),
    ("crop_policy", "rms"),
    ("loop.balance", "equal"),
    ("loop.balance", "none"),
    ("loop.optimizer", {"name": "radam", "lr": 0.001}),
    ("loop.scheduler", {"name": "cosine", "warmup_epochs": 0, "restart_epochs": 1}),
    ("loop.ema", {"enabled": True, "decay": 0.9}),
    ("loop.soup", {"enabled": True, "last_k": 2}),
    ("loop.grad_accum", 2),
]  # fmt: skip


@pytest.mark.parametrize(("path", "value"), SWITCHES, ids=[f"{p}={v}" for p, v in SWITCHES])
def test_every_technique_switched_on_from_params_trains_a_step(tmp_path, path, value):
    segs, cache = toy_segments()
    rng = np.random.default_rng(0)
    for i in range(2):  # quiet train soundscapes: the background (A9) clips
        cache.waves[f"sc{i}"] = (0.01 * rng.standard_normal(32000 * 12)).astype(np.float32)
        cache.kinds[f"sc{i}"] = "train_soundscape"
    taxonomy = pd.DataFrame({"primary_label": ["a", "b", "c"], "class_name": ["Aves", "Amphibia", "Aves"]})
    voice = [(0.1 * rng.standard_normal(32000)).astype(np.float32)]
    inputs = MemberInputs(segments=segs, taxonomy=taxonomy, cache=cache, voice_clips=voice)
    iteration = {"k": 0, "train": _switch(path, value)}
    if path == "loop.soup":
        iteration["train"]["loop"]["epochs"] = 2
    metrics = train_member("it0_tiny", "tiny", _params(), iteration, inputs, tmp_path)
    assert np.isfinite(pd.read_csv(tmp_path / "history.csv")["train_loss"]).all()
    assert 0.0 <= metrics["val_auc"] <= 1.0


# ---------------------------------------------------------------- D4: teacher segments join the training rows only


def _teacher_rows(cache, labels=("a", "c", "b")):
    """Three D4 rows over one 15-s train soundscape of the cache (fold -1, as teacher_segments writes them)."""
    rng = np.random.default_rng(1)
    cache.waves["ss0"] = (0.1 * rng.standard_normal(32000 * 15)).astype(np.float32)
    cache.kinds["ss0"] = "train_soundscape"
    return pd.DataFrame([
        {"segment_id": f"ss0@{5 * w}", "recording_id": "ss0", "path": "train_soundscapes/ss0", "start_s": 5.0 * w,
         "end_s": 5.0 * (w + 1), "primary_label": label, "secondary_labels": [], "class_name": "Aves", "rating": 0.0,
         "fold": -1, "weight": 1.0, "copies": 1, "cache_key": "ss0", "offset_s": 5.0 * w}
        for w, label in enumerate(labels)
    ])  # fmt: skip


@pytest.mark.parametrize("val_fold", [0, 1, -1])
def test_split_segments_puts_teacher_rows_into_training_only(val_fold):
    from birdclef.train.member import split_segments

    segs, cache = toy_segments()
    extra = _teacher_rows(cache)
    train, val = split_segments(segs, ["a", "c"], val_fold, extra)
    focal = segs[segs["primary_label"].isin(["a", "c"])]
    kept = focal if val_fold < 0 else focal[focal["fold"] != val_fold]
    assert sorted(train["segment_id"]) == sorted([*kept["segment_id"], "ss0@0", "ss0@5"])  # "b": not a member class
    if val_fold < 0:
        assert val is None
    else:
        assert sorted(val["segment_id"]) == sorted(focal.loc[focal["fold"] == val_fold, "segment_id"])
        assert not val["segment_id"].str.startswith("ss0").any()
    assert train.loc[train["segment_id"] == "ss0@5", "offset_s"].item() == 5.0
    assert train.loc[~train["segment_id"].str.startswith("ss0"), "cache_key"].isna().all()


def test_a_member_trains_on_teacher_segments_and_counts_them(tmp_path):
    inputs = _inputs()
    inputs.extra_segments = _teacher_rows(inputs.cache)
    metrics = train_member("it0_tiny", "tiny", _params(), {"k": 0}, inputs, tmp_path)
    assert metrics["teacher_segments"] == 3
    val = pd.read_parquet(tmp_path / "val_predictions.parquet")
    segs = inputs.segments
    assert sorted(val["segment_id"]) == sorted(segs.loc[segs["fold"] == 0, "segment_id"])  # no teacher window
    _, meta = load_checkpoint(tmp_path / "model.pt")
    inputs.extra_segments = None
    plain = train_member("it0_tiny", "tiny", _params(), {"k": 0}, inputs, tmp_path / "plain")
    _, plain_meta = load_checkpoint(tmp_path / "plain" / "model.pt")
    assert plain["teacher_segments"] == 0 and plain_meta["fingerprint"] != meta["fingerprint"]


# ---------------------------------------------------------------- D2: segments the teacher hears no call in


def _student_inputs(it0):
    """Inputs of a student iteration: a 12-s train soundscape with pseudo labels, the it0 checkpoint as teacher."""
    inputs = _inputs()
    rng = np.random.default_rng(2)
    inputs.cache.waves["ss0"] = (0.05 * rng.standard_normal(32000 * 15)).astype(np.float32)
    inputs.cache.kinds["ss0"] = "train_soundscape"
    inputs.pseudo_labels = pd.DataFrame({"soundscape_id": ["ss0"] * 3, "start_s": [0.0, 5.0, 10.0],
                                         "end_s": [5.0, 10.0, 15.0], "weight": 1.0,
                                         "a": [0.9, 0.1, 0.2], "b": [0.1, 0.8, 0.1], "c": [0.1, 0.1, 0.7]})
    inputs.pseudo_weights = {"ss0": 1.0}
    inputs.teacher_checkpoint = it0[0] / "model.pt"
    return inputs


def _student_params(**selftrain):
    params = _params(**selftrain)
    params["train"]["crop_s"] = 5.0  # pseudo crops are whole 5-s windows
    return params


def test_drop_no_call_removes_segments_the_teacher_does_not_hear(it0, tmp_path):
    params = _student_params(init="teacher", drop_no_call={"enabled": True, "threshold": 0.99})
    metrics = train_member("it1_tiny", "tiny", params, {"k": 1, "teacher": 0}, _student_inputs(it0), tmp_path)
    # A 1-epoch teacher is unsure of everything: at 0.99 all but each class's best segment go.
    assert metrics["segments_dropped_no_call"] > 0
    off = train_member("it1_tiny", "tiny", _student_params(init="teacher"), {"k": 1, "teacher": 0},
                       _student_inputs(it0), tmp_path / "off")
    assert off["segments_dropped_no_call"] == 0
    inputs = _student_inputs(it0)
    inputs.teacher_checkpoint = None
    params = _student_params(init="scratch", drop_no_call={"enabled": True, "threshold": 0.5})
    with pytest.raises(ValueError, match="drop_no_call needs"):
        train_member("it1_tiny", "tiny", params, {"k": 1, "teacher": 0}, inputs, tmp_path / "none")


def test_the_soundscape_score_comes_with_its_bootstrap_interval(tmp_path):
    from train_fixtures import MemoryCache, tone

    segs, cache = toy_segments()
    rng = np.random.default_rng(1)
    waves, rows = dict(cache.waves), []
    for s, calls in enumerate([("a", "b"), ("c", "a"), ("b", "c")]):  # three 10-s soundscapes, one call per window
        waves[f"ss{s}"] = np.concatenate([tone(500.0 * (1 + "abc".index(c)), 5.0, rng) for c in calls])
        rows += [{"row_id": f"ss{s}_{5 * (w + 1)}", **{k: int(k == c) for k in "abc"}} for w, c in enumerate(calls)]
    taxonomy = pd.DataFrame({"primary_label": ["a", "b", "c"], "class_name": ["Aves", "Amphibia", "Aves"]})
    inputs = MemberInputs(segments=segs, taxonomy=taxonomy, cache=MemoryCache(waves),
                          soundscape_labels=pd.DataFrame(rows))  # fmt: skip
    metrics = train_member("it0_tiny", "tiny", _params(), {"k": 0}, inputs, tmp_path)
    assert metrics["soundscape_auc_ci_low"] <= metrics["soundscape_auc"] <= metrics["soundscape_auc_ci_high"]
    assert "val_auc_ci_low" not in metrics  # focal segments: not the competition metric, no soundscapes to resample
