"""Experiment tracking: MLflow runs per stage execution (runs.py is the only place that imports mlflow)."""

from birdclef.track.runs import (
    NullRun,
    StageRun,
    flatten,
    log_on_commit_run,
    params_digest,
    parent_run,
    stage_run,
    tracking_uri,
)

__all__ = [
    "NullRun",
    "StageRun",
    "flatten",
    "log_on_commit_run",
    "params_digest",
    "parent_run",
    "stage_run",
    "tracking_uri",
]
