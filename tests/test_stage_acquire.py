"""Smoke test of stages/acquire.py run as DVC runs it, with on_bad fail and skip, on a corrupted fixture."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_data_fixture import append_train_rows, make_competition_layout, train_row, truncate_file, write_audio

from birdclef.io import read_json

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def corrupted(tmp_path):
    """A fixture layout with one cut ogg (train.csv line 4) and a row with an unknown label (line 10)."""
    data = make_competition_layout(tmp_path / "data")
    truncate_file(data / "train_audio/amerob/iNat3.ogg", 0.4)
    write_audio(data / "train_audio/amerob/XC77.ogg", seed=77)
    append_train_rows(data, [train_row("amerob/XC77.ogg", secondary="['bkcdon', 'martian1']")])
    return data


def _run(tmp_path, data, on_bad, tracking_uri: str | None = None):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"seed": 0, "acquire": {"on_bad": on_bad, "n_folds": 3}, "train": {}}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    # MLflow only where a test looks at the run (opening a fresh sqlite store costs seconds)
    env |= {"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {"BIRDCLEF_TRACKING": "0"}
    cmd = [sys.executable, str(REPO / "stages/acquire.py"), "--data", str(data), "--params", str(params),
           "--out", "build/acquire", "--metrics", "metrics/data_quality.json",
           "--timings", "metrics/timing/acquire.json", "--report", "reports/data_docs"]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_fail_exits_nonzero_naming_both_problems(tmp_path, corrupted):
    result = _run(tmp_path, corrupted, "fail")
    assert result.returncode == 1, result.stderr
    assert "train.csv:4, train_audio/amerob/iNat3.ogg: truncated" in result.stderr
    assert "train.csv:10, train_audio/amerob/XC77.ogg: unknown_label: secondary label(s) 'martian1'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "build").exists() and not (tmp_path / "metrics").exists()


def test_skip_quarantines_both_and_writes_every_output(tmp_path, corrupted):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = _run(tmp_path, corrupted, "skip", tracking_uri=store)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "build" / "acquire"
    quarantine = pd.read_csv(out / "quarantine.csv", keep_default_na=False)
    assert quarantine[["kind", "row", "file"]].values.tolist() == [
        ["unknown_label", "train.csv:10", "train_audio/amerob/XC77.ogg"],
        ["truncated", "train.csv:4", "train_audio/amerob/iNat3.ogg"]]
    recordings = pd.read_parquet(out / "recordings.parquet")
    assert len(recordings) == 7 and "amerob/iNat3.ogg" not in set(recordings["recording_id"])
    assert len(pd.read_parquet(out / "soundscapes.parquet")) == 3
    assert pd.read_parquet(out / "taxonomy.parquet")["primary_label"].tolist()[0] == "1139490"
    quality = read_json(tmp_path / "metrics" / "data_quality.json")
    assert quality["quarantined_truncated"] == 1 and quality["quarantined_unknown_label"] == 1
    assert quality["recordings"] == 7 and quality["species"] == 5 and quality["soundscapes_test"] == 1
    # the raw train.csv breaks its contract (unknown secondary label), the manifest does not
    assert quality["checks_failed"] == quality["checks_failed_train_csv_secondary_labels"] == 1
    assert quality["checks_run"] > 40 and all(isinstance(v, int | float) for v in quality.values())
    assert "train_csv_secondary_labels" in result.stderr and "7 recordings" in result.stdout
    docs = tmp_path / "reports" / "data_docs"
    assert (docs / "index.html").is_file() and (docs / "validations" / "recordings").is_dir()
    # one MLflow run for the stage execution, with its params and the data-quality metrics
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.data.tags["dvc_stage"] == "acquire" and run.data.params["acquire.on_bad"] == "skip"
    assert run.data.metrics["recordings"] == 7 and run.data.metrics["quarantined_truncated"] == 1
