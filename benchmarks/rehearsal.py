"""Full-size rehearsal: every stage on SynthCLEF `full` (206 species), timed, and projected to the competition.

In a fresh ``git clone`` of the committed code (its src/ first on PYTHONPATH, so the editable install's working
tree is not what runs; this checkout's .venv linked; this checkout's data/ and dvc.lock never touched):

1. ``birdclef data synth`` makes the dataset the preset's ``synth`` entry names (``presets/rehearsal.yaml``:
   ``full`` at ``scale`` x its focal files and soundscapes; ``--soundscapes F`` multiplies the train
   soundscapes by F);
2. the preset's dotted overrides go into the clone's params.yaml exactly as ``birdclef repro --preset`` passes them
   (``-S`` through DVC's Hydra grammar);
3. each stage runs alone, in order, as ``dvc repro --single-item <stage>``: wall time, peak RSS (``os.wait4`` of
   the dvc process: the largest single process of the tree, ru_maxrss, file-backed pages included) and, when
   psutil is there, the peak sum of the tree's RSS sampled every 0.2 s; disk is the sum of the stage's outputs
   in the clone's dvc.lock (``size``).

Projection to the competition (28,564 focal files, ~280 h of focal audio, 9,726 one-minute train soundscapes,
~700 Kaggle test soundscapes), one linear formula for every stage:

    projected = measured x N_competition / N_rehearsal

with N the count that drives the stage (``DRIVERS``): focal files (acquire, train@k: one epoch is one pass over
the segments), focal hours (clean), cached audio hours (features: kept segment hours + soundscape hours), train
soundscapes (pseudo@k), test soundscapes (ensemble, infer); none (a ratio of 1: export, the off markers, and the
disk of checkpoints). Start-up counts as if it scaled, so a projection is an upper bound for short stages. Peak
RSS is projected flat (``rss x 1``): streaming stages hold O(1) of the data; ``--merge`` of a 1x and a 2x run
reports the measured growth per train soundscape of every stage and projects RSS as
``rss_1x + slope x (9,726 - n_1x)`` from it.

Prints one JSON object (``--out`` also writes it). Run under the shared lock on a shared machine:

    flock /tmp/heavy.lock .venv/bin/python benchmarks/rehearsal.py --out /tmp/rehearsal_1x.json
    flock /tmp/heavy.lock .venv/bin/python benchmarks/rehearsal.py --soundscapes 2 --until train@1 \\
        --out /tmp/rehearsal_2x.json
    .venv/bin/python benchmarks/rehearsal.py --merge /tmp/rehearsal_1x.json /tmp/rehearsal_2x.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
PRESET = "presets/rehearsal.yaml"

COMPETITION = {"focal_files": 28_564, "focal_hours": 280.0, "train_soundscapes": 9_726, "test_soundscapes": 700}
"""BirdCLEF+ 2025: train.csv rows, focal audio hours, train soundscapes (one minute each), Kaggle's test files."""

DRIVERS: dict[str, tuple[str | None, str | None]] = {
    "acquire": ("focal_files", "focal_files"),
    "clean": ("focal_hours", "focal_files"),
    "features": ("cached_hours", "cached_hours"),
    "pretrain": (None, None),
    "teacher": (None, None),
    "distill": (None, None),
    "train": ("focal_files", None),
    "pseudo": ("train_soundscapes", "train_soundscapes"),
    "ensemble": ("test_soundscapes", "test_soundscapes"),
    "export": (None, None),
    "infer": ("test_soundscapes", "test_soundscapes"),
}
"""Stage kind -> (count that drives its time, count that drives its disk); None: fixed cost (ratio 1)."""

SCALED_COUNTS = ("focal_files", "train_soundscapes", "test_soundscapes", "val_soundscapes")
"""The `full` preset counts that the preset's ``synth.scale`` multiplies (species, class mix and sites stay)."""


