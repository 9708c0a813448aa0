"""Tiny git + DVC projects for the tracking tests: a two-stage pipeline that records through birdclef.track."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

VENV_BIN = Path(sys.executable).parent

STEP_PY = '''\
"""Tiny two-stage pipeline: prepare (data -> build/prep.txt), train (-> metrics, per-epoch history)."""
import csv
import json
import pathlib
import sys

import yaml

from birdclef.track import stage_run

params = yaml.safe_load(open("params.yaml"))
stage = sys.argv[1]
if stage == "prepare":
    cfg = params["prepare"]
    text = pathlib.Path("data/raw.txt").read_text()
    with stage_run("prepare", {"prepare": cfg}, params["tracking"]) as run:
        pathlib.Path("build").mkdir(exist_ok=True)
        pathlib.Path("build/prep.txt").write_text(text.upper() * cfg["repeat"])
        run.log_metrics({"chars": len(text)})
else:
    cfg = params["train"]
    n = len(pathlib.Path("build/prep.txt").read_text())
    with stage_run("train", {"train": cfg}, params["tracking"]) as run:
        rows = []
        for e in range(cfg["epochs"]):
            auc = round(0.5 + 0.4 * (1 - 0.5 ** (e + 1)) * cfg["lr"], 6)
            row = {"epoch": e + 1, "train_loss": round(1 / (e + 1) + n * 1e-4, 6), "val_auc": auc}
            rows.append(row)
            run.log_metrics({"train_loss": row["train_loss"], "val_auc": auc}, step=e + 1)
        pathlib.Path("metrics").mkdir(exist_ok=True)
        with open("metrics/history.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        last = rows[-1]["val_auc"]
        metrics = {"val_auc": last, "score": round(last - 0.01, 6), "score_aves": round(last - 0.02, 6),
                   "score_insecta": round(last - 0.05 * cfg["lr"], 6)}
        with open("metrics/train.json", "w") as f:
            json.dump(metrics, f, indent=1, sort_keys=True)
        run.log_metrics(metrics)
'''

DVC_YAML = {
    "stages": {
        "prepare": {
            "cmd": "python step.py prepare",
            "deps": ["step.py", "data"],
            "params": ["prepare"],
            "outs": ["build/prep.txt"],
        },
        "train": {
            "cmd": "python step.py train",
            "deps": ["step.py", "build/prep.txt"],
            "params": ["train"],
            "metrics": [{"metrics/train.json": {"cache": False}}],
            "plots": [{"metrics/history.csv": {"cache": False, "x": "epoch", "y": "val_auc"}}],
        }
    }
}


def env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test environment with the venv first on PATH (stage commands call `python`, tests call `dvc`)."""
    out = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    out["PATH"] = os.pathsep.join([str(VENV_BIN), out.get("PATH", "")])
    out.setdefault("GIT_AUTHOR_NAME", "test")
    out.setdefault("GIT_AUTHOR_EMAIL", "test@birdclef.invalid")
    out.setdefault("GIT_COMMITTER_NAME", "test")
    out.setdefault("GIT_COMMITTER_EMAIL", "test@birdclef.invalid")
    out["DVC_NO_ANALYTICS"] = "1"
    out.update(extra or {})
    return out


def sh(args: Sequence[str], cwd: Path, extra_env: Mapping[str, str] | None = None, check: bool = True,
       timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a command, failing the test with its output when ``check`` and it exits non-zero."""
    proc = subprocess.run(list(args), cwd=cwd, env=env(extra_env), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def git_dvc_init(root: Path) -> Path:
    """An empty git repository with DVC initialised and analytics off."""
    root.mkdir(parents=True, exist_ok=True)
    sh(["git", "init", "-q", "-b", "main"], root)
    sh(["dvc", "init", "-q"], root)
    sh(["dvc", "config", "core.analytics", "false"], root)
    return root


def tiny_project(root: Path, tracking: bool = False, experiment: str = "tiny", commit: bool = True) -> Path:
    """A committed two-stage DVC project (data tracked by data.dvc) in ``root``; nothing run yet."""
    git_dvc_init(root)
    (root / "data").mkdir()
    (root / "data" / "raw.txt").write_text("chiff chaff\n")
    (root / "step.py").write_text(STEP_PY)
    params = {
        "tracking": {"enabled": tracking, "experiment": experiment},
        "prepare": {"repeat": 2},
        "train": {"epochs": 3, "lr": 0.5},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (root / ".gitignore").write_text("/mlflow.db\n")
    sh(["dvc", "add", "-q", "data"], root)
    if commit:
        sh(["git", "add", "-A"], root)
        sh(["git", "commit", "-qm", "tiny project"], root)
    return root


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def head(root: Path) -> str:
    """The full sha of HEAD in ``root``."""
    return sh(["git", "rev-parse", "HEAD"], root).stdout.strip()


REPO = Path(__file__).resolve().parents[1]


def chromium() -> str | None:
    """The headless browser binary (Debian's `chromium`), or None when absent."""
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def render_page(html: Path, workdir: Path, size: str = "1200,1600") -> tuple[str, Path, list[str]]:
    """Load a local page in headless Chromium: its DOM after scripts ran, a PNG screenshot, console messages.

    Console messages are read from Chromium's log (``--enable-logging=stderr``): every ``CONSOLE`` line, an
    uncaught exception included. The browser gets no network (a proxy that does not exist) so a page that needs
    a CDN shows it.
    """
    browser = chromium()
    assert browser is not None
    shot = workdir / f"{html.stem}.png"
    common = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
        f"--user-data-dir={workdir / 'chrome'}",
        "--enable-logging=stderr", "--v=0", "--proxy-server=127.0.0.1:9", f"--window-size={size}",
        "--virtual-time-budget=5000",
    ]  # fmt: skip
    dom = subprocess.run([*common, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120)
    subprocess.run([*common, f"--screenshot={shot}", html.as_uri()], capture_output=True, text=True, timeout=120)
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    return dom.stdout, shot, console


def png_is_blank(path: Path) -> bool:
    """True when every pixel of a PNG screenshot has the same colour (a page that rendered nothing)."""
    from PIL import Image

    with Image.open(path) as img:
        lo_hi = img.convert("RGB").getextrema()
    return all(lo == hi for lo, hi in lo_hi)
