"""Smoke tests of the `ensemble` and `infer` DVC stages on tiny checkpoints and synthetic soundscapes."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import yaml
from teacher_fixtures import stand_in_section

from birdclef.infer import members, runner, teacher_member
from birdclef.infer.submission import row_ids
from birdclef.io import TIMING_KEY
from birdclef.models import create_model, save_checkpoint
from birdclef.teachers import blend, create_teacher, predict_windows

ROOT = Path(__file__).resolve().parents[1]
SR = 32_000
CLASSES = ["sp_a", "sp_b", "frog1", "1020593"]  # numeric names exist (iNat taxon ids)
TAXA = {"sp_a": "Aves", "sp_b": "Aves", "frog1": "Amphibia", "1020593": "Insecta"}
MEL = {"n_fft": 512, "hop_length": 320, "n_mels": 32, "fmin": 40, "fmax": 15000}
STEMS = ["H01_20240101_000000", "H02_20240101_000500", "H03_20240101_001000"]
VAL_STEMS = ["V01_20240102_000000", "V02_20240102_000500"]  # the val split: other files, other labels
SCIENTIFIC = {"sp_a": "Omnia sonora", "frog1": "Beta secunda"}  # the stand-in teacher's classes 4 and 1
COVERED = ["sp_a", "frog1"]  # sp_b and 1020593 are unknown to it


def run_stage(name: str, *args: str | Path) -> None:
    argv = sys.argv
    sys.argv = [name, *map(str, args)]
    try:
        runpy.run_path(str(ROOT / "stages" / f"{name}.py"), run_name="__main__")
    finally:
        sys.argv = argv


def ensemble_args(root: Path, params: Path, name: str, val: str = "val_soundscapes") -> list:
    data = root / "data"
    return [
        "--params", params, "--soundscapes", data / "test_soundscapes", "--labels", data / "test_labels.csv",
        "--val-soundscapes", data / val, "--val-labels", data / "val_labels.csv",
        "--sample", data / "sample_submission.csv", "--taxonomy", data / "taxonomy.csv",
        "--train-csv", data / "train.csv", "--train-dir", root / "build" / "train", "--out", root / "build" / name,
        "--metrics", root / "metrics" / f"{name}.json", "--timings", root / "metrics" / "timing" / f"{name}.json",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    data = root / "data"
    rng = np.random.default_rng(0)
    t = np.arange(60 * SR) / SR
    for split, stems in (("test", STEMS), ("val", VAL_STEMS)):
        (data / f"{split}_soundscapes").mkdir(parents=True)
        for i, stem in enumerate(stems):
            tone = 0.2 * np.sin(2 * np.pi * (1000 + 1500 * i) * t)
            wave = (0.05 * rng.normal(size=t.size) + tone).astype(np.float32)
            sf.write(data / f"{split}_soundscapes" / f"{stem}.{'ogg' if i == 0 else 'wav'}", wave, SR)
        ids = [rid for s in stems for rid in row_ids(s, 12)]
        labels = pd.DataFrame((rng.uniform(size=(len(ids), 4)) < 0.3).astype(int), columns=CLASSES)
        labels.insert(0, "row_id", ids)
        labels.to_csv(data / f"{split}_labels.csv", index=False)
    labels = pd.read_csv(data / "test_labels.csv")
    sample = labels.copy()
    sample[CLASSES] = 0.0
    sample.to_csv(data / "sample_submission.csv", index=False)
    scientific = [SCIENTIFIC.get(c, f"Nulla {c}") for c in CLASSES]
    pd.DataFrame({"primary_label": CLASSES, "class_name": [TAXA[c] for c in CLASSES], "scientific_name": scientific})\
        .to_csv(data / "taxonomy.csv", index=False)  # fmt: skip
    pd.DataFrame({"primary_label": ["sp_a"] * 20 + ["sp_b"] * 5 + ["frog1", "1020593"]}).to_csv(
        data / "train.csv", index=False
    )
    for name, head, classes in (("sed_tiny", "sed", CLASSES), ("cnn_group", "cnn", ["frog1", "1020593"])):
        torch.manual_seed(0)
        model = create_model({"head": head, "backbone": "test_efficientnet"}, len(classes), MEL)
        save_checkpoint(root / "build" / "train" / "it0" / name / "model.pt", model, {"classes": classes})
    params = {
        "tracking": {"enabled": False},
        "ensemble": {
            "members": [
                {"iteration": 0, "model": "sed_tiny", "weight": 1.0},
                {"iteration": 0, "model": "cnn_group", "weight": 1.0, "predict": {"chunk_s": 10}},
            ],
            "combination": "mean",
            "fit": {"method": "coordinate", "rounds": 1, "grid": [0.5, 1.0, 2.0]},  # on val (the default source)
            "predict": {"chunk_s": 5, "stride_s": 5, "batch_size": 12},
            "postprocess": {
                "delta_shift": {"enabled": True, "frames": 1},
                "smoothing": {"enabled": True, "class_strength": {"low": 0.5, "high": 1.0}},
                "topk_boost": {"enabled": True, "k": 1},
            },
            "workers": 1,
            "file_seconds": 60,
        },
        "infer": {"backend": "auto", "workers": 1, "threads": 1, "on_error": "fallback", "file_seconds": 60},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    run_stage("ensemble", *ensemble_args(root, root / "params.yaml", "ensemble"))
    return root


def test_without_val_soundscapes_hand_weights_work_and_fitting_on_val_is_an_error(project: Path):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["ensemble"]["fit"]["method"] = "none"  # the default: the val split is not needed
    (project / "hand_params.yaml").write_text(yaml.safe_dump(params))
    run_stage("ensemble", *ensemble_args(project, project / "hand_params.yaml", "ensemble_hand", "no_val"))
    metrics = json.loads((project / "metrics" / "ensemble_hand.json").read_text())
    assert metrics["score"] == metrics["score_hand_weights"] and not any(k.startswith("val_") for k in metrics)
    spec = json.loads((project / "build" / "ensemble_hand" / "spec.json").read_text())
    assert spec["weights"] == {"method": "hand", "fitted_on": None}
    assert [m["weight"] for m in spec["members"]] == [0.5, 0.5]
    message = "ensemble.fit.source: val needs labelled validation soundscapes, but .*no_val does not exist"
    with pytest.raises(SystemExit, match=message):
        run_stage("ensemble", *ensemble_args(project, project / "params.yaml", "ensemble_no_val", "no_val"))
    assert not (project / "build" / "ensemble_no_val").exists()


def infer_args(root: Path, soundscapes: Path, out: str = "submission.csv", name: str = "infer") -> list:
    data = root / "data"
    return [
        "--params", root / "params.yaml", "--spec", root / "build" / "ensemble" / "spec.json",
        "--export", root / "build" / "export", "--soundscapes", soundscapes,
        "--sample", data / "sample_submission.csv", "--labels", data / "test_labels.csv",
        "--taxonomy", data / "taxonomy.csv", "--out", root / out, "--metrics", root / "metrics" / f"{name}.json",
        "--timings", root / "metrics" / "timing" / f"{name}.json",
    ]  # fmt: skip


def test_ensemble_stage_writes_spec_scores_and_metrics(project: Path):
    spec = json.loads((project / "build" / "ensemble" / "spec.json").read_text())
    assert spec["classes"] == CLASSES
    names = [m["name"] for m in spec["members"]]
    assert names == ["it0_sed_tiny", "it0_cnn_group"]
    assert spec["members"][0]["classes"] is None and spec["members"][1]["classes"] == ["frog1", "1020593"]
    assert spec["members"][1]["predict"] == {"chunk_s": 10} and spec["members"][0]["mel"]["n_mels"] == 32
    assert sum(m["weight"] for m in spec["members"]) == pytest.approx(1.0)
    assert spec["class_counts"] == [20, 5, 1, 1]
    metrics = json.loads((project / "metrics" / "ensemble.json").read_text())
    for key in ("score", "score_aves", "score_amphibia", "score_insecta", "member_it0_sed_tiny_score",
                "member_it0_cnn_group_score", "score_hand_weights", "weights_fitted_in_sample"):  # fmt: skip
        assert key in metrics, key
    assert "member_it0_cnn_group_score_aves" not in metrics  # the group member has no bird classes
    # fitted on the val split: the fit's best is the ensemble's val score, and the test score is out of sample
    assert metrics["fit_score_val"] == pytest.approx(metrics["val_score"], abs=1e-12)
    assert metrics["weights_fitted_in_sample"] == 0 and metrics["n_val_soundscapes"] == 2
    assert metrics["val_score"] != pytest.approx(metrics["score"], abs=1e-6)  # two splits, two scores
    assert spec["weights"] == {"method": "coordinate", "fitted_on": "val"}
    tables = sorted(p.name for p in (project / "build" / "ensemble" / "member_scores").iterdir())
    assert tables == ["ensemble.parquet", "it0_cnn_group.parquet", "it0_sed_tiny.parquet"]


def test_infer_stage_reproduces_the_ensemble_scores(project: Path):
    run_stage("infer", *infer_args(project, project / "data" / "test_soundscapes"))
    sub = pd.read_csv(project / "submission.csv")
    sample = pd.read_csv(project / "data" / "sample_submission.csv")
    assert list(sub.columns) == list(sample.columns) and sub["row_id"].tolist() == sample["row_id"].tolist()
    assert sub[CLASSES].to_numpy().min() >= 0 and sub[CLASSES].to_numpy().max() <= 1
    expected = pd.read_parquet(project / "build" / "ensemble" / "member_scores" / "ensemble.parquet")
    np.testing.assert_allclose(sub[CLASSES].to_numpy(), expected[CLASSES].to_numpy(), atol=2e-5)
    metrics = json.loads((project / "metrics" / "infer.json").read_text())
    ens = json.loads((project / "metrics" / "ensemble.json").read_text())
    assert metrics["score"] == pytest.approx(ens["score"], abs=1e-3) and metrics["score_insecta"] > 0
    timings = json.loads((project / "metrics" / "timing" / "infer.json").read_text())
    for key in ("seconds_per_soundscape_minute", "peak_rss_mb", "projected_kaggle_minutes", "stage_seconds"):
        assert timings[key] > 0, key
    assert not any(TIMING_KEY.search(key) for key in metrics)  # a rerun reproduces the scores file byte for byte
    assert metrics["n_files"] == 3 and metrics["n_failed"] == 0 and timings["cores"] == 1


def test_infer_stage_gives_rows_for_corrupt_and_short_files(project: Path, tmp_path: Path):
    folder = tmp_path / "hidden"
    folder.mkdir()
    (folder / "broken_1.ogg").write_bytes(b"not audio at all")
    sf.write(folder / "short_2.wav", np.zeros(17 * SR, dtype=np.float32) + 0.01, SR)
    run_stage("infer", *infer_args(project, folder, "hidden.csv"))
    sub = pd.read_csv(project / "hidden.csv")
    assert sub["row_id"].tolist() == row_ids("broken_1", 12) + row_ids("short_2", 12)
    assert not sub[CLASSES].isna().any().any()
    metrics = json.loads((project / "metrics" / "infer.json").read_text())
    assert metrics["n_failed"] == 1 and metrics["n_scored_rows"] == 0


@pytest.mark.slow  # the ONNX export alone takes ~1.5 min on 2 shared cores
def test_infer_stage_on_the_onnx_export_matches_torch(project: Path):
    from birdclef.infer.export import export_ensemble

    spec = json.loads((project / "build" / "ensemble" / "spec.json").read_text())
    # A folder of its own: with build/export there, the other tests' `auto` backend would run ONNX, not torch.
    export = project / "build" / "export_onnx"
    export_ensemble(spec["members"], export, {"fused": False, "bench_repeats": 1}, spec)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["infer"]["backend"] = "onnxruntime"
    (project / "onnx_params.yaml").write_text(yaml.safe_dump(params))
    args = infer_args(project, project / "data" / "test_soundscapes", "onnx.csv")
    args[1], args[args.index("--export") + 1] = project / "onnx_params.yaml", export
    run_stage("infer", *args)
    onnx = pd.read_csv(project / "onnx.csv")
    expected = pd.read_parquet(project / "build" / "ensemble" / "member_scores" / "ensemble.parquet")
    np.testing.assert_allclose(onnx[CLASSES].to_numpy(), expected[CLASSES].to_numpy(), atol=1e-3)


def teacher_params(root: Path, **teacher) -> Path:
    """The project's params with ensemble.teacher on and the stand-in ONNX teacher (BirdNET's 48 kHz, 3-s geometry)."""
    section = {**stand_in_section(root / "stand_in"), **teacher}
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["ensemble"]["teacher"] = {"enabled": True, "weight": 0.2, "method": "rank"}
    params["teacher"] = section
    path = root / f"teacher_params_{len(list(root.glob('teacher_params_*')))}.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture(scope="module")
def with_teacher(project: Path) -> Path:
    """The ensemble stage again with the stand-in teacher as a member (build/ensemble_teacher)."""
    params = teacher_params(project)
    run_stage("ensemble", *ensemble_args(project, params, "ensemble_teacher"))
    return params


def test_the_ensemble_stage_blends_the_teacher_in_on_the_species_it_covers(project: Path, with_teacher: Path):
    out = project / "build" / "ensemble_teacher"
    spec = json.loads((out / "spec.json").read_text())
    entry = spec["teacher"]
    assert entry["index"] == [4, -1, 1, -1] and entry["runtime"] == "onnx" and entry["weight"] == 0.2
    assert Path(entry["files"]["model"]["path"]).is_absolute() and entry["reference"]["columns"] == [0, 2]
    scores = {n: pd.read_parquet(out / "member_scores" / f"{n}.parquet") for n in ("ensemble", "students", "teacher")}
    assert list(scores["teacher"].columns) == ["row_id", *COVERED]
    students = scores["students"][CLASSES].to_numpy()
    mixed = blend(students[:, [0, 2]], scores["teacher"][COVERED].to_numpy(), 0.2, "rank")
    np.testing.assert_allclose(scores["ensemble"][COVERED].to_numpy(), mixed, atol=1e-6)
    np.testing.assert_array_equal(scores["ensemble"][["sp_b", "1020593"]].to_numpy(), students[:, [1, 3]])
    # the teacher's column is the adapter's own prediction on the file ("Omnia sonora" = its class 4)
    section = yaml.safe_load(with_teacher.read_text())["teacher"]
    teacher = create_teacher(section.pop("name"), section)
    wave = runner.load_audio(sorted((project / "data" / "test_soundscapes").iterdir())[0])
    np.testing.assert_allclose(scores["teacher"]["sp_a"].to_numpy()[:12], predict_windows(teacher, wave)[0][:, 4],
                               rtol=1e-5)  # fmt: skip
    metrics = json.loads((project / "metrics" / "ensemble_teacher.json").read_text())
    alone = json.loads((project / "metrics" / "ensemble.json").read_text())
    assert metrics["students_score"] == pytest.approx(alone["score"], abs=1e-9)  # the same students
    timings = json.loads((project / "metrics" / "timing" / "ensemble_teacher.json").read_text())
    assert metrics["teacher_n_covered"] == 2 and timings["teacher_seconds_per_soundscape_minute"] > 0
    for key in ("score", "teacher_score", "students_covered_score", "val_score"):  # val: the teacher joined there
        assert 0 <= metrics[key] <= 1, key


def test_infer_with_the_teacher_blends_over_all_rows_and_counts_its_time(project: Path, with_teacher: Path):
    spec = members.load_spec(project / "build" / "ensemble_teacher" / "spec.json")
    args = infer_args(project, project / "data" / "test_soundscapes", "submission_teacher.csv", "infer_teacher")
    args[1], args[3] = with_teacher, project / "build" / "ensemble_teacher" / "spec.json"
    run_stage("infer", *args)
    sub = pd.read_csv(project / "submission_teacher.csv")
    # the students alone, then the teacher over the same files, blended by hand
    files = runner.list_soundscapes(project / "data" / "test_soundscapes")
    students_spec = {k: v for k, v in spec.items() if k != "teacher"}
    preds, students = runner.infer(students_spec, files, members.torch_factory, workers=1, threads=1,
                                   on_error="fallback")  # fmt: skip
    teacher = teacher_member.predict_files(spec["teacher"], files, preds.n_windows).probs
    cov = [CLASSES.index(c) for c in COVERED]
    np.testing.assert_allclose(sub[COVERED].to_numpy(), blend(students[:, cov], teacher[:, cov], 0.2), atol=1e-6)
    np.testing.assert_allclose(sub[["sp_b", "1020593"]].to_numpy(), students[:, [1, 3]], atol=1e-6)
    ranks = blend(students[:, cov], teacher[:, cov], 0.0)  # the students' ranks: the teacher must change them
    assert np.abs(sub[COVERED].to_numpy() - ranks).max() > 0.01
    metrics = json.loads((project / "metrics" / "timing" / "infer_teacher.json").read_text())
    assert metrics["teacher_projected_kaggle_minutes"] > 0 and metrics["teacher_seconds_per_soundscape_minute"] > 0
    assert metrics["projected_kaggle_minutes"] == pytest.approx(
        metrics["students_projected_kaggle_minutes"] + metrics["teacher_projected_kaggle_minutes"], abs=0.011
    )
    assert metrics["seconds_per_soundscape_minute"] > metrics["students_seconds_per_soundscape_minute"]


def test_a_teacher_member_that_cannot_apply_is_an_error_naming_the_params(project: Path, monkeypatch):
    monkeypatch.delenv("TEACHER_ONNX", raising=False)
    cases = [
        ({"name": None}, "ensemble.teacher.enabled needs the teacher's adapter: set teacher.name"),
        (
            {"model_path": str(project / "gone.onnx")},
            "teacher.model_path: nothing at .*gone.onnx \\(it should be an ONNX teacher model\\)",
        ),
        ({"model_path": None}, "teacher.model_path is not set and neither is the environment variable TEACHER_O"),
    ]
    for teacher, message in cases:  # fmt: skip
        params = teacher_params(project, **teacher)
        with pytest.raises(SystemExit, match=message):
            run_stage("ensemble", *ensemble_args(project, params, "ensemble_broken"))
    assert not (project / "build" / "ensemble_broken").exists()
