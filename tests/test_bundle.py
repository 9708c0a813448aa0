"""Tests for birdclef.infer.bundle and the bundled Kaggle script (run without torch and without birdclef)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from teacher_fixtures import stand_in_entry

from birdclef.infer.bundle import build_bundle, bundle_command, check_standalone, verify_bundle
from birdclef.infer.members import make_factory
from birdclef.infer.runner import infer
from birdclef.infer.submission import build_submission, read_sample, row_ids, write_submission
from birdclef.track import params_digest

from export_fixtures import CLASSES, exported, write_soundscapes

STEMS = ["S01_20250101_000000", "S02_20250101_000500"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return exported(tmp_path_factory)


def _git(root: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    return subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump({"seed": 0, "export": {"opset": 18}}))
    (root / "data.dvc").write_text("outs:\n- md5: 0123456789abcdef0123456789abcdef.dir\n  path: data\n")
    lock = {"schema": "2.0", "stages": {"export": {"outs": [{"path": "build/export", "md5": "feedbeef.dir"}]}}}
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "init")
    return root


def test_bundle_holds_script_helpers_graphs_and_a_manifest_of_provenance(built, project, tmp_path):
    out = tmp_path / "bundle"
    manifest = build_bundle(built["export"], out, project)
    assert sorted(manifest["files"]) == [
        "birdclef_bundle/__init__.py",
        "birdclef_bundle/backends.py",
        "birdclef_bundle/ensemble.py",
        "birdclef_bundle/melspec.py",
        "birdclef_bundle/postprocess.py",
        "birdclef_bundle/teacher_member.py",
        "birdclef_bundle/teacher_runtime.py",
        "birdclef_bundle/windows.py",
        "model/export_spec.json",
        "model/frontend_mel_tiny.npz",
        "model/frontend_mel_tiny.onnx",
        "model/member_it0_cnn_group.onnx",
        "model/member_it0_sed_tiny.onnx",
        "predict_kaggle.py",
    ]
    assert json.loads((out / "MANIFEST.json").read_text()) == manifest
    assert manifest["git_commit"] == _git(project, "rev-parse", "HEAD") and manifest["git_dirty"] is False
    assert manifest["dvc_lock_md5"] == hashlib.md5((project / "dvc.lock").read_bytes()).hexdigest()
    assert manifest["dvc_lock_outs"] == {"build/export": "feedbeef.dir"}
    assert manifest["data_dvc_md5"] == "0123456789abcdef0123456789abcdef.dir"
    assert manifest["params_digest"] == params_digest(yaml.safe_load((project / "params.yaml").read_text()))
    onnx = out / "model" / "member_it0_sed_tiny.onnx"
    assert manifest["files"][f"model/{onnx.name}"]["sha256"] == hashlib.sha256(onnx.read_bytes()).hexdigest()
    assert verify_bundle(out) == []
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    assert verify_bundle(out) == ["model/member_it0_sed_tiny.onnx"]


def test_bundle_command_flags_a_dirty_working_tree(built, project, tmp_path):
    (project / "params.yaml").write_text(yaml.safe_dump({"seed": 1}))
    out = tmp_path / "bundle"
    result = CliRunner().invoke(
        bundle_command, ["--out", str(out), "--export", str(built["export"]), "--root", str(project)]
    )
    assert result.exit_code == 0, result.output
    assert "dirty" in result.output and json.loads((out / "MANIFEST.json").read_text())["git_dirty"] is True


def test_bundle_refuses_an_export_without_an_ensemble_spec(built, tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    spec = json.loads((built["export"] / "export_spec.json").read_text())
    spec["ensemble"] = {}
    (export / "export_spec.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="no ensemble spec"):
        build_bundle(export, tmp_path / "bundle", tmp_path)


def test_check_standalone_rejects_module_level_imports_of_the_repository(tmp_path):
    ok = tmp_path / "ok.py"
    ok.write_text("import json\nimport numpy as np\n\ndef f():\n    import torch\n")
    check_standalone(ok)
    bad = tmp_path / "bad.py"
    bad.write_text("import numpy as np\nfrom birdclef import SAMPLE_RATE\n")
    with pytest.raises(ValueError, match="bad.py:2.*birdclef"):
        check_standalone(bad)
    # bundle-internal imports must name a bundled helper: the runner and the spec side stay in the repository
    inside = tmp_path / "inside.py"
    lines = ("from .melspec import NumpyFrontEnd", "from . import teacher_runtime",
             "from birdclef_bundle import ensemble, windows", "from birdclef_bundle.backends import X")  # fmt: skip
    inside.write_text("\n".join(lines) + "\n")
    check_standalone(inside)
    for line in ("from .runner import infer", "from . import windows, members", "from birdclef_bundle import export",
                 "from birdclef_bundle.ensemble_spec import build_spec"):  # fmt: skip
        inside.write_text(f"import numpy as np\n{line}\n")
        with pytest.raises(ValueError, match=r"inside.py:2: imports \['(runner|members|export|ensemble_spec)'\]"):
            check_standalone(inside)


@pytest.fixture(scope="module")
def teacher_export(built, tmp_path_factory):
    """The export with a teacher member: the stand-in ONNX teacher (48 kHz, 3-s windows) covering sp_a and ins1."""
    root = tmp_path_factory.mktemp("teacher_export")
    entry = stand_in_entry(root / "stand_in", CLASSES, {"sp_a": "Omnia sonora", "ins1": "Gamma tertia"})
    entry["class_weights"] = [0.9, 0.2, 0.2, 0.0]  # a per-class fit's shares travel in the spec too
    export = root / "export"
    shutil.copytree(built["export"], export)
    spec = json.loads((export / "export_spec.json").read_text())
    spec["ensemble"]["teacher"] = entry
    (export / "export_spec.json").write_text(json.dumps(spec))
    return {"export": export, "spec": {**built["spec"], "teacher": entry}, "stand_in": root / "stand_in"}


def test_a_teacher_member_travels_in_the_bundle_with_its_files(teacher_export, tmp_path):
    out = tmp_path / "bundle"
    manifest = build_bundle(teacher_export["export"], out, tmp_path)
    assert {"model/teacher/energy.onnx", "model/teacher/labels.txt"} <= set(manifest["files"])
    for name in ("energy.onnx", "labels.txt"):
        assert (out / "model/teacher" / name).read_bytes() == (teacher_export["stand_in"] / name).read_bytes()
    entry = json.loads((out / "model/export_spec.json").read_text())["ensemble"]["teacher"]
    assert entry["files"]["model"]["path"] == "teacher/energy.onnx"  # relative to model/: Kaggle mounts it anywhere
    assert entry["files"]["labels"]["path"] == "teacher/labels.txt" and entry["index"] == [4, -1, -1, 2]
    (teacher_export["stand_in"] / "labels.txt").write_text("changed")  # a bundle is only built from the files mapped
    try:
        with pytest.raises(ValueError, match="labels.txt: the teacher labels file changed since the ensemble stage"):
            build_bundle(teacher_export["export"], tmp_path / "other", tmp_path)
    finally:
        shutil.copy2(out / "model/teacher/labels.txt", teacher_export["stand_in"] / "labels.txt")


@pytest.mark.parametrize("with_teacher", [False, True], ids=["students", "teacher_member"])
def test_bundled_script_without_torch_or_birdclef_reproduces_the_runner_submission(
    built, teacher_export, tmp_path, with_teacher
):
    export, spec = (
        (teacher_export["export"], teacher_export["spec"]) if with_teacher else (built["export"], built["spec"])
    )
    folder = tmp_path / "test_soundscapes"
    files = write_soundscapes(folder, STEMS)
    (folder / "S03_broken.ogg").write_bytes(b"not audio at all")
    files.append(folder / "S03_broken.ogg")
    stems = [f.stem for f in files]
    sample = pd.DataFrame({"row_id": [r for s in stems for r in row_ids(s, 12)], **{c: 0.0 for c in CLASSES}})
    sample.to_csv(tmp_path / "sample_submission.csv", index=False)

    factory = make_factory("onnxruntime", export)
    preds, scores = infer(spec, files, factory, workers=1, threads=1, on_error="fallback")
    assert preds.failed.keys() == {"S03_broken"}
    assert (preds.teacher is not None) == with_teacher
    if with_teacher:  # the per-class shares are what the runner blends with, not the one weight
        one = {**spec, "teacher": {**spec["teacher"], "class_weights": None}}
        _, one_scores = infer(one, files, factory, workers=1, threads=1, on_error="fallback")
        assert np.abs(one_scores[:, 0] - scores[:, 0]).max() > 1e-3
    sample = read_sample(tmp_path / "sample_submission.csv")
    expected = build_submission(preds.stems, preds.n_windows, scores, CLASSES, sample)
    write_submission(expected, tmp_path / "expected.csv")

    bundle = tmp_path / "bundle"
    build_bundle(export, bundle, tmp_path)
    blocker = tmp_path / "blocked"
    for package in ("torch", "birdclef"):
        (blocker / package).mkdir(parents=True)
        (blocker / package / "__init__.py").write_text(f"raise ImportError('{package} is not available on Kaggle')\n")
    result = subprocess.run(
        [sys.executable, str(bundle / "predict_kaggle.py"), "--soundscapes", str(folder), "--sample",
         str(tmp_path / "sample_submission.csv"), "--out", str(tmp_path / "submission.csv"), "--workers", "2",
         "--backend", "onnxruntime"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(blocker)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "S03_broken" in result.stderr  # the corrupt file is reported, its rows get the class means
    got = pd.read_csv(tmp_path / "submission.csv")
    want = pd.read_csv(tmp_path / "expected.csv")
    assert list(got.columns) == list(want.columns) and got["row_id"].tolist() == want["row_id"].tolist()
    np.testing.assert_allclose(got[CLASSES].to_numpy(), want[CLASSES].to_numpy(), rtol=0, atol=1e-6)
    assert got[CLASSES].to_numpy().std() > 0  # real predictions, not a constant fill
    if with_teacher:  # the blend of the covered species is in the script's submission, not the students' scores
        assert "teacher onnx member" in result.stderr
        alone = infer(built["spec"], files, factory, workers=1, threads=1, on_error="fallback")[1]
        np.testing.assert_allclose(got[["sp_b", "frog1"]].to_numpy(), alone[:, [1, 2]], atol=1e-6)
        assert np.abs(got[["sp_a", "ins1"]].to_numpy() - alone[:, [0, 3]]).max() > 0.05


def _timings(folder: Path, built, scale: float) -> Path:
    # The export's own timings with every member's time scaled: scale 1e4 puts 700 soundscapes past 90 minutes.
    timings = {k: v * scale if k.startswith("member_seconds") else v for k, v in built["timings"].items()}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "export.json").write_text(json.dumps(timings))
    return folder


def test_bundle_prints_the_budget_plan_and_refuses_a_bundle_past_the_limit(built, project, tmp_path):
    args = ["--export", str(built["export"]), "--root", str(project)]
    ok = _timings(tmp_path / "fast", built, 1.0)
    result = CliRunner().invoke(bundle_command, ["--out", str(tmp_path / "b1"), "--timings", str(ok), *args])
    assert result.exit_code == 0, result.output
    assert "Kaggle budget:" in result.output and "it0_sed_tiny@fp32" in result.output and "fit alone" in result.output
    slow = _timings(tmp_path / "slow", built, 1e4)
    result = CliRunner().invoke(bundle_command, ["--out", str(tmp_path / "b2"), "--timings", str(slow), *args])
    assert result.exit_code != 0 and "past the 90-minute limit" in result.output
    assert not (tmp_path / "b2").exists()  # refused before anything is written
    result = CliRunner().invoke(
        bundle_command, ["--out", str(tmp_path / "b3"), "--timings", str(slow), "--over-budget", "warn", *args]
    )
    assert result.exit_code == 0 and "WARNING" in result.output and (tmp_path / "b3" / "MANIFEST.json").is_file()


def test_bundle_of_an_fp16_export_carries_the_ir_weights_and_the_fp32_fallback(built, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(built["export"], export)
    spec = json.loads((export / "export_spec.json").read_text())
    member = spec["members"][0]
    for suffix in (".xml", ".bin"):  # stand-ins: the bundle copies files, it does not load them
        (export / f"member_fp16{suffix}").write_text(suffix)
    spec["precision"], member["body_fp32"], member["body"] = "fp16", member["body"], "member_fp16.xml"
    (export / "export_spec.json").write_text(json.dumps(spec))
    build_bundle(export, tmp_path / "bundle")
    model = tmp_path / "bundle" / "model"
    assert (model / "member_fp16.xml").is_file() and (model / "member_fp16.bin").read_text() == ".bin"
    assert (model / member["body_fp32"]).is_file()
