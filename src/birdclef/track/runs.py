"""MLflow runs: one per stage execution, a parent per pipeline execution, ledger scores (the only mlflow importer)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from birdclef.io import pid_alive
from birdclef.track.provenance import (
    PARENT_ENV,
    params_digest,
    project_root,
    provenance_tags,
    workspace_root,
)

__all__ = [
    "PARENT_ENV",
    "OWNER_TAG",
    "NullRun",
    "StageRun",
    "close_orphans",
    "flatten",
    "log_on_commit_run",
    "masked_uri",
    "params_digest",
    "parent_run",
    "project_root",
    "provenance_tags",
    "stage_run",
    "tracking_uri",
]


def tracking_uri(root: Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else an absolute sqlite store ``<project root>/mlflow.db``.

    MLflow 3 refuses the plain ./mlruns file store, and a relative path would lose runs made from DVC's
    temporary experiment directories.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(root or project_root()) / 'mlflow.db'}"


_SECRET_QUERY = re.compile(r"pass|token|secret|key|auth|sig|cred", re.IGNORECASE)


def masked_uri(uri: str) -> str:
    """``uri`` fit to print or log: a password in ``user:password@`` (or a bare ``token@``) and secret-looking
    query values (``?token=``, ``password=``, ``sig=``...) become ``***``.

    ``https://alice:s3cret@host:5000/x?token=t&run=1`` -> ``https://alice:***@host:5000/x?token=***&run=1``.
    """
    parts = urllib.parse.urlsplit(uri)
    netloc, query = parts.netloc, parts.query
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}" if ":" in userinfo else f"***@{host}"
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    if any(_SECRET_QUERY.search(k) for k, _ in pairs):
        query = "&".join(f"{k}=***" if _SECRET_QUERY.search(k) else f"{k}={v}" for k, v in pairs)
    if (netloc, query) == (parts.netloc, parts.query):
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested params to dotted keys with string values (MLflow params are strings).

    Lists, booleans and None are JSON-encoded (``[1, 2]``, ``true``, ``null``) so they read back unambiguously.
    """
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, list | tuple | bool) or value is None else str(value)
    return out


class NullRun:
    """The recorder used when tracking is off: same interface as :class:`StageRun`, records nothing."""

    run_id: str | None = None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Ignore metrics."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Ignore params."""

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Ignore artifacts."""

    def log_onnx(self, path: str | os.PathLike[str], name: str = "ensemble") -> None:
        """Ignore an ONNX model."""

    def log_table(self, table: Any, artifact_file: str) -> None:
        """Ignore a table."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Ignore tags."""


