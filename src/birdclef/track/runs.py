"""One MLflow run per stage execution, tagged with git commit, dirty flag, DVC stage and data version."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

PARENT_ENV = "MLFLOW_PARENT_RUN_ID"


def project_root(start: Path | None = None) -> Path:
    """The project root: the git top level, seen through DVC's temporary experiment workspaces.

    ``dvc exp run --temp`` and queued experiments run in a copy under ``<root>/.dvc/tmp/exps/``; their runs must
    land in the real project's store, so that prefix is stripped.
    """
    here = (start or Path.cwd()).resolve()
    parts = here.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        return Path(top)
    except (subprocess.CalledProcessError, FileNotFoundError):
        return here


def tracking_uri(root: Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else an absolute sqlite store ``<project root>/mlflow.db``.

    MLflow 3 refuses the plain ./mlruns file store, and a relative path would lose runs made from DVC's
    temporary experiment directories.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(root or project_root()) / 'mlflow.db'}"


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested params to dotted keys with string values (MLflow params are strings)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, list | tuple | bool) or value is None else str(value)
    return out


def params_digest(params: Mapping[str, Any]) -> str:
    """A short stable hash of a params dict (sorted JSON), to group runs made with identical settings."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _git(root: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return ""


def provenance_tags(root: Path, stage: str, params: Mapping[str, Any]) -> dict[str, str]:
    """Tags that tie a run to the code, data and settings that made it."""
    tags = {
        "git_commit": _git(root, "rev-parse", "HEAD") or "unknown",
        "git_dirty": str(bool(_git(root, "status", "--porcelain", "--untracked-files=no"))).lower(),
        "dvc_stage": os.environ.get("DVC_STAGE", stage),
        "params_digest": params_digest(params),
    }
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    data_dvc = root / "data.dvc"
    if data_dvc.exists():
        for line in data_dvc.read_text().splitlines():
            if line.strip().startswith("- md5:") or line.strip().startswith("md5:"):
                tags["data_md5"] = line.split(":", 1)[1].strip()
                break
    if os.environ.get(PARENT_ENV):
        tags["mlflow.parentRunId"] = os.environ[PARENT_ENV]
    return tags


class NullRun:
    """The recorder used when tracking is off: same interface as :class:`StageRun`, records nothing."""

    run_id: str | None = None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Ignore metrics."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Ignore params."""

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Ignore artifacts."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Ignore tags."""


class StageRun(NullRun):
    """An active MLflow run for one stage execution."""

    def __init__(self, mlflow: Any, run_id: str) -> None:
        self._mlflow = mlflow
        self.run_id = run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics (non-finite and non-numeric values are skipped)."""
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and v == v}
        if clean:
            self._mlflow.log_metrics(clean, step=step)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params, flattened to dotted keys."""
        flat = flatten(params)
        items = list(flat.items())
        for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            self._mlflow.log_params(dict(items[i : i + 100]))

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Copy a file or directory into the run's artifacts."""
        p = Path(path)
        if p.is_dir():
            self._mlflow.log_artifacts(str(p), artifact_path=artifact_path)
        elif p.exists():
            self._mlflow.log_artifact(str(p), artifact_path=artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set run tags."""
        self._mlflow.set_tags(dict(tags))


@contextlib.contextmanager
def stage_run(
    stage: str, params: Mapping[str, Any], tracking: Mapping[str, Any] | None = None
) -> Iterator[NullRun]:
    """Open one MLflow run for a stage execution, or a :class:`NullRun` when tracking is disabled.

    Args:
        stage: stage name (``DVC_STAGE`` from the environment wins when DVC runs the stage).
        params: the params the stage used; logged flattened and digested into a tag.
        tracking: the ``tracking`` params section (``enabled``, ``experiment``).

    Yields:
        A recorder with ``log_metrics``, ``log_params``, ``log_artifact`` and ``set_tags``.
    """
    tracking = dict(tracking or {})
    if not tracking.get("enabled", True) or os.environ.get("BIRDCLEF_TRACKING", "1") == "0":
        yield NullRun()
        return
    import mlflow  # imported lazily: slow to import and unneeded when tracking is off

    root = project_root()
    mlflow.set_tracking_uri(tracking_uri(root))
    mlflow.set_experiment(tracking.get("experiment", "birdclef"))
    name = os.environ.get("DVC_STAGE", stage)
    with mlflow.start_run(run_name=name, tags=provenance_tags(root, stage, params)) as active:
        run = StageRun(mlflow, active.info.run_id)
        run.log_params(params)
        yield run
