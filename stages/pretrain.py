"""DVC stage `pretrain`: D1 pre-training on extra sources' non-competition species (a marker only when off)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd
import torch

from birdclef import dist
from birdclef.io import atomic_path, load_params, sweep_temps, write_json, write_metrics
from birdclef.track import stage_run
from birdclef.train.params import PRETRAIN_STAGE, check_params
from birdclef.train.pretrain import PretrainConfig, run_pretrain


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, required=True, help="data root holding extra/<source>/")
    ap.add_argument("--acquire", type=Path, required=True, help="acquire stage output (the competition taxonomy)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", type=Path, required=True, help="one <model>/model.pt per pre-trained member")
    ap.add_argument("--resume", type=Path, required=True, help="resume checkpoints and decoded audio (persist)")
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--timings", type=Path, required=True, help="timing JSON to write (durations and rates, wall time)")
    args = ap.parse_args(argv)
    sweep_temps(args.out, args.resume, args.metrics, args.timings)  # what a killed run left beside (and in) its outputs

    params = load_params(args.params)
    args.resume.mkdir(parents=True, exist_ok=True)  # scratch kept across runs (not a DVC output: see dvc.yaml)
    try:
        check_params(params, PRETRAIN_STAGE)
        cfg = PretrainConfig.from_params(params.get("pretrain"))
    except ValueError as err:
        print(f"pretrain failed: {err}", file=sys.stderr)
        return 1
    if not cfg.enabled:
        # Off: a fixed marker, so the train stages that depend on this folder do not rerun for nothing.
        with stage_run("pretrain", {"pretrain": params.get("pretrain", {})}, params.get("tracking")) as run:
            with atomic_path(args.out) as tmp:
                tmp.mkdir()
                write_json(tmp / "pretrain.json", {"enabled": False, "members": []})
            write_metrics({"enabled": 0}, args.metrics, args.timings)
            run.log_metrics({"enabled": 0})
        print("pretrain: off (pretrain.sources is empty)")
        return 0
    # One process: pre-training ignores train.nproc (run it on a GPU with the gpu preset instead).
    torch.set_num_threads(int(params["train"].get("threads", os.cpu_count() or 1)))
    device = dist.torch_device(params["train"].get("device", "auto"))
    species = pd.read_parquet(args.acquire / "taxonomy.parquet")["primary_label"].tolist()
    try:
        with atomic_path(args.out) as tmp:
            metrics = run_pretrain(args.data, params, species, tmp, args.resume, device)
            write_json(tmp / "pretrain.json", {"enabled": True, "members": cfg.members, "sources": cfg.sources})
    except (ValueError, OSError) as err:
        print(f"pretrain failed: {err}", file=sys.stderr)
        return 1
    args.resume.mkdir(parents=True, exist_ok=True)
    write_metrics({"enabled": 1, **metrics}, args.metrics, args.timings)
    print(f"pretrain: {metrics['files']} files, {metrics['species']} species -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