def synth_overrides(entry: Mapping[str, Any], soundscapes: float = 1.0) -> dict[str, int]:
    """``birdclef data synth --set`` overrides for a preset's ``synth`` entry.

    Args:
        entry: ``{preset, seed, scale}``; ``scale`` multiplies each of :data:`SCALED_COUNTS` of the preset.
        soundscapes: a further factor on the train soundscapes (the flat-RSS check doubles them).

    Returns:
        ``{count name: value}``, each at least 1.
    """
    from birdclef.synth.config import preset_config

    config = preset_config(str(entry["preset"]))
    scale = float(entry.get("scale", 1.0))
    out = {name: max(1, round(getattr(config, name) * scale)) for name in SCALED_COUNTS}
    out["train_soundscapes"] = max(1, round(out["train_soundscapes"] * soundscapes))
    return out


def project(measured: float, driver: str | None, counts: Mapping[str, float],
            real: Mapping[str, float] = COMPETITION) -> float:
    """``measured x real[driver] / counts[driver]`` (``measured`` when ``driver`` is None): the linear projection.

    Args:
        measured: seconds, MB or bytes of the rehearsal.
        driver: a key of ``counts`` and ``real``, or None for a fixed cost.
        counts: the rehearsal's counts.
        real: the competition's counts (see :func:`real_counts`).
    """
    if driver is None:
        return float(measured)
    return float(measured) * float(real[driver]) / float(counts[driver])


def real_counts(counts: Mapping[str, float]) -> dict[str, float]:
    """The competition's counts, ``cached_hours`` included: its focal hours kept by clean at the rehearsal's ratio
    plus its train soundscape hours (Kaggle's test soundscapes are never cached: they are hidden)."""
    kept = counts["segment_hours"] / counts["focal_hours"]
    return {**COMPETITION, "cached_hours": COMPETITION["focal_hours"] * kept + COMPETITION["train_soundscapes"] / 60}


def stage_order(params: Mapping[str, Any]) -> list[str]:
    """Every stage of the pipeline in an order that runs each after its deps (train@k, then pseudo@k)."""
    rounds = {int(r["k"]) for r in params["pseudo"]["rounds"]}
    order = ["acquire", "clean", "features", "pretrain", "teacher", "distill"]
    for it in params["iterations"]:
        k = int(it["k"])
        order += [f"train@{k}"] + ([f"pseudo@{k}"] if k in rounds else [])
    return [*order, "ensemble", "export", "infer"]


