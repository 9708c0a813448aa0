"""`birdclef repro`: run `dvc repro` / `dvc exp run` inside one MLflow parent run, every stage run its child."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import click
import yaml

from birdclef.io import load_params
from birdclef.track.overrides import set_args
from birdclef.track.runs import PARENT_ENV, masked_uri, parent_run, project_root, tracking_uri


def dvc_executable() -> str:
    """The ``dvc`` next to the running interpreter (the project's venv), else the one on PATH."""
    local = Path(sys.executable).with_name("dvc")
    return str(local) if local.exists() else (shutil.which("dvc") or "dvc")


def child_env(parent_id: str | None, uri: str) -> dict[str, str]:
    """Environment for the DVC process: the parent run id, an absolute tracking URI, the venv first on PATH.

    The explicit URI makes stage runs of ``--temp`` and queued experiments land in the same store as the parent.
    """
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = uri
    if parent_id:
        env[PARENT_ENV] = parent_id
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def run_pipeline(dvc_args: Sequence[str], exp: bool = False, params: Path = Path("params.yaml")) -> tuple[int, str]:
    """Run DVC under a parent MLflow run.

    Args:
        dvc_args: extra arguments for ``dvc repro`` (or ``dvc exp run`` when ``exp``).
        exp: run ``dvc exp run`` instead of ``dvc repro``.
        params: params.yaml, read for its ``tracking`` section.

    Returns:
        ``(dvc exit code, parent run id or "")``. The parent run is FAILED when DVC fails.
    """
    command = [dvc_executable(), *(["exp", "run"] if exp else ["repro"]), *dvc_args]
    tracking = (load_params(params).get("tracking") or {}) if params.exists() else {}
    uri = tracking_uri(project_root())
    if exp and "--queue" in dvc_args:
        # Queued experiments run later, from `dvc queue start`: a parent would close before any child exists.
        return subprocess.run(command, env=child_env(None, uri)).returncode, ""
    label = "dvc " + " ".join(command[1:])
    tags = {"dvc_command": label[:4000]}
    for flag in ("-n", "--name"):
        if flag in dvc_args and dvc_args.index(flag) + 1 < len(dvc_args):
            tags["dvc_exp_name"] = dvc_args[dvc_args.index(flag) + 1]
    rc = 0
    run_id = ""
    try:
        with parent_run("dvc exp run" if exp else "dvc repro", tracking, tags) as run:
            run_id = run.run_id or ""
            rc = subprocess.run(command, env=child_env(run.run_id, uri)).returncode
            run.set_tags({"dvc_returncode": str(rc)})
            if rc:
                raise _DvcFailedError(rc)
    except _DvcFailedError:
        pass
    return rc, run_id


PRESET_DATA_KEY = "synth"
"""A preset's top-level key that is no params key: the SynthCLEF dataset it is meant for (presets/rehearsal.yaml:
``{preset: full, seed: 0, scale: 0.25}``), read by benchmarks/rehearsal.py and left out of the -S overrides."""


def preset_args(path: Path, params: Path | None = None) -> list[str]:
    """``-S key=value`` arguments for every ``dotted.key: value`` of a preset YAML (keys new to ``params``: ``+``).

    The ``synth`` entry (:data:`PRESET_DATA_KEY`) names a dataset, not params, and gives no argument.
    """
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise click.BadParameter(f"{path}: not valid YAML: {err}") from err
    if not isinstance(doc, dict) or not doc:
        raise click.BadParameter(f"{path}: expected a mapping of dotted params keys to values")
    doc = {k: v for k, v in doc.items() if k != PRESET_DATA_KEY}
    current = load_params(params) if params is not None and params.exists() else None
    return set_args(doc, current)


class _DvcFailedError(Exception):
    """Raised inside the parent run so that MLflow marks it FAILED."""


@click.command(
    "repro",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option("--exp", is_flag=True, help="Run `dvc exp run` (experiments, -S overrides) instead of `dvc repro`.")
@click.option(
    "--params", type=click.Path(path_type=Path), default="params.yaml", show_default=True,
    help="params.yaml (its `tracking` section names the MLflow experiment).",
)  # fmt: skip
@click.option(
    "--preset", "preset", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
    help="A YAML of dotted params overrides (e.g. presets/gpu.yaml), passed as -S arguments; implies --exp.",
)  # fmt: skip
@click.argument("dvc_args", nargs=-1, type=click.UNPROCESSED)
def repro_command(exp: bool, params: Path, preset: Path | None, dvc_args: tuple[str, ...]) -> None:
    """Run the DVC pipeline as one MLflow tree: a parent run, one child run per executed stage.

    \b
    Examples:
      birdclef repro                          # dvc repro
      birdclef repro --force train@0          # dvc repro --force train@0
      birdclef repro --exp -S train.loop.epochs=2 -n short   # dvc exp run ...
      birdclef repro --preset presets/gpu.yaml -n gpu         # dvc exp run -S <every override of the preset>
    Open the runs with: mlflow ui --backend-store-uri sqlite:///$PWD/mlflow.db
    """
    if preset is not None:
        exp = True
        dvc_args = (*preset_args(preset, params), *dvc_args)
    rc, run_id = run_pipeline(dvc_args, exp, params)
    if run_id:
        click.echo(f"MLflow parent run {run_id} in {masked_uri(tracking_uri(project_root()))}", err=True)
    sys.exit(rc)
