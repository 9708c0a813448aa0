"""Smoke test of stages/clean.py run as DVC runs it (a subprocess) on a fixture layout with voice and bad files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from birdclef import schema
from birdclef.io import load_params, read_json

from audio_fixtures import bird_calls, fake_speech, manifest, write_audio

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """data/ with 4 recordings (one voiced, one 8 kHz) + synth_truth/voice.csv; build/acquire/recordings.parquet."""
    data = tmp_path / "data"
    ta = data / "train_audio"
    write_audio(ta / "sp1/XC1.ogg", np.concatenate([bird_calls(5, 1), fake_speech(3, 4), bird_calls(6, 2)]))
    write_audio(ta / "sp1/XC2.ogg", bird_calls(40, 3))
    write_audio(ta / "sp2/XC3.ogg", bird_calls(8, 4))
    write_audio(ta / "sp2/XC4.wav", bird_calls(4, 5, sr=8000), sr=8000)
    truth = data / "synth_truth" / "voice.csv"
    truth.parent.mkdir(parents=True)
    truth.write_text("file,start_s,end_s\ntrain_audio/sp1/XC1.ogg,5.0,8.0\n")
    recs = manifest([{"recording_id": r} for r in ["sp1/XC1.ogg", "sp1/XC2.ogg", "sp2/XC3.ogg", "sp2/XC4.wav"]], data)
    (tmp_path / "build/acquire").mkdir(parents=True)
    recs.to_parquet(tmp_path / "build/acquire/recordings.parquet", index=False)
    return tmp_path


def _run(root: Path, **overrides) -> subprocess.CompletedProcess:
    section = {**load_params(REPO / "params.yaml", "clean"), **overrides}  # the production section, shrunk
    (root / "params.yaml").write_text(yaml.safe_dump({"clean": section}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "BIRDCLEF_TRACKING": "0"}  # fmt: skip  # MLflow runs: tests/test_stage_acquire.py, test_track_repro.py
    cmd = [sys.executable, str(REPO / "stages/clean.py"), "--data", "data", "--manifest", "build/acquire",
           "--params", "params.yaml", "--out", "build/clean", "--metrics", "metrics/clean.json",
           "--timings", "metrics/timing/clean.json"]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_clean_stage_writes_every_output(layout: Path) -> None:
    result = _run(layout)
    assert result.returncode == 0, result.stderr
    out = layout / "build/clean"
    seg = pd.read_parquet(out / "segments.parquet")
    assert list(seg.columns) == list(schema.SEGMENTS)
    assert seg.groupby("recording_id").size().to_dict() == {"sp1/XC1.ogg": 2, "sp1/XC2.ogg": 1, "sp2/XC3.ogg": 1}
    assert seg.loc[seg.recording_id == "sp1/XC2.ogg", "end_s"].item() == 30.0
    spans = pd.read_parquet(out / "voice_spans.parquet")
    assert set(spans.recording_id) == {"sp1/XC1.ogg"}
    q = pd.read_csv(out / "quarantine.csv")
    assert q.loc[q.recording_id == "sp2/XC4.wav", "reason"].tolist() == ["low_sample_rate"]
    m = read_json(layout / "metrics/clean.json")
    assert all(not isinstance(v, dict | list) for v in m.values())  # flat
    assert m["removed_low_sample_rate"] == 1 and m["voice_files_cleaned"] == 1 and m["segments_kept"] == 4
    assert 0.5 < m["voice_recall"] <= 1.0 and 0.5 < m["voice_precision"] <= 1.0
    assert "clean: kept 4 segments" in result.stdout


def test_clean_stage_fail_mode_exits_1_naming_the_file(layout: Path) -> None:
    result = _run(layout, on_bad="fail", workers=1)
    assert result.returncode == 1
    assert "sp2/XC4.wav: low_sample_rate: 8000 Hz < 16000 Hz" in result.stderr and "Traceback" not in result.stderr
    assert not (layout / "build/clean").exists() and not (layout / "metrics").exists()


def test_clean_stage_applies_the_exclusion_list(layout: Path) -> None:
    (layout / "exclude.csv").write_text("filename,start_s,end_s,reason\nsp2/XC3.ogg,,,hand: not sp2\n")
    result = _run(layout, exclude_csv="exclude.csv", workers=1)
    assert result.returncode == 0, result.stderr
    seg = pd.read_parquet(layout / "build/clean/segments.parquet")
    assert "sp2/XC3.ogg" not in set(seg.recording_id)
    assert read_json(layout / "metrics/clean.json")["removed_manual"] == 1
