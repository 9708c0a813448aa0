"""Helpers of ``benchmarks/faults.py``: clones of the committed code, the tiny dataset, DVC runs, output hashes, the
debris a kill can leave (temporaries, RUNNING MLflow runs), stage logs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
TEMP_NAME = re.compile(r"^\..+\.tmp$")  # io.atomic_path's .<name>.<pid>.<random>.tmp (and older pid-less ones)
# Where a stage's debris could be: everything the pipeline writes. .dvc/ (DVC's own locks and tmp), .git and the
# linked .venv are not the pipeline's.
_SKIP_DIRS = {".git", ".dvc", ".venv", "__pycache__"}
STAGE_LINE = re.compile(r"^Running stage '(?P<stage>[^']+)':")


@dataclass
class Clone:
    """A fresh clone of the committed code with the tiny dataset as its data/, run with its own src/ and DVC cache.

    Attributes:
        root: the clone's work tree.
        env: environment of every command run there (the clone's src/ first on PYTHONPATH, so the editable
            install's working tree is never what runs; MLflow in the clone's own sqlite store).
    """

    root: Path
    env: dict[str, str]

    def run(self, cmd: list[str], log: Path, timeout: float | None = None) -> int:
        """Run ``cmd`` in the clone, appending its output to ``log``; its exit status (124 on timeout)."""
        with log.open("a") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            try:
                return subprocess.run(
                    cmd, cwd=self.root, env=self.env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout
                ).returncode
            except subprocess.TimeoutExpired:
                return 124

    def popen(self, cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
        """Start ``cmd`` in a session of its own (a kill of its group takes DVC, the stage and its workers)."""
        f = log.open("a")
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        return subprocess.Popen(
            cmd, cwd=self.root, env=self.env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )


def synth_tiny(work: Path, seed: int = 0) -> Path:
    """The SynthCLEF ``tiny`` preset generated once under ``work`` (every clone gets a copy)."""
    out = work / "tiny"
    if not (out / "train.csv").is_file():
        shutil.rmtree(out, ignore_errors=True)
        venv = REPO / ".venv" / "bin"
        cmd = [str(venv / "birdclef"), "data", "synth", "--preset", "tiny", "--seed", str(seed), "--out", str(out)]
        subprocess.run([*cmd, "--quiet", "--workers", "2"], check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "PYTHONPATH": str(REPO / "src")})  # fmt: skip
    return out


def make_clone(work: Path, name: str, commit: str, data: Path, overrides: dict[str, Any]) -> Clone:
    """Clone ``commit`` into ``work/name``, link the .venv, copy ``data`` in and apply the dotted params overrides.

    data.dvc goes: data/ stays a plain dependency, so DVC never copies the campaign's audio (the 3-hour file
    included) into a cache. Each clone keeps its own DVC cache, so no run restores another's outputs from a
    shared run-cache (a resumed run must recompute what it lost).
    """
    root = work / name
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(REPO), str(root)], check=True)
    subprocess.run(["git", "checkout", "-q", commit], cwd=root, check=True)
    (root / ".venv").symlink_to((REPO / ".venv").resolve())
    (root / "data.dvc").unlink(missing_ok=True)
    shutil.rmtree(root / "data", ignore_errors=True)
    shutil.copytree(data, root / "data")
    set_params(root / "params.yaml", overrides)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "BIRDCLEF_TRACKING", "DVC_ROOT")}
    env.update(
        PATH=f"{root / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=str(root / "src"),
        MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
        PYTHONUNBUFFERED="1",  # stage output reaches the log before a kill, in order
    )
    return Clone(root, env)


def set_params(path: Path, overrides: dict[str, Any]) -> None:
    """Write dotted ``overrides`` (``train.loop.epochs: 2``) into the params file at ``path``."""
    if not overrides:
        return
    params = yaml.safe_load(path.read_text())
    for key, value in overrides.items():
        node = params
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def output_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file the pipeline writes: build/, submission.csv, metrics/ but for the timing files.

    Timings (metrics/timing/) are the only outputs meant to differ between two runs of one commit.
    """
    files = [p for p in (root / "build").rglob("*") if p.is_file()] if (root / "build").is_dir() else []
    files += [p for p in (root / "metrics").rglob("*") if p.is_file() and "timing" not in p.parts]
    files += [root / "submission.csv"] if (root / "submission.csv").is_file() else []
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(files)}


def stray_temps(root: Path) -> list[str]:
    """What killed atomic writers left anywhere the pipeline writes (``.<name>...tmp`` files or folders)."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        dirnames[:] = [d for d in dirnames if not (rel == Path(".") and d in _SKIP_DIRS)]
        found += [str(rel / n) for n in [*dirnames, *filenames] if TEMP_NAME.match(n)]
    return sorted(found)


def mlflow_runs(root: Path) -> dict[str, int]:
    """MLflow run count per status in the clone's sqlite store (read directly: no MLflow import).

    Opened read-write: a SIGKILL in the middle of an MLflow write leaves a hot journal, which SQLite rolls back on
    the next open (as the next stage's MLflow would) and which a read-only connection refuses to read past.
    """
    db = root / "mlflow.db"
    if not db.is_file():
        return {}
    with closing(sqlite3.connect(db, timeout=60)) as con:
        rows = con.execute("SELECT status, COUNT(*) FROM runs WHERE lifecycle_stage = 'active' GROUP BY status")
        return {str(status): int(n) for status, n in rows}


def stage_seconds(root: Path) -> dict[str, float]:
    """Each stage's wall time from its timing file (``metrics/timing/<stage>.json`` -> ``stage_seconds``)."""
    out: dict[str, float] = {}
    for path in (root / "metrics" / "timing").glob("*.json"):
        name = re.sub(r"^(train|pseudo)_it(\d+)$", r"\1@\2", path.stem)
        seconds = json.loads(path.read_text()).get("stage_seconds")
        if isinstance(seconds, int | float):
            out[name] = float(seconds)
    return out


def stage_order(log: Path) -> list[str]:
    """The stages a ``dvc repro`` log ran, in the order it ran them."""
    order: list[str] = []
    for line in log.read_text(errors="replace").splitlines():
        m = STAGE_LINE.match(line)
        if m and m["stage"] not in order:
            order.append(m["stage"])
    return order


def stage_sections(text: str) -> dict[str, list[str]]:
    """The lines of a ``dvc repro`` log per stage (a stage run twice gets both runs' lines)."""
    sections: dict[str, list[str]] = {}
    current = "dvc"
    for line in text.splitlines():
        m = STAGE_LINE.match(line)
        if m:
            current = m["stage"]
        elif "it/s]" not in line and "s/it]" not in line:  # progress bars name no file
            sections.setdefault(current, []).append(line)
    return sections


def wait_gone(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Wait for a killed process group's leader (its log file handle closes with it)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
