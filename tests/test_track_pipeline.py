"""`birdclef repro` (birdclef.track.pipeline): what it prints about the tracking store."""

from __future__ import annotations

from click.testing import CliRunner

from birdclef.track import pipeline


def test_repro_prints_the_tracking_uri_without_its_password(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pipeline, "run_pipeline", lambda args, exp, params: (0, "abc123"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://alice:s3cret@mlflow.example:5000")
    result = CliRunner().invoke(pipeline.repro_command, [])
    assert result.exit_code == 0
    assert "MLflow parent run abc123 in https://alice:***@mlflow.example:5000" in result.output
    assert "s3cret" not in result.output
