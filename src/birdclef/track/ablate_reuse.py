"""A "reuse" ablation variant: the ensemble stage rerun on the baseline's trained members of the same seed.

The baseline experiment of seed ``s`` is a git commit (``refs/exps/...``) whose dvc.lock names its trained members in
the DVC cache. For a variant that changes only what :data:`birdclef.track.reach.REUSE_STAGES` read, this module
copies those stage inputs out of the cache into ``build/ablate/<spec>/<variant>-s<seed>/``, writes the baseline's
params.yaml with the variant's overrides beside them, and runs the stage's own command from dvc.yaml there (paths
rewritten; nothing in the workspace changes). The stage's test predictions are then compared with the baseline's
own, which the same stage command produced from the same members: the difference is the variant alone.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from birdclef.io import atomic_path
from birdclef.track.overrides import set_args
from birdclef.track.pipeline import child_env
from birdclef.track.runs import PARENT_ENV

STAGE = "ensemble"
KEY_FILE = "reuse.json"


def stage_spec(repo: Path, stage: str = STAGE) -> dict[str, Any]:
    """The stage's ``cmd``, deps and outs (metrics included) from the repository's dvc.yaml."""
    stages = (yaml.safe_load((repo / "dvc.yaml").read_text()) or {}).get("stages") or {}
    if stage not in stages:
        raise ValueError(f"{repo / 'dvc.yaml'} has no stage {stage!r}")
    body = stages[stage]

    def names(entries: Any) -> list[str]:
        return [next(iter(e)) if isinstance(e, Mapping) else str(e) for e in entries or []]

    return {"cmd": " ".join(body["cmd"]) if isinstance(body["cmd"], list) else str(body["cmd"]),
            "deps": names(body.get("deps")), "outs": names(body.get("outs")) + names(body.get("metrics"))}  # fmt: skip


def rewrite(cmd: str, workdir: Path, moved: set[str]) -> list[str]:
    """The stage command with ``params.yaml`` and the ``moved`` paths (copied deps, outs) under ``workdir``.

    ``python`` becomes this interpreter, so the stage runs in the project's venv.
    """
    out = []
    for i, token in enumerate(shlex.split(cmd)):
        if i == 0 and token == "python":
            out.append(sys.executable)
        elif token == "params.yaml" or token in moved:
            out.append(str(workdir / token))
        else:
            out.append(token)
    return out


def variant_params(base_params: str, overrides: Mapping[str, Any], target: Path) -> None:
    """Write the baseline's params.yaml text with the overrides applied the way ``dvc exp run -S`` applies them."""
    from dvc.utils.hydra import apply_overrides  # slow to import: only when a reuse variant runs

    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(base_params)
    current = yaml.safe_load(base_params) or {}
    if overrides:
        apply_overrides(str(target), set_args(overrides, current)[1::2])


def run_reuse(
    repo: Path,
    workdir: Path,
    base_rev: str,
    overrides: Mapping[str, Any],
    predictions: str,
    exp_name: str,
    parent_id: str | None = None,
    uri: str = "",
) -> Path:
    """Run the reuse stage for one variant x seed on the baseline experiment ``base_rev``; return its predictions.

    A finished run for the same baseline commit and overrides (``reuse.json`` beside it) is kept, so a rerun of
    the ablation only does what is missing.

    Args:
        repo: the DVC project.
        workdir: the variant x seed folder (``build/ablate/<spec>/<variant>-s<seed>``).
        base_rev: the baseline experiment's commit for this seed.
        overrides: the variant's params changes.
        predictions: the stage's prediction table, relative to the repo (moved under ``workdir``).
        exp_name: tagged as ``DVC_EXP_NAME`` on the stage's MLflow run.
        parent_id, uri: MLflow parent run and tracking URI (the ablation's run; "" for the project's default).

    Raises:
        RuntimeError: the baseline's params or stage inputs cannot be read at ``base_rev``, or the stage fails.
    """
    key = {"base_rev": base_rev, "overrides": dict(overrides)}
    done = workdir / predictions
    if done.is_file() and (workdir / KEY_FILE).is_file() and json.loads((workdir / KEY_FILE).read_text()) == key:
        return done
    spec = stage_spec(repo)
    shown = subprocess.run(["git", "show", f"{base_rev}:params.yaml"], cwd=repo, capture_output=True, text=True)
    if shown.returncode:
        raise RuntimeError(f"cannot read params.yaml at the baseline experiment {base_rev}: {shown.stderr.strip()}")
    with atomic_path(workdir) as tmp:
        variant_params(shown.stdout, overrides, tmp / "params.yaml")
        copied = _copy_outputs(repo, base_rev, [d for d in spec["deps"] if d.startswith("build/")], tmp)
        moved = copied | set(spec["outs"])
        for out in spec["outs"]:
            (tmp / out).parent.mkdir(parents=True, exist_ok=True)
        env = child_env(parent_id, uri)
        if not uri:
            env.pop("MLFLOW_TRACKING_URI")  # the stage picks the project's store (or the user's variable) itself
        if not parent_id:
            env.pop(PARENT_ENV, None)  # not a child of a parent run this process did not open
        env.update({"DVC_STAGE": STAGE, "DVC_EXP_NAME": exp_name})
        cmd = rewrite(spec["cmd"], tmp, moved)
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{STAGE} for {exp_name} failed (exit {proc.returncode}): "
                               f"{(proc.stderr or proc.stdout).strip()[-2000:]}")  # fmt: skip
        # the copied members are the DVC cache's: drop them, keep params, outputs and the key
        for dep in copied:
            _remove(tmp / dep)
        (tmp / KEY_FILE).write_text(json.dumps(key, indent=1))
    return done


def _copy_outputs(repo: Path, rev: str, paths: list[str], dest: Path) -> set[str]:
    """Copy the DVC-tracked ``paths`` as they are at ``rev`` under ``dest``; returns those that exist there."""
    from dvc.api import DVCFileSystem

    fs = DVCFileSystem(str(repo), rev=rev)
    copied = set()
    for path in paths:
        if not fs.exists(path):
            continue  # an optional input (a quarantine list a dataset lacks): the stage says if it needs it
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fs.get(path, str(target), recursive=fs.isdir(path))
        except Exception as err:  # dvc raises many kinds (missing cache entry, ...): all mean "cannot reuse"
            why = f"cannot copy {path} of the baseline experiment {rev} out of the DVC cache"
            raise RuntimeError(f"{why}: {err}") from err
        copied.add(path)
    return copied


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
