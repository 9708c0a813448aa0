"""train@k's library (train/iteration.py): inputs checked before any member trains, D4 segments wired from the
teacher stage's folder, outputs published by rank 0; and the stage script's exit code on bad inputs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from birdclef.features.cache import CacheItem, WaveCacheWriter
from birdclef.io import read_json, write_json
from birdclef.train.iteration import IterationPaths, plan_iteration, run_iteration

from train_fixtures import toy_segments

REPO = Path(__file__).resolve().parents[1]
SPECIES = ["a", "b", "c"]
MEL = {"n_fft": 512, "hop_length": 320, "n_mels": 32, "fmin": 40, "fmax": 15000}


def _params(**train) -> dict:
    return {
        "models": {"tiny": {"head": "sed", "backbone": "test_efficientnet", "pretrained": False, "mel": "m"}},
        "mels": {"m": MEL},
        "train": {"crop_s": 1.0, "crop_policy": "random", "val_fold": 0, "augment": {}, "loss": {"name": "bce"},
                  "loop": {"epochs": 1, "batch_size": 4, "progress": False}, **train},
        "selftrain": {},
        "tracking": {"enabled": False},
        "iterations": [{"k": 0, "members": ["tiny"], "teacher": None, "labels": "build/clean/segments.parquet"},
                       {"k": 1, "members": ["tiny"], "teacher": 0, "labels": "build/pseudo/it0"}],
    }  # fmt: skip


@pytest.fixture
def layout(tmp_path: Path) -> IterationPaths:
    """The train stage's inputs on disk: toy segments and a 15-s train soundscape in a real waveform cache."""
    segs, cache = toy_segments()
    rng = np.random.default_rng(0)
    cache.waves["ss0"] = (0.1 * rng.standard_normal(32000 * 15)).astype(np.float32)
    kinds = {"ss0": "train_soundscape"}
    items = [CacheItem(k, kinds.get(k, "segment"), len(w)) for k, w in cache.waves.items()]
    writer = WaveCacheWriter(tmp_path / "build/features", items, rms_hop=3200, full_scale=2.0)
    for k, w in cache.waves.items():
        writer.write(k, w)
    writer.close()
    (tmp_path / "build/clean").mkdir(parents=True)
    (tmp_path / "build/acquire").mkdir(parents=True)
    segs.to_parquet(tmp_path / "build/clean/segments.parquet", index=False)
    spans = {"recording_id": pd.Series(dtype=str), "start_s": pd.Series(dtype=float), "end_s": pd.Series(dtype=float)}
    pd.DataFrame(spans).to_parquet(tmp_path / "build/clean/voice_spans.parquet")  # no voice cut
    pd.DataFrame({"primary_label": SPECIES, "class_name": ["Aves", "Amphibia", "Aves"]}).to_parquet(
        tmp_path / "build/acquire/taxonomy.parquet")
    pd.DataFrame({"row_id": pd.Series(dtype=str), "soundscape_id": pd.Series(dtype=str),
                  "split": pd.Series(dtype=str), **{s: pd.Series(dtype=int) for s in SPECIES}}).to_parquet(
        tmp_path / "build/acquire/soundscape_labels.parquet")  # fmt: skip
    return IterationPaths(
        data=tmp_path / "data", acquire=tmp_path / "build/acquire", clean=tmp_path / "build/clean",
        features=tmp_path / "build/features", labels=tmp_path / "build/clean/segments.parquet",
        teacher_outputs=tmp_path / "build/teacher", train_root=tmp_path / "build/train",
        out=tmp_path / "build/train/it0", resume=tmp_path / "build/resume/it0",
        metrics=tmp_path / "metrics/train/it0.json", timings=tmp_path / "metrics/timing/train_it0.json",
        history=tmp_path / "metrics/train/it0_history.csv",
    )  # fmt: skip


def _teacher(folder: Path, enabled: bool = True) -> None:
    """A teacher stage folder: windows 1 and 2 of ss0 are confident (c, then a), windows 0 and 3 are not."""
    rows = [{"soundscape_id": "ss0", "row_id": f"ss0_{5 * (w + 1)}", "start_s": 5.0 * w, "end_s": 5.0 * (w + 1),
             "a": a, "b": np.nan, "c": c} for w, (a, c) in enumerate([(0.05, 0.02), (0.3, 0.6), (0.5, 0.05),
                                                                      (0.01, 0.0)])]  # fmt: skip
    folder.mkdir(parents=True)
    write_json(folder / "teacher.json", {"enabled": enabled, "splits": ["train_soundscape"] if enabled else [],
                                         "species": SPECIES, "covered": ["a", "c"]})  # fmt: skip
    if enabled:
        (folder / "train_soundscape").mkdir()
        pd.DataFrame(rows).to_parquet(folder / "train_soundscape/probs.parquet", index=False)
        np.save(folder / "train_soundscape/embeddings.npy", np.zeros((4, 8), np.float32))


