"""Experiment tracking: MLflow runs per stage execution (the only place that imports mlflow)."""

from birdclef.track.runs import NullRun, StageRun, flatten, params_digest, stage_run, tracking_uri

__all__ = ["NullRun", "StageRun", "flatten", "params_digest", "stage_run", "tracking_uri"]
