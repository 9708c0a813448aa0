"""Tests for birdclef.infer.bundle and the bundled Kaggle script (run without torch and without birdclef)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from birdclef.infer.bundle import build_bundle, bundle_command, check_standalone, verify_bundle
from birdclef.infer.runner import infer, make_factory
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


def test_bundled_script_without_torch_or_birdclef_reproduces_the_runner_submission(built, tmp_path):
    folder = tmp_path / "test_soundscapes"
    files = write_soundscapes(folder, STEMS)
    (folder / "S03_broken.ogg").write_bytes(b"not audio at all")
    files.append(folder / "S03_broken.ogg")
    stems = [f.stem for f in files]
    sample = pd.DataFrame({"row_id": [r for s in stems for r in row_ids(s, 12)], **{c: 0.0 for c in CLASSES}})
    sample.to_csv(tmp_path / "sample_submission.csv", index=False)

    factory = make_factory("onnxruntime", built["export"])
    preds, scores = infer(built["spec"], files, factory, workers=1, threads=1, on_error="fallback")
    assert preds.failed.keys() == {"S03_broken"}
    sample = read_sample(tmp_path / "sample_submission.csv")
    expected = build_submission(preds.stems, preds.n_windows, scores, CLASSES, sample)
    write_submission(expected, tmp_path / "expected.csv")

    bundle = tmp_path / "bundle"
    build_bundle(built["export"], bundle, tmp_path)
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
