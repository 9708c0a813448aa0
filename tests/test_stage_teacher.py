"""End-to-end tests of the `teacher` stage on a tiny waveform cache with a stand-in ONNX teacher: outputs in the
competition label space, metrics, the fixed marker when off, clear errors, and a resumed block."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score
from teacher_fixtures import LABELS, burst, energy_onnx, write_txt_labels

from birdclef.features.cache import CacheItem, WaveCache, WaveCacheWriter
from birdclef.io import load_params
from birdclef.teachers import TeacherParams, confident_segments, create_teacher, load_outputs, teacher_info
from birdclef.teachers.base import Teacher
from birdclef.teachers.stage import run_teacher

REPO = Path(__file__).resolve().parents[1]
SPECIES = ["sp_all", "sp_q1", "frog1", "bug1"]
TAXONOMY = pd.DataFrame({
    "primary_label": SPECIES,
    "scientific_name": ["Omnia sonora", "beta SECUNDA", "Rana nulla", "Insectum ignotum"],
    "class_name": ["Aves", "Aves", "Amphibia", "Insecta"],
})  # fmt: skip
TONES = {"S1": [(2.0, 2.5), (12.0, 12.5)], "S2": [(7.0, 7.5)]}  # train soundscapes, 20 s each


def _stage_main():
    spec = importlib.util.spec_from_file_location("teacher_stage", REPO / "stages" / "teacher.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BIRDCLEF_TRACKING", "0")
    waves = {
        "S1": sum(burst(20, a, b) for a, b in TONES["S1"]),
        "S2": burst(20, *TONES["S2"][0]),
        "T1": burst(10, 1.0, 1.5),
        "sp_all/a.ogg#0": burst(7, 3.0, 3.5),
        "frog1/b.ogg#0": np.zeros(3 * 32_000),
    }
    kinds = {"S1": "train_soundscape", "S2": "train_soundscape", "T1": "test_soundscape"}
    items = [CacheItem(k, kinds.get(k, "segment"), len(w)) for k, w in waves.items()]
    writer = WaveCacheWriter(tmp_path / "build/features", items, rms_hop=3200)
    for key, wave in waves.items():
        writer.write(key, np.asarray(wave, np.float32))
    writer.close()
    acquire = tmp_path / "build/acquire"
    acquire.mkdir(parents=True)
    TAXONOMY.to_parquet(acquire / "taxonomy.parquet")
    rows = [f"{s}_{e}" for s in ("S1", "S2") for e in (5, 10, 15, 20)]
    labels = pd.DataFrame({"row_id": rows, "soundscape_id": [r.split("_")[0] for r in rows], "split": "train",
                           "sp_all": [int(r in ("S1_5", "S1_15", "S2_10")) for r in rows], "sp_q1": 0, "frog1": 0,
                           "bug1": [1, 0, 0, 0, 0, 0, 0, 1]})  # fmt: skip
    labels.to_parquet(acquire / "soundscape_labels.parquet")
    (tmp_path / "build/clean").mkdir(parents=True)
    pd.DataFrame({"segment_id": ["sp_all/a.ogg#0", "frog1/b.ogg#0"], "primary_label": ["sp_all", "frog1"]}).to_parquet(
        tmp_path / "build/clean/segments.parquet"
    )
    model = energy_onnx(tmp_path / "energy.onnx", 144_000)
    write_txt_labels(tmp_path / "labels.txt")
    (tmp_path / "map.csv").write_text("primary_label,teacher_label\nbug1,Delta quarta\n")
    section = {**load_params(REPO / "params.yaml", "teacher"), "enabled": True, "name": "onnx",
               "model_path": str(model), "labels_path": str(tmp_path / "labels.txt"),
               "mapping_csv": str(tmp_path / "map.csv"), "splits": ["train_soundscape", "segment", "test_soundscape"],
               "sample_rate": 48_000, "window_s": 3.0, "logits_output": "label", "embedding_output": "embedding",
               "block": 1, "batch_size": 64}  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"tracking": {"enabled": False}, "teacher": section}))
    monkeypatch.chdir(tmp_path)
    return tmp_path


ARGS = ["--params", "params.yaml", "--features", "build/features", "--acquire", "build/acquire", "--segments",
        "build/clean/segments.parquet", "--out", "build/teacher", "--shards", "build/shards/teacher", "--metrics",
        "metrics/teacher.json", "--timings", "metrics/timing/teacher.json"]  # fmt: skip


def test_the_stage_writes_window_probabilities_on_the_competition_species(project: Path):
    assert _stage_main()(ARGS) == 0
    info = teacher_info("build/teacher")
    assert info["enabled"] and info["covered"] == ["sp_all", "sp_q1", "bug1"] and info["tile_offsets_s"] == [0, 2]
    assert info["files"]["model"]["sha256"] and info["n_teacher_classes"] == len(LABELS)
    train = load_outputs("build/teacher", "train_soundscape")
    table = train.table
    assert list(table.columns) == ["soundscape_id", "row_id", "start_s", "end_s", *SPECIES]
    assert table["row_id"].tolist() == [f"{s}_{e}" for s in ("S1", "S2") for e in (5, 10, 15, 20)]
    assert table["start_s"].tolist() == [0, 5, 10, 15] * 2 and table["end_s"].tolist() == [5, 10, 15, 20] * 2
    assert table["frog1"].isna().all() and table[["sp_all", "sp_q1", "bug1"]].notna().all().all()
    assert table.loc[table["sp_all"] > 0.5, "row_id"].tolist() == ["S1_5", "S1_15", "S2_10"]
    assert train.embeddings.shape == (8, 4) and np.load("build/teacher/train_soundscape/embeddings.npy").dtype == "f2"
    assert train.window_probs(["S2", "S1"]).shape == (2, 4, 4)
    np.testing.assert_array_equal(train.window_probs(["S1"])[0], train.probs[:4])
    conf = confident_segments(train, 0.1)
    assert conf.loc[conf["primary_label"] == "sp_all", ["soundscape_id", "start_s"]].values.tolist() == [
        ["S1", 0.0], ["S1", 10.0], ["S2", 5.0]]  # fmt: skip
    assert "frog1" not in set(conf["primary_label"]) and (conf["prob"] > 0.1).all()
    segments = load_outputs("build/teacher", "segment")
    assert segments.table["segment_id"].tolist() == ["sp_all/a.ogg#0"] * 2 + ["frog1/b.ogg#0"]
    assert load_outputs("build/teacher", "test_soundscape").table["row_id"].tolist() == ["T1_5", "T1_10"]
    mapping = pd.read_csv("build/teacher/mapping.csv")
    assert mapping["matched_by"].fillna("").tolist() == ["scientific_name", "scientific_name", "", "mapping_csv"]
    metrics = json.loads(Path("metrics/teacher.json").read_text())
    assert metrics["coverage"] == 0.75 and metrics["coverage_Amphibia"] == 0.0 and metrics["coverage_Aves"] == 1.0
    # sp_all ranks its three labelled windows first; bug1 (Insecta) scores as the teacher's "Delta" class does;
    # sp_q1 has no positive, frog1 is not covered: both are left out
    bug1 = roc_auc_score([1, 0, 0, 0, 0, 0, 0, 1], table["bug1"])
    assert metrics["auc_train_soundscape_Aves"] == 1.0 and metrics["auc_train_soundscape_Insecta"] == bug1
    assert metrics["auc_train_soundscape"] == pytest.approx((1.0 + bug1) / 2)
    assert metrics["auc_segment"] == 1.0 and "auc_test_soundscape" not in metrics  # no test labels here
    lo, hi = metrics["auc_train_soundscape_ci_low"], metrics["auc_train_soundscape_ci_high"]  # S1, S2 resampled
    assert lo <= metrics["auc_train_soundscape"] <= hi and "auc_segment_ci_low" not in metrics
    assert metrics["windows_train_soundscape"] == 8 and metrics["windows_segment"] == 3
    timings = json.loads(Path("metrics/timing/teacher.json").read_text())
    assert metrics["audio_minutes"] == pytest.approx(60 / 60) and timings["seconds_per_audio_minute"] > 0
    assert "seconds_per_audio_minute" not in metrics  # a timing: not in the scores a rerun must reproduce
    assert not any(Path("build/shards/teacher").iterdir())  # blocks cleared once the outputs are in place


def test_off_writes_the_same_small_marker_every_time(project: Path):
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["teacher"]["enabled"] = False
    Path("params.yaml").write_text(yaml.safe_dump(params))
    assert _stage_main()(ARGS) == 0
    first = {p.name: p.read_bytes() for p in Path("build/teacher").iterdir()}
    assert _stage_main()(ARGS) == 0
    assert {p.name: p.read_bytes() for p in Path("build/teacher").iterdir()} == first
    assert json.loads(first["teacher.json"]) == {"enabled": False, "splits": []}
    assert json.loads(Path("metrics/teacher.json").read_text()) == {"enabled": 0}
    with pytest.raises(FileNotFoundError, match="teacher.enabled: false"):
        load_outputs("build/teacher", "train_soundscape")


def test_bad_params_and_a_missing_model_fail_with_one_clear_line(project: Path, capsys, monkeypatch):
    params = yaml.safe_load(Path("params.yaml").read_text())
    Path("bad.yaml").write_text(yaml.safe_dump({**params, "teacher": {**params["teacher"], "weight": 0.2}}))
    assert _stage_main()([*ARGS[:0], "--params", "bad.yaml", *ARGS[2:]]) == 1
    assert "unknown key(s) teacher.weight (valid: enabled, name" in capsys.readouterr().err
    monkeypatch.delenv("BIRDNET_TFLITE", raising=False)
    birdnet = {**params["teacher"], "name": "birdnet", "model_path": None, "labels_path": None, "sample_rate": None,
               "window_s": None, "logits_output": None, "embedding_output": None}  # fmt: skip
    Path("bad.yaml").write_text(yaml.safe_dump({**params, "teacher": birdnet}))
    assert _stage_main()(["--params", "bad.yaml", *ARGS[2:]]) == 1
    err = capsys.readouterr().err
    assert "teacher failed: teacher.model_path is not set and neither is the environment variable BIRDNET_TFLITE" in err
    assert not Path("build/teacher").exists()


class Killable(Teacher):
    """Delegates to a real teacher, counting model calls and dying after ``die_after`` of them (a kill)."""

    def __init__(self, inner: Teacher, die_after: int | None = None):
        self.inner, self.die_after, self.calls = inner, die_after, 0
        self.name, self.sample_rate, self.window_s = inner.name, inner.sample_rate, inner.window_s
        self.labels, self.embedding_dim, self.files = inner.labels, inner.embedding_dim, inner.files

    def predict(self, waves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        if self.die_after is not None and self.calls > self.die_after:
            raise RuntimeError("killed")
        return self.inner.predict(waves)


def test_a_killed_run_resumes_from_its_finished_blocks(project: Path):
    section = yaml.safe_load(Path("params.yaml").read_text())["teacher"]
    params = TeacherParams.from_dict({**section, "splits": ["train_soundscape"]})
    inner = create_teacher("onnx", params.adapter_config())
    cache, shards = WaveCache("build/features"), Path("build/shards/teacher")
    dying = Killable(inner, die_after=1)  # one model call per 20-s soundscape: S1 finishes, S2 dies
    with pytest.raises(RuntimeError, match="killed"):
        run_teacher(params, cache, TAXONOMY, "build/teacher", shards, teacher=dying, progress=False)
    assert not Path("build/teacher").exists() and len(list(shards.glob("*/block-*.npz"))) == 1
    resumed = Killable(inner)
    metrics = run_teacher(params, cache, TAXONOMY, "build/teacher", shards, teacher=resumed, progress=False)
    assert resumed.calls == 1  # only S2 ran again
    assert metrics["audio_minutes"] == pytest.approx(20 / 60)  # speed counts the windows computed in this run
    table = load_outputs("build/teacher", "train_soundscape").table
    fresh = run_teacher(params, cache, TAXONOMY, "fresh", "fresh_shards", teacher=Killable(inner), progress=False)
    pd.testing.assert_frame_equal(table, load_outputs("fresh", "train_soundscape").table)
    assert fresh["windows_train_soundscape"] == metrics["windows_train_soundscape"] == 8
