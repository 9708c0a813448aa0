"""DVC stage `train@k`: train every member of iteration k (supervised for k = 0, students of pseudo labels after)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from birdclef import dist
from birdclef.io import load_params, sweep_temps
from birdclef.train.iteration import IterationPaths, plan_iteration, run_iteration
from birdclef.train.params import TRAIN_STAGE, check_params

HELP = {
    "data": "raw data root (voiced spans are read from it)",
    "acquire": "acquire stage output folder",
    "clean": "clean stage output folder",
    "features": "waveform cache folder",
    "labels": "what the iteration learns from: the segment table (k = 0) or a pseudo stage output folder",
    "teacher_outputs": "the teacher stage's folder (D4 segments when train.teacher_segments.enabled)",
    "train_root": "parent of the it<k> train folders (teacher init)",
    "out": "this iteration's output folder (one subfolder a member)",
    "resume": "resume checkpoints (persist across a kill)",
    "metrics": "{member: scores} JSON",
    "timings": "{member: timings} JSON (training seconds, samples/s) and the stage's wall time",
    "history": "per-epoch CSV of every member (DVC plots)",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iteration", type=int, required=True, help="index k into params `iterations`")
    ap.add_argument("--params", default="params.yaml")
    for name, text in HELP.items():
        ap.add_argument(f"--{name.replace('_', '-')}", dest=name, type=Path, required=True, help=text)
    args = ap.parse_args()
    sweep_temps(args.out, args.resume, args.metrics, args.timings, args.history)  # a killed run's debris (rank 0)
    paths = IterationPaths(**{name: getattr(args, name) for name in HELP})

    params = load_params(args.params)
    train = params.get("train") or {}
    try:
        check_params(params, TRAIN_STAGE)
        dist.relaunch(int(train.get("nproc", 1)))  # train.nproc > 1: this very command again under torchrun (DDP)
        plan = plan_iteration(params, args.iteration, paths)
    except (ValueError, FileNotFoundError) as err:
        print(f"train@{args.iteration} failed: {err}", file=sys.stderr)
        return 1
    torch.set_num_threads(int(train.get("threads", os.cpu_count() or 1)))
    device, rank = dist.start(train.get("device", "auto"))
    try:
        run_iteration(params, plan, paths, device, rank)
    finally:
        dist.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
