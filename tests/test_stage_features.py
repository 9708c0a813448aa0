"""Smoke tests of stages/features.py run as DVC runs it (subprocesses), and a slow run of acquire -> clean ->
features on the SynthCLEF tiny preset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from birdclef.features.cache import WaveCache
from birdclef.io import load_params, read_json

from audio_fixtures import bird_calls, write_audio

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
       "BIRDCLEF_TRACKING": "0"}  # fmt: skip  # MLflow runs: tests/test_stage_acquire.py, test_track_repro.py


def _params(root: Path, **features) -> None:
    prod = load_params(REPO / "params.yaml")  # the production sections, shrunk
    doc = {"clean": prod["clean"], "acquire": prod["acquire"],
           "features": {**prod["features"], **features}}
    (root / "params.yaml").write_text(yaml.safe_dump(doc))


def _stage(root: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / f"stages/{name}.py"), "--params", "params.yaml", *args]
    return subprocess.run(cmd, cwd=root, env=ENV, capture_output=True, text=True, timeout=600)


def _features(root: Path) -> subprocess.CompletedProcess:
    return _stage(root, "features", "--data", "data", "--segments", "build/clean/segments.parquet", "--soundscapes",
                  "build/acquire/soundscapes.parquet", "--out", "build/features", "--metrics", "metrics/features.json",
                  "--timings", "metrics/timing/features.json")


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    write_audio(data / "train_audio/sp1/XC1.ogg", bird_calls(8, 1))
    write_audio(data / "train_soundscapes/S1.ogg", bird_calls(12, 2))
    write_audio(data / "test_soundscapes/T1.ogg", bird_calls(12, 3))
    (tmp_path / "build/clean").mkdir(parents=True)
    (tmp_path / "build/acquire").mkdir(parents=True)
    pd.DataFrame({"segment_id": ["sp1/XC1.ogg@0.000-3.000", "sp1/XC1.ogg@4.500-8.000"],
                  "path": ["train_audio/sp1/XC1.ogg"] * 2, "start_s": [0.0, 4.5], "end_s": [3.0, 8.0]}
                 ).to_parquet(tmp_path / "build/clean/segments.parquet")
    pd.DataFrame({"soundscape_id": ["S1", "T1"], "path": ["train_soundscapes/S1.ogg", "test_soundscapes/T1.ogg"],
                  "split": ["train", "test"], "duration_s": [12.0, 12.0], "sample_rate": [32000] * 2,
                  "channels": [1, 1]}).to_parquet(tmp_path / "build/acquire/soundscapes.parquet")
    return tmp_path


def test_features_stage(layout: Path) -> None:
    _params(layout)
    result = _features(layout)
    assert result.returncode == 0, result.stderr
    cache = WaveCache(layout / "build/features")
    assert cache.keys("segment") == ["sp1/XC1.ogg@0.000-3.000", "sp1/XC1.ogg@4.500-8.000"]
    assert cache.keys("train_soundscape") == ["S1"] and cache.keys("test_soundscape") == ["T1"]
    assert cache.length("sp1/XC1.ogg@4.500-8.000") == 112_000 and cache.rms_hop == 3200
    meta = read_json(layout / "build/features/meta.json")
    assert meta["sample_rate"] == 32_000
    assert np.load(layout / "build/features/waves.npy", mmap_mode="r").dtype == np.int16
    m = read_json(layout / "metrics/features.json")
    assert m["keys_segment"] == 2 and m["failed"] == 0


def test_features_stage_fail_mode(layout: Path) -> None:
    (layout / "data/test_soundscapes/T1.ogg").write_bytes(b"broken" * 10)
    _params(layout, on_bad="fail", workers=1)
    result = _features(layout)
    assert result.returncode == 1 and "T1.ogg: unsupported" in result.stderr and "Traceback" not in result.stderr
    assert not (layout / "build/features").exists()


@pytest.mark.slow
def test_pipeline_on_synth_tiny(tmp_path: Path) -> None:
    from birdclef.synth import generate

    generate("tiny", 0, tmp_path / "data", workers=2)
    _params(tmp_path)
    acq = _stage(tmp_path, "acquire", "--data", "data", "--out", "build/acquire", "--metrics",
                 "metrics/data_quality.json", "--timings", "metrics/timing/acquire.json",
                 "--report", "reports/data_docs")
    assert acq.returncode == 0, acq.stderr
    clean = _stage(tmp_path, "clean", "--data", "data", "--manifest", "build/acquire", "--out", "build/clean",
                   "--metrics", "metrics/clean.json", "--timings", "metrics/timing/clean.json")
    assert clean.returncode == 0, clean.stderr
    m = read_json(tmp_path / "metrics/clean.json")
    assert m["voice_truth_files"] > 0 and m["voice_recall"] >= 0.9 and m["voice_precision"] >= 0.7
    assert _features(tmp_path).returncode == 0
    cache = WaveCache(tmp_path / "build/features")
    seg = pd.read_parquet(tmp_path / "build/clean/segments.parquet")
    assert cache.keys("segment") == seg.segment_id.tolist()
    assert len(cache.keys("train_soundscape")) == len(cache.keys("test_soundscape")) == 2
