"""DVC stage `pseudo@k`: the teacher ensemble of iteration k labels the train soundscapes (soft labels + weights)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from birdclef import WINDOW_SECONDS, dist
from birdclef.features.cache import WaveCache
from birdclef.io import atomic_path, load_params, write_json, write_parquet
from birdclef.models import load_checkpoint
from birdclef.track import stage_run
from birdclef.train.evaluate import macro_auc, model_predictor
from birdclef.train.params import PSEUDO_STAGE, check_params
from birdclef.train.pseudo import label_stats, teacher_predictions, transform


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--round", type=int, required=True, help="teacher iteration k of a `pseudo.rounds` entry")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--teacher", type=Path, required=True, help="train output folder of the teacher iteration")
    ap.add_argument("--acquire", type=Path, required=True, help="acquire output (soundscape labels, taxonomy)")
    ap.add_argument("--features", type=Path, required=True, help="waveform cache with the train soundscapes")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument(
        "--shards",
        type=Path,
        required=True,
        help="finished blocks of teacher predictions (kept across a kill: the rerun skips them)",
    )
    args = ap.parse_args()

    params = load_params(args.params)
    check_params(params, PSEUDO_STAGE)
    cfg = params["pseudo"]
    rnd = next((r for r in cfg["rounds"] if int(r["k"]) == args.round), None)
    if rnd is None:
        raise SystemExit(f"params pseudo.rounds has no entry with k = {args.round}")
    nproc = int(cfg.get("nproc", 1))
    dist.relaunch(nproc)  # pseudo.nproc > 1: this command again under torchrun, soundscapes split over ranks
    rank, world = dist.rank_world()
    threads = cfg.get("threads") or max(1, (os.cpu_count() or 1) // max(world, 1))
    torch.set_num_threads(int(threads))
    members = sorted(p.parent.name for p in args.teacher.glob("*/model.pt"))
    if not members:
        raise SystemExit(f"{args.teacher}: no member checkpoints (*/model.pt)")
    classes = pd.read_parquet(args.acquire / "taxonomy.parquet")["primary_label"].tolist()
    predictors = []
    for name in members:
        model, _ = load_checkpoint(args.teacher / name / "model.pt")
        if list(model.classes or []) != classes:
            raise SystemExit(f"{name}: teachers must cover every species (taxon-group members merge at ensembling)")
        predictors.append(model_predictor(model.eval()))
    cache = WaveCache(args.features)
    ids = sorted(cache.keys("train_soundscape"))
    chunking = {k: cfg.get(k) for k in ("chunk_s", "stride_s", "pool")}
    key = dist.fingerprint(
        ids, {"teachers": {m: dist.file_digest(args.teacher / m / "model.pt") for m in members}, **chunking}
    )

    def label_block(block: list[str]) -> list[dict[str, np.ndarray]]:
        w, f = teacher_predictions(
            predictors,
            cache,
            block,
            float(cfg["chunk_s"]),
            float(cfg["stride_s"]),
            cfg.get("pool", "mean"),
            progress=False,
        )
        return [{"windows": w[i], "frames": f[i]} for i in range(len(block))]

    results = dist.sharded_map(ids, label_block, args.shards, key, int(cfg.get("block", 16)), desc="pseudo-labelling")
    if results is None:  # ranks > 0: their blocks are on disk, rank 0 merges and writes
        dist.finish()
        return
    windows = np.stack([r["windows"] for r in results])
    frames = np.stack([r["frames"] for r in results])
    with stage_run(f"pseudo@{args.round}", {"pseudo": cfg, "round": rnd}, params.get("tracking")) as run:
        labels = transform(windows, cfg.get("transforms", {}), float(rnd["tau"]))
        n_files, n_win, _ = labels.probs.shape
        table = pd.DataFrame(labels.probs.reshape(-1, len(classes)), columns=classes)
        table.insert(0, "soundscape_id", np.repeat(ids, n_win))
        table.insert(1, "start_s", np.tile(np.arange(n_win) * WINDOW_SECONDS, n_files).astype(float))
        table.insert(2, "end_s", table["start_s"] + WINDOW_SECONDS)
        table.insert(3, "weight", labels.weight.reshape(-1))
        table = table[labels.keep.reshape(-1)].reset_index(drop=True)
        sampler = pd.DataFrame({"soundscape_id": ids, "sampler_weight": labels.sampler_weights()})
        metrics = {"teacher_members": len(members), "tau": float(rnd["tau"]), **label_stats(labels)}
        truth = pd.read_parquet(args.acquire / "soundscape_labels.parquet")
        truth = truth[truth["split"] == "train"].drop(columns=["split", "soundscape_id"])
        if len(truth):
            row_ids = [f"{s}_{WINDOW_SECONDS * (i + 1)}" for s in ids for i in range(n_win)]
            for tag, probs in (("raw", windows), ("labels", labels.probs)):
                sub = pd.DataFrame(probs.reshape(-1, len(classes)), columns=classes)
                sub.insert(0, "row_id", row_ids)
                sub = sub[sub["row_id"].isin(set(truth["row_id"]))]
                metrics[f"auc_{tag}"] = macro_auc(truth[["row_id", *classes]], sub)["auc"]
        with atomic_path(args.out) as out:
            out.mkdir()
            write_parquet(table, out / "labels.parquet")
            write_parquet(sampler, out / "soundscapes.parquet")
            np.save(out / "frames.npy", frames.astype(np.float16))
        write_json(args.metrics, metrics)
        run.log_metrics(metrics)
    dist.clear(args.shards, key)
    dist.finish()
    print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))


if __name__ == "__main__":
    main()