def run_measured(cmd: Sequence[str], cwd: Path, env: Mapping[str, str], log: Path) -> dict[str, Any]:
    """Run ``cmd``; its wall seconds, exit status, ru_maxrss of its tree (MB) and peak summed tree RSS (MB)."""
    try:
        import psutil
    except ImportError:  # the summed figure is optional
        psutil = None
    peak = {"tree": 0.0}
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=dict(env), stdout=f, stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample() -> None:
            root = psutil.Process(proc.pid)
            while not done.wait(0.2):
                try:
                    procs = [root, *root.children(recursive=True)]
                    peak["tree"] = max(peak["tree"], sum(p.memory_info().rss for p in procs) / 2**20)
                except psutil.Error:  # a process ended between listing and reading
                    continue

        sampler = threading.Thread(target=sample, daemon=True) if psutil is not None else None
        if sampler is not None:
            sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)  # rusage of the child and every descendant it reaped
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        if sampler is not None:
            sampler.join()
    return {"wall_s": round(wall, 1), "rc": proc.returncode, "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "peak_tree_rss_mb": round(peak["tree"], 1) if psutil is not None else None}


def _clone(work: Path) -> Path:
    repo = work / "repo"
    subprocess.run(["git", "clone", "-q", str(REPO), str(repo)], check=True)
    (repo / ".venv").symlink_to(REPO / ".venv")
    return repo


def _apply_preset(repo: Path, preset: Path) -> dict[str, Any]:
    """Write the preset's overrides into the clone's params.yaml the way ``birdclef repro --preset`` passes them."""
    from dvc.utils.hydra import apply_overrides

    from birdclef.track.pipeline import preset_args

    args = preset_args(preset, repo / "params.yaml")
    apply_overrides(str(repo / "params.yaml"), args[1::2])
    return yaml.safe_load((repo / "params.yaml").read_text())


def _counts(repo: Path) -> dict[str, float]:
    """The rehearsal's counts from its data and stage metrics."""
    import pandas as pd

    clean = json.loads((repo / "metrics" / "clean.json").read_text())
    feats = json.loads((repo / "metrics" / "features.json").read_text())
    soundscape_hours = sum(v for k, v in feats.items() if k.startswith("hours_") and k.endswith("_soundscape"))
    return {
        "focal_files": len(pd.read_csv(repo / "data" / "train.csv")),
        "focal_hours": float(clean["hours_in"]),
        "segment_hours": float(feats["hours_segment"]),
        "cached_hours": float(feats["hours_segment"]) + soundscape_hours,
        "train_soundscapes": int(feats["keys_train_soundscape"]),
        "test_soundscapes": int(feats["keys_test_soundscape"]),
        "val_soundscapes": int(feats.get("keys_val_soundscape", 0)),
    }


def _disk(repo: Path, stage: str) -> int:
    """Bytes of a stage's outputs (metrics files included) as its dvc.lock entry records them."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"].get(stage) or {}
    return int(sum(int(o.get("size", 0)) for o in lock.get("outs", [])))


def _stage_seconds(repo: Path, stage: str) -> float | None:
    kind, _, k = stage.partition("@")
    name = f"{kind}_it{k}" if k else kind
    path = repo / "metrics" / "timing" / f"{name}.json"
    return json.loads(path.read_text()).get("stage_seconds") if path.exists() else None


def rehearse(preset: str, work: Path, soundscapes: float, until: str | None,
             scale: float | None = None) -> dict[str, Any]:
    """Clone, generate, run every stage (up to ``until``) measured; the report without projections.

    Args:
        preset: the preset's path inside the repository (read from the clone: the committed one).
        work: folder for the clone, its DVC cache and MLflow database.
        soundscapes: factor on the preset's train soundscapes.
        until: the last stage to run, or None for every stage.
        scale: replaces the preset's ``synth.scale`` (a quick smoke run), or None.
    """
    repo = _clone(work)
    sys.path.insert(0, str(repo / "src"))  # the clone's birdclef (preset grammar, synth config), not this tree's
    preset_path = repo / preset
    entry = {**yaml.safe_load(preset_path.read_text())["synth"], **({"scale": scale} if scale else {})}
    sets = synth_overrides(entry, soundscapes)
    env = {**os.environ, "PATH": f"{repo / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(repo / "src"), "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}  # fmt: skip
    log = work / "rehearsal.log"
    shutil.rmtree(repo / "data", ignore_errors=True)
    synth_cmd = ["birdclef", "data", "synth", "--preset", str(entry["preset"]), "--seed", str(entry.get("seed", 0)),
                 "--out", "data", "--quiet", *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]
    report: dict[str, Any] = {"synth": {**dict(entry), "soundscapes_factor": soundscapes, "set": sets},
                              "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                                                       text=True).stdout.strip(), "stages": {}}  # fmt: skip
    report["synth"]["measured"] = run_measured(synth_cmd, repo, env, log)
    params = _apply_preset(repo, preset_path)
    setup = [["dvc", "config", "--local", "cache.dir", str(work / "dvc-cache")],
             ["dvc", "config", "--local", "cache.type", "hardlink,copy"], ["dvc", "add", "-q", "data"]]
    for cmd in setup:
        subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)
    for stage in stage_order(params):
        result = run_measured(["dvc", "repro", "--single-item", stage], repo, env, log)
        result.update(disk_bytes=_disk(repo, stage), stage_seconds=_stage_seconds(repo, stage))
        report["stages"][stage] = result
        print(f"{stage}: {json.dumps(result)}", file=sys.stderr)
        if result["rc"]:
            report["error"] = f"{stage} exited {result['rc']}; see {log}"
            break
        if stage == until:
            break
    report["counts"] = _counts(repo)
    report["data_bytes"] = sum(p.stat().st_size for p in (repo / "data").rglob("*") if p.is_file())
    return report


def with_projections(report: dict[str, Any]) -> dict[str, Any]:
    """Add ``projected_*`` figures (see the module docstring) to every stage of a report."""
    counts = report["counts"]
    real = real_counts(counts)
    for stage, r in report["stages"].items():
        time_driver, disk_driver = DRIVERS[stage.partition("@")[0]]
        r["drivers"] = {"time": time_driver, "disk": disk_driver}
        r["projected_wall_s"] = round(project(r["wall_s"], time_driver, counts, real), 1)
        r["projected_disk_bytes"] = round(project(r["disk_bytes"], disk_driver, counts, real))
        r["projected_peak_rss_mb"] = r["peak_rss_mb"]
    report["competition"] = real
    return report


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two reports at different train-soundscape counts -> growth of peak RSS per soundscape, RSS projected on it."""
    if a["counts"]["train_soundscapes"] > b["counts"]["train_soundscapes"]:
        a, b = b, a
    n1, n2 = a["counts"]["train_soundscapes"], b["counts"]["train_soundscapes"]
    out: dict[str, Any] = {"train_soundscapes": [n1, n2], "stages": {}}
    for stage in a["stages"]:
        if stage not in b["stages"]:
            continue
        r1, r2 = a["stages"][stage], b["stages"][stage]
        slope = (r2["peak_rss_mb"] - r1["peak_rss_mb"]) / (n2 - n1)
        out["stages"][stage] = {
            "peak_rss_mb": [r1["peak_rss_mb"], r2["peak_rss_mb"]],
            "peak_tree_rss_mb": [r1.get("peak_tree_rss_mb"), r2.get("peak_tree_rss_mb")],
            "wall_s": [r1["wall_s"], r2["wall_s"]],
            "rss_mb_per_train_soundscape": round(slope, 3),
            "projected_peak_rss_mb": round(r1["peak_rss_mb"] + max(slope, 0.0) * (COMPETITION["train_soundscapes"]
                                                                                 - n1), 1),
        }  # fmt: skip
    return out


def markdown_table(report: Mapping[str, Any]) -> str:
    """The README table of a projected report: per stage wall time, peak RSS and disk, measured -> projected."""

    def size(n: float) -> str:
        return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.1f} MB"

    def secs(t: float) -> str:
        return f"{t / 3600:.1f} h" if t >= 3600 else f"{t / 60:.1f} min" if t >= 120 else f"{t:.0f} s"

    rows = ["| stage | wall time | peak RSS | disk of outputs | projection driver (time, disk) |",
            "|---|---|---|---|---|"]
    for stage, r in report["stages"].items():
        drivers = ", ".join(d or "fixed" for d in (r["drivers"]["time"], r["drivers"]["disk"]))
        rows.append(f"| {stage} | {secs(r['wall_s'])} -> {secs(r['projected_wall_s'])} | {r['peak_rss_mb']:.0f} MB | "
                    f"{size(r['disk_bytes'])} -> {size(r['projected_disk_bytes'])} | {drivers} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default=PRESET, help="a committed preset with a `synth` entry (repository path)")
    ap.add_argument("--soundscapes", type=float, default=1.0, help="factor on the preset's train soundscapes")
    ap.add_argument("--scale", type=float, default=None, help="replace the preset's synth.scale (smoke runs)")
    ap.add_argument("--until", default=None, help="the last stage to run (e.g. train@1); default: every stage")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temp folder, removed)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    ap.add_argument("--merge", type=Path, nargs=2, default=None, metavar="JSON",
                    help="compare two reports (1x and 2x train soundscapes) instead of running")
    ap.add_argument("--table", type=Path, default=None, metavar="JSON", help="print a report as the README table")
    args = ap.parse_args()
    if args.table:
        print(markdown_table(json.loads(args.table.read_text())))
        return
    if args.merge:
        result = merge(*(json.loads(p.read_text()) for p in args.merge))
    else:
        work = args.work or Path(tempfile.mkdtemp(prefix="rehearsal-"))
        work.mkdir(parents=True, exist_ok=True)
        try:
            result = with_projections(rehearse(args.preset, work, args.soundscapes, args.until, args.scale))
        finally:
            if not args.keep and args.work is None:
                shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
