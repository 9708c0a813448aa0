"""stages/distill.py checks its params sections (distill.*, its train override merged over train.*) before anything
runs, and writes the fixed marker when distillation is off."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import yaml

from birdclef.io import load_params, read_json

REPO = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, monkeypatch, params: dict) -> int:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    spec = importlib.util.spec_from_file_location("distill_stage", REPO / "stages/distill.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    args = ["--params", str(tmp_path / "params.yaml"), "--teacher", str(tmp_path / "teacher"), "--features",
            str(tmp_path / "features"), "--out", str(tmp_path / "out"), "--resume", str(tmp_path / "resume"),
            "--metrics", str(tmp_path / "metrics.json"), "--timings", str(tmp_path / "timings.json")]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["distill.py", *args])
    return stage.main()


def _params() -> dict:
    params = copy.deepcopy(load_params(REPO / "params.yaml"))
    params["tracking"] = {"enabled": False}
    return params


def test_a_typo_in_the_distill_train_override_stops_the_stage(tmp_path, monkeypatch, capsys):
    params = _params()
    params["distill"]["train"] = {"loop": {"epochz": 3}}
    assert _run(tmp_path, monkeypatch, params) == 1
    assert "unknown key distill.train.loop.epochz; valid: " in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_off_writes_the_marker(tmp_path, monkeypatch):
    assert _run(tmp_path, monkeypatch, _params()) == 0
    assert read_json(tmp_path / "out/distill.json") == {"enabled": False, "members": []}
    assert read_json(tmp_path / "metrics.json") == {"enabled": 0}