def test_an_iteration_trains_its_members_on_the_teacher_segments_and_publishes(layout):
    _teacher(layout.teacher_outputs)
    params = _params(teacher_segments={"enabled": True, "threshold": 0.1, "weight": 1.0})
    plan = plan_iteration(params, 0, layout)
    extra = plan.inputs.extra_segments
    assert extra["segment_id"].tolist() == ["ss0@5", "ss0@10"] and extra["primary_label"].tolist() == ["c", "a"]
    assert plan.checkpoints == {"tiny": (None, None)} and plan.inputs.pseudo_labels is None
    metrics = run_iteration(params, plan, layout)
    assert metrics["tiny"]["teacher_segments"] == 2 and metrics["tiny"]["train_seconds"] > 0
    scores, timings = read_json(layout.metrics), read_json(layout.timings)
    assert scores["tiny"] == {k: v for k, v in metrics["tiny"].items() if k not in timings["tiny"]}
    assert set(timings["tiny"]) == {"train_seconds", "train_samples_per_second"} and timings["stage_seconds"] > 0
    assert (layout.out / "tiny/model.pt").is_file()
    history = pd.read_csv(layout.history)
    assert history["member"].tolist() == ["it0_tiny"]
    val = pd.read_parquet(layout.out / "tiny/val_predictions.parquet")
    assert not val["segment_id"].str.startswith("ss0").any()  # D4 rows never validate


def test_a_rank_other_than_zero_publishes_nothing(layout):
    params = _params()
    metrics = run_iteration(params, plan_iteration(params, 0, layout), layout, rank=1)
    assert set(metrics) == {"tiny"} and not layout.out.exists() and not layout.metrics.exists()
    assert not layout.timings.exists()


def test_bad_inputs_stop_the_iteration_before_any_member_trains(layout):
    params = _params(teacher_segments={"enabled": True})
    _teacher(layout.teacher_outputs, enabled=False)
    with pytest.raises(ValueError, match=r"iteration 0: train\.teacher_segments\.enabled is true .*teacher\.enabled"):
        plan_iteration(params, 0, layout)
    params = _params()
    params["iterations"][0]["init_from"] = str(layout.train_root / "pre/{model}/model.pt")
    with pytest.raises(FileNotFoundError, match=r"init_from .*pre/tiny/model\.pt does not exist"):
        plan_iteration(params, 0, layout)
    student = IterationPaths(**{**layout.__dict__, "labels": layout.train_root.parent / "pseudo/it0"})
    with pytest.raises(FileNotFoundError, match="iteration 1 has teacher 0 but .* holds no labels.parquet"):
        plan_iteration(_params(), 1, student)


def test_the_stage_exits_1_naming_the_setting(layout, tmp_path, monkeypatch, capsys):
    import importlib.util

    import yaml

    _teacher(layout.teacher_outputs, enabled=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_params(teacher_segments={"enabled": True})))
    args = [f"--{k.replace('_', '-')}={v}" for k, v in layout.__dict__.items()]
    spec = importlib.util.spec_from_file_location("train_stage", REPO / "stages/train.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    monkeypatch.setattr(sys, "argv", ["train.py", "--iteration", "0", "--params", str(tmp_path / "params.yaml"), *args])
    assert stage.main() == 1
    assert "train@0 failed: iteration 0: train.teacher_segments.enabled is true" in capsys.readouterr().err
    assert not layout.out.exists()


def test_per_epoch_soundscape_scores_use_the_validation_split_never_the_test_labels(layout):
    """S3: the test labels are the local leaderboard; only val_labels.csv rows reach the per-epoch evaluator."""
    rows = []
    for split, sid in (("test", "ss_test"), ("val", "ss_val"), ("train", "ss_train")):
        for w in range(12):
            rows.append({"row_id": f"{sid}_{5 * (w + 1)}", "soundscape_id": sid, "split": split,
                         **{s: int((w + i) % 3 == 0) for i, s in enumerate(SPECIES)}})
    pd.DataFrame(rows).to_parquet(layout.acquire / "soundscape_labels.parquet")
    plan = plan_iteration(_params(), 0, layout)
    used = plan.inputs.soundscape_labels
    assert used["row_id"].str.startswith("ss_val_").all() and len(used) == 12
    assert "split" not in used.columns


def test_mutual_learning_needs_exactly_two_members(layout):
    params = _params(mutual={"enabled": True, "weight": 1.0})
    with pytest.raises(ValueError, match="train.mutual trains two different members"):
        plan_iteration(params, 0, layout)
