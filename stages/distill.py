"""DVC stage `distill`: T1, student backbones trained on a foundation teacher's embeddings (a marker when off)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from birdclef import dist
from birdclef.features.cache import WaveCache
from birdclef.io import atomic_path, load_params, sweep_temps, write_json, write_metrics
from birdclef.track import stage_run
from birdclef.train.embed_distill import DistillParams, run_distill
from birdclef.train.params import DISTILL_STAGE, check_params


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--teacher", type=Path, required=True, help="the teacher stage's folder (embeddings)")
    ap.add_argument("--features", type=Path, required=True, help="waveform cache (segments and soundscapes)")
    ap.add_argument("--out", type=Path, required=True, help="one <model>/model.pt per distilled member")
    ap.add_argument("--resume", type=Path, required=True, help="resume checkpoints (persist across a kill)")
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--timings", type=Path, required=True, help="timing JSON to write (durations and rates, wall time)")
    args = ap.parse_args()
    sweep_temps(args.out, args.resume, args.metrics, args.timings)  # what a killed run left beside (and in) its outputs

    params = load_params(args.params)
    args.resume.mkdir(parents=True, exist_ok=True)  # scratch kept across runs (not a DVC output: see dvc.yaml)
    try:
        check_params(params, DISTILL_STAGE)  # distill.*, its train override merged over train.*, models, mels
        cfg = DistillParams.from_dict(params.get("distill"))
    except ValueError as err:
        print(f"distill failed: {err}", file=sys.stderr)
        return 1
    tracking = params.get("tracking")
    with stage_run("distill", {"distill": params.get("distill", {})}, tracking) as run:
        if not cfg.enabled:
            # Off: a fixed marker, so the train stages that depend on this folder do not rerun for nothing.
            with atomic_path(args.out) as tmp:
                tmp.mkdir()
                write_json(tmp / "distill.json", {"enabled": False, "members": []})
            write_metrics({"enabled": 0}, args.metrics, args.timings)
            print("distill: off (distill.enabled is false)")
            return 0
        torch.set_num_threads(int(params["train"].get("threads", os.cpu_count() or 1)))
        device = dist.torch_device(params["train"].get("device", "auto"))
        try:
            with atomic_path(args.out) as tmp:
                metrics = run_distill(params, args.teacher, WaveCache(args.features), tmp, args.resume, run, device)
                write_json(tmp / "distill.json", {"enabled": True, "members": list(cfg.members)})
        except (ValueError, OSError) as err:
            print(f"distill failed: {err}", file=sys.stderr)
            return 1
        flat = {f"{m}_{k}": v for m, values in metrics.items() for k, v in values.items()}
        write_metrics({"enabled": 1, **flat}, args.metrics, args.timings)
        run.log_metrics(flat)
    print("distill: " + ", ".join(f"{k}={v:.4g}" for k, v in flat.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
