"""DVC stage `teacher`: a foundation model (BirdNET, Perch v2, any ONNX) labels cached audio (a marker when off)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from birdclef.features.cache import WaveCache
from birdclef.io import load_params, sweep_temps, write_metrics
from birdclef.teachers import TeacherParams
from birdclef.teachers.stage import labels_or_none, run_teacher, write_disabled
from birdclef.track import stage_run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--features", type=Path, required=True, help="waveform cache (soundscapes and focal segments)")
    ap.add_argument("--acquire", type=Path, required=True, help="acquire output (taxonomy, soundscape labels)")
    ap.add_argument("--segments", type=Path, default=None, help="clean segment table (focal labels for the AUC)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--shards", type=Path, required=True, help="finished blocks (kept across a kill: resume)")
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--timings", type=Path, required=True, help="timing JSON to write (durations and rates, wall time)")
    args = ap.parse_args(argv)
    sweep_temps(args.out, args.shards, args.metrics, args.timings)  # what a killed run left beside (and in) its outputs

    params = load_params(args.params)
    section = params.get("teacher")
    args.shards.mkdir(parents=True, exist_ok=True)  # scratch kept across runs (not a DVC output: see dvc.yaml)
    try:
        cfg = TeacherParams.from_dict(section)
    except ValueError as err:
        print(f"teacher failed: {err}", file=sys.stderr)
        return 1
    if not cfg.enabled:
        # Off: a fixed marker, so stages that depend on this folder do not rerun for nothing.
        with stage_run("teacher", {"teacher": section or {}}, params.get("tracking")) as run:
            write_disabled(args.out)
            write_metrics({"enabled": 0}, args.metrics, args.timings)
            run.log_metrics({"enabled": 0})
        print("teacher: off (teacher.enabled is false)")
        return 0
    try:  # a failure inside the run marks it FAILED in MLflow, then becomes a one-line error here
        with stage_run("teacher", {"teacher": section}, params.get("tracking")) as run:
            metrics = run_teacher(
                cfg,
                WaveCache(args.features),
                pd.read_parquet(args.acquire / "taxonomy.parquet"),
                args.out,
                args.shards,
                soundscape_labels=labels_or_none(args.acquire / "soundscape_labels.parquet"),
                segments=labels_or_none(args.segments),
            )
            metrics = {"enabled": 1, **metrics}
            write_metrics(metrics, args.metrics, args.timings)
            run.log_metrics(metrics)
    except (ValueError, OSError, KeyError, ImportError) as err:
        print(f"teacher failed: {err}", file=sys.stderr)
        return 1
    print("teacher: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
