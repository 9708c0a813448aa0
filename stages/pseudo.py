"""DVC stage `pseudo@k`: the teacher ensemble of iteration k labels the train soundscapes (soft labels + weights)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd
import torch

from birdclef import dist
from birdclef.features.cache import WaveCache
from birdclef.io import atomic_path, load_params, sweep_temps, write_metrics, write_parquet
from birdclef.track import stage_run
from birdclef.train.params import PSEUDO_STAGE, check_params
from birdclef.train.pseudo_round import build_round, label_soundscapes, load_teachers, round_entry, with_foundation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--round", type=int, required=True, help="teacher iteration k of a `pseudo.rounds` entry")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--teacher", type=Path, required=True, help="train output folder of the teacher iteration")
    ap.add_argument("--acquire", type=Path, required=True, help="acquire output (soundscape labels, taxonomy)")
    ap.add_argument("--features", type=Path, required=True, help="waveform cache with the train soundscapes")
    ap.add_argument("--foundation", type=Path, default=None,
                    help="the teacher stage's folder (T3: a round's teacher_weight blends it in)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--timings", type=Path, required=True, help="timing JSON to write (durations and rates, wall time)")
    ap.add_argument("--shards", type=Path, required=True,
                    help="finished blocks of teacher predictions (kept across a kill: the rerun skips them)")
    args = ap.parse_args()
    sweep_temps(args.out, args.shards, args.metrics, args.timings)  # what a killed run left beside (and in) its outputs

    params = load_params(args.params)
    check_params(params, PSEUDO_STAGE)
    cfg = params["pseudo"]
    try:
        entry = round_entry(cfg, args.round)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    dist.relaunch(int(cfg.get("nproc", 1)))  # pseudo.nproc > 1: this command again under torchrun
    rank, world = dist.rank_world()
    torch.set_num_threads(int(cfg.get("threads") or max(1, (os.cpu_count() or 1) // max(world, 1))))
    device = dist.rank_device(dist.torch_device(params["train"].get("device", "auto")))
    classes = pd.read_parquet(args.acquire / "taxonomy.parquet")["primary_label"].tolist()
    predictors, salt = load_teachers(args.teacher, classes, device)
    cache = WaveCache(args.features)
    ids = sorted(cache.keys("train_soundscape"))
    labelled = label_soundscapes(predictors, cache, ids, cfg, args.shards, salt)
    if labelled is None:  # ranks > 0: their blocks are on disk, rank 0 merges and writes
        dist.finish()
        return
    windows, file_mean, key = labelled
    weight = float(entry.get("teacher_weight") or 0.0)
    windows = with_foundation(windows, ids, args.foundation, weight, entry.get("teacher_blend", "linear"))
    truth = pd.read_parquet(args.acquire / "soundscape_labels.parquet")
    truth = truth[truth["split"] == "train"].drop(columns=["split", "soundscape_id"])
    with stage_run(f"pseudo@{args.round}", {"pseudo": cfg, "round": entry}, params.get("tracking")) as run:
        result = build_round(windows, ids, classes, entry, file_mean, truth)
        metrics = {"teacher_members": len(predictors), "foundation_weight": weight, **result.metrics}
        with atomic_path(args.out) as out:
            out.mkdir()
            write_parquet(result.table, out / "labels.parquet")
            write_parquet(result.sampler, out / "soundscapes.parquet")
        write_metrics(metrics, args.metrics, args.timings)
        run.log_metrics(metrics)
    dist.clear(args.shards, key)
    dist.finish()
    print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))


if __name__ == "__main__":
    main()
