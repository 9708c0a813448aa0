"""Where a run comes from: project root, git commit and dirty state, DVC stage and experiment, data version."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

PARENT_ENV = "MLFLOW_PARENT_RUN_ID"


def project_root(start: Path | None = None) -> Path:
    """The project root whose ``mlflow.db`` collects every run, seen through DVC's experiment workspaces.

    ``dvc exp run --temp`` and queued experiments run in a copy under ``<root>/.dvc/tmp/exps/``; their runs must
    land in the real project's store. DVC exports the parent repository as ``DVC_ROOT`` to every stage command
    (queued ones included), so that wins; outside DVC the ``.dvc/tmp/exps`` prefix is stripped, then git decides.
    """
    env = os.environ.get("DVC_ROOT")
    if env and Path(env).is_dir():
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    parts = here.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return workspace_root(here)


def workspace_root(start: Path | None = None) -> Path:
    """The git top level of the directory the stage runs in (a temporary experiment copy is its own workspace)."""
    here = (start or Path.cwd()).resolve()
    top = git(here, "rev-parse", "--show-toplevel")
    return Path(top) if top else here


def git(root: Path, *args: str, strip: bool = True) -> str:
    """Run git in ``root`` and return its stdout (stripped), or "" when git fails or is absent."""
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout
        return out.strip() if strip else out
    except (subprocess.CalledProcessError, FileNotFoundError, NotADirectoryError):
        return ""


def params_digest(params: Mapping[str, Any]) -> str:
    """A short stable hash of a params dict (sorted JSON), to group runs made with identical settings."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def declared_outputs(root: Path) -> list[str]:
    """Glob patterns of every path dvc.yaml declares as a stage output (outs, metrics, plots) plus dvc.lock.

    ``${...}`` interpolations (foreach items) become ``*``. A missing or unreadable dvc.yaml gives just dvc.lock.
    """
    patterns = ["dvc.lock"]
    try:
        doc = yaml.safe_load((root / "dvc.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return patterns
    for stage in (doc.get("stages") or {}).values():
        body = stage.get("do", stage) if isinstance(stage, Mapping) else {}
        for key in ("outs", "metrics", "plots"):
            for entry in body.get(key) or []:
                path = next(iter(entry)) if isinstance(entry, Mapping) else entry
                patterns.append(re.sub(r"\$\{[^}]*\}", "*", str(path)).rstrip("/"))
    return patterns


def dirty_files(root: Path) -> list[str]:
    """Tracked files modified against HEAD, ignoring what the pipeline itself writes (outputs, dvc.lock).

    Stage outputs such as git-tracked metrics change while ``dvc repro`` runs, so they must not mark later stages
    of a clean checkout as dirty; a changed params.yaml (``dvc exp run -S``) or source file does.
    """
    status = git(root, "status", "--porcelain", "--untracked-files=no", strip=False)
    patterns = declared_outputs(root)
    out = []
    for line in filter(None, status.splitlines()):
        path = line[3:].split(" -> ")[-1].strip('"')
        if not any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p + "/*") for p in patterns):
            out.append(path)
    return out


def data_hash(root: Path) -> str | None:
    """The content hash recorded in ``data.dvc`` (``<md5>.dir`` for a directory), or None without one."""
    try:
        doc = yaml.safe_load((root / "data.dvc").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    outs = doc.get("outs") or []
    return str(outs[0].get("md5")) if outs and isinstance(outs[0], Mapping) and outs[0].get("md5") else None


def provenance_tags(root: Path, stage: str, params: Mapping[str, Any]) -> dict[str, str]:
    """Tags that tie a run to the code, data and settings that made it.

    Args:
        root: the workspace the stage runs in (its own git checkout for ``--temp`` and queued experiments).
        stage: fallback stage name when DVC's ``DVC_STAGE`` is not set.
        params: the params the stage used (digested).
    """
    dirty = dirty_files(root)
    tags = {
        "git_commit": git(root, "rev-parse", "HEAD") or "unknown",
        "git_dirty": str(bool(dirty)).lower(),
        "dvc_stage": os.environ.get("DVC_STAGE", stage),
        "params_digest": params_digest(params),
    }
    if dirty:
        tags["git_dirty_files"] = ", ".join(dirty[:20])[:4000]
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        tags["dvc_exp_baseline"] = os.environ["DVC_EXP_BASELINE_REV"]
    data = data_hash(root)
    if data:
        tags["data_md5"] = data
    if os.environ.get(PARENT_ENV):
        tags["mlflow.parentRunId"] = os.environ[PARENT_ENV]
    return tags