class StageRun(NullRun):
    """An active MLflow run for one stage execution."""

    def __init__(self, mlflow: Any, run_id: str) -> None:
        self._mlflow = mlflow
        self.run_id = run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics; NaN, infinities, booleans and non-numeric values are skipped."""
        clean = {
            k: float(v)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and abs(float(v)) != float("inf") and v == v
        }
        if clean:
            self._mlflow.log_metrics(clean, step=step)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params, flattened to dotted keys (values over MLflow's 6000-character limit are cut)."""
        items = [(k, v[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            self._mlflow.log_params(dict(items[i : i + 100]))

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Copy a file or directory into the run's artifacts (a missing path is skipped)."""
        p = Path(path)
        if p.is_dir():
            self._mlflow.log_artifacts(str(p), artifact_path=artifact_path)
        elif p.exists():
            self._mlflow.log_artifact(str(p), artifact_path=artifact_path)

    def log_onnx(self, path: str | os.PathLike[str], name: str = "ensemble") -> None:
        """Log an ONNX graph file as an MLflow model (``mlflow.onnx``), loadable with ``mlflow.onnx.load_model``.

        Args:
            path: the ``.onnx`` file (external data files beside it are loaded too).
            name: the model's name in the run.
        """
        import mlflow.onnx
        import onnx

        model = onnx.load(str(path))
        mlflow.onnx.log_model(model, name=name)

    def log_table(self, table: Any, artifact_file: str) -> None:
        """Log a DataFrame as one table artifact (``mlflow.log_table``: JSON the UI shows as a table).

        Hundreds of per-class values belong in one table, not in as many metric columns (MLflow's run list
        handles those badly). An empty table is skipped.

        Args:
            table: a pandas DataFrame.
            artifact_file: run-relative ``.json`` path, e.g. ``tables/per_class_auc.json``.
        """
        if len(table):
            self._mlflow.log_table(data=table, artifact_file=artifact_file, run_id=self.run_id)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set run tags (values are stringified)."""
        self._mlflow.set_tags({k: str(v) for k, v in tags.items()})


def _enabled(tracking: Mapping[str, Any]) -> bool:
    return bool(tracking.get("enabled", True)) and os.environ.get("BIRDCLEF_TRACKING", "1") != "0"


def _connect(tracking: Mapping[str, Any]) -> Any:
    import mlflow  # imported lazily: slow to import and unneeded when tracking is off

    uri = tracking_uri(project_root())
    if masked_uri(uri) != uri:  # MLflow prints "View run at <uri>/#/..." after each run, password included
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    mlflow.set_tracking_uri(uri)
    with _store_lock(uri):
        mlflow.set_experiment(tracking.get("experiment", "birdclef"))
    return mlflow


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Hold ``<db>.lock`` exclusively while a sqlite store is opened (other stores: no lock).

    MLflow creates and migrates a sqlite store's tables on the first connection, with no lock of its own: two
    queued ``dvc exp run`` stages that open a fresh ``mlflow.db`` together both run the migrations, and the second
    dies on "duplicate column name". Once the tables exist, sqlite's own locking serialises the writes.
    """
    db = _sqlite_file(uri)
    if db is None:
        yield
        return
    with open(f"{db}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (query string dropped); None for other stores."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


OWNER_TAG = "birdclef_owner"  # host:pid:start-ticks of the process that opened the run


def owner_token(pid: int | None = None) -> str:
    """``host:pid:start`` of a process (this one by default); ``start`` (Linux clock ticks) tells a reused pid."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid)}"


def _start_ticks(pid: int) -> str:
    try:  # field 22 of /proc/<pid>/stat, counted after the ")" that closes the command name
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _owner_gone(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's process, or no owner recorded: it may be alive
    if not pid_alive(int(pid)):
        return True
    return bool(start) and _start_ticks(int(pid)) not in ("", start)  # the pid now names another process


def close_orphans(mlflow: Any, stage: str, experiment: str) -> list[str]:
    """Mark KILLED the RUNNING runs of ``stage`` in ``experiment`` whose process is gone.

    A SIGKILLed stage never ends its MLflow run; the next run of the same stage closes it. A run whose owner
    lives (a run beside this one, another rank) or ran on another machine, or that has no owner tag, is left.

    Args:
        mlflow: the connected ``mlflow`` module (experiment set).
        stage: the ``dvc_stage`` tag value (``train@1``, ``pipeline``).
        experiment: the experiment's name.

    Returns:
        The ids of the runs closed.
    """
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return []
    client = mlflow.MlflowClient()
    quoted = stage.replace("'", "\\'")
    running = client.search_runs(
        [found.experiment_id], filter_string=f"tags.dvc_stage = '{quoted}' and attributes.status = 'RUNNING'"
    )
    closed = []
    for run in running:
        if _owner_gone(run.data.tags.get(OWNER_TAG, "")):
            client.set_tag(run.info.run_id, "birdclef_closed", f"its process died; closed by {owner_token()}")
            client.set_terminated(run.info.run_id, status="KILLED")
            closed.append(run.info.run_id)
    return closed


@contextlib.contextmanager
def stage_run(stage: str, params: Mapping[str, Any], tracking: Mapping[str, Any] | None = None) -> Iterator[NullRun]:
    """Open one MLflow run for a stage execution, or a :class:`NullRun` when tracking is disabled.

    The run is a child of ``MLFLOW_PARENT_RUN_ID`` when set (``birdclef repro``). An exception inside the block
    marks the run FAILED and propagates. Runs of the same stage left RUNNING by a killed process are marked
    KILLED first (:func:`close_orphans`).

    Args:
        stage: stage name (``DVC_STAGE`` from the environment wins when DVC runs the stage).
        params: the params the stage used; logged flattened and digested into a tag.
        tracking: the ``tracking`` params section (``enabled``, ``experiment``); ``BIRDCLEF_TRACKING=0`` in the
            environment also turns tracking off.

    Yields:
        A recorder with ``log_metrics``, ``log_params``, ``log_artifact``, ``log_onnx`` and ``set_tags``.
    """
    tracking = dict(tracking or {})
    if not _enabled(tracking):
        yield NullRun()
        return
    mlflow = _connect(tracking)
    name = os.environ.get("DVC_STAGE", stage)
    tags = {**provenance_tags(workspace_root(), stage, params), OWNER_TAG: owner_token()}
    close_orphans(mlflow, tags["dvc_stage"], tracking.get("experiment", "birdclef"))  # a killed process's runs
    # nested: a stage run opened inside another run of the same process (library use) must not fail
    with mlflow.start_run(run_name=name, tags=tags, nested=mlflow.active_run() is not None) as active:
        run = StageRun(mlflow, active.info.run_id)
        run.log_params(params)
        yield run


@contextlib.contextmanager
def parent_run(
    name: str, tracking: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None
) -> Iterator[NullRun]:
    """Open the parent run of one pipeline execution; stage runs started meanwhile with ``MLFLOW_PARENT_RUN_ID``
    set to its id become its children. Tagged like a stage run (commit, dirty flag, data hash), with
    ``dvc_stage`` = ``pipeline``.

    Yields:
        The recorder (a :class:`NullRun` with ``run_id`` None when tracking is disabled).
    """
    tracking = dict(tracking or {})
    if not _enabled(tracking):
        yield NullRun()
        return
    mlflow = _connect(tracking)
    base = provenance_tags(workspace_root(), "pipeline", {})
    base.pop("mlflow.parentRunId", None)
    base.pop("params_digest", None)
    base["dvc_stage"] = "pipeline"
    base[OWNER_TAG] = owner_token()
    close_orphans(mlflow, "pipeline", tracking.get("experiment", "birdclef"))
    with mlflow.start_run(run_name=name, tags={**base, **dict(tags or {})}) as active:
        yield StageRun(mlflow, active.info.run_id)


def log_on_commit_run(
    commit: str,
    metrics: Mapping[str, float],
    tags: Mapping[str, str] | None = None,
    stage: str = "infer",
    root: Path | None = None,
) -> str | None:
    """Log metrics and tags on the newest finished run of ``stage`` made at ``commit``, in any experiment.

    Used by the leaderboard ledger to attach a Kaggle score to the inference run that produced the bundle. A
    sqlite store that does not exist yet is not created.

    Returns:
        The run id written to, or None when no such run (or no store) exists.
    """
    uri = tracking_uri(root or project_root())
    db = _sqlite_file(uri)
    if db is not None and not db.exists():
        return None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return None
    runs = client.search_runs(
        experiments,
        filter_string=f"tags.git_commit = '{commit}' and tags.dvc_stage = '{stage}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    run_id = runs[0].info.run_id
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))
    for key, value in (tags or {}).items():
        client.set_tag(run_id, key, str(value))
    return run_id
