"""DVC stage `infer`: the test soundscapes through the ensemble (+ a teacher member); submission.csv, speed metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from birdclef import dist
from birdclef.infer.members import load_spec, make_factory
from birdclef.infer.runner import infer, list_soundscapes
from birdclef.infer.sharded import infer_ranks
from birdclef.infer.submission import build_submission, read_sample, score_labelled, write_submission
from birdclef.io import load_params, sweep_temps, write_csv, write_metrics
from birdclef.track import stage_run

OPTIONS = ("workers", "threads", "on_error", "file_seconds", "start_method")  # infer params of runner.infer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--spec", type=Path, required=True, help="ensemble spec (build/ensemble/spec.json)")
    ap.add_argument("--export", type=Path, default=None, help="export folder with export_spec.json (ONNX)")
    ap.add_argument("--soundscapes", type=Path, required=True, help="folder of test soundscapes")
    ap.add_argument("--sample", type=Path, required=True, help="sample_submission.csv (column order)")
    ap.add_argument("--labels", type=Path, default=None, help="labels in submission format, when they exist")
    ap.add_argument("--taxonomy", type=Path, default=None, help="taxonomy.csv, for per-taxon scores")
    ap.add_argument("--out", type=Path, required=True, help="submission.csv")
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--timings", type=Path, required=True, help="speed, RSS, projected Kaggle minutes (JSON)")
    ap.add_argument("--per-class", type=Path, default=None, help="CSV of AUC per labelled species (primary_label, "
                    "class_name, auc)")  # fmt: skip
    ap.add_argument("--shards", type=Path, default=Path("build/shards/infer"),
                    help="finished blocks when infer.nproc > 1 (a rerun after a kill skips them)")  # fmt: skip
    args = ap.parse_args()
    sweep_temps(args.out, args.metrics, args.timings, args.per_class, args.shards)  # a killed run's debris (rank 0)
    args.shards.mkdir(parents=True, exist_ok=True)  # scratch kept across runs (not a DVC output: see dvc.yaml)

    params = load_params(args.params)
    cfg = params["infer"]
    dist.relaunch(int(cfg.get("nproc", 1)))  # infer.nproc > 1: this command again under torchrun, files split
    spec = load_spec(args.spec)
    files = list_soundscapes(args.soundscapes)
    if not files:
        raise SystemExit(f"{args.soundscapes}: no audio files")
    factory = make_factory(cfg.get("backend", "auto"), args.export)
    done = None
    if dist.rank_world()[1] > 1:
        done = infer_ranks(spec, files, factory, args.shards, cfg)
        if done is None:  # ranks > 0: their blocks are on disk, rank 0 merges and writes
            return
    with stage_run("infer", {"infer": cfg}, params.get("tracking")) as run:
        options = {k: cfg[k] for k in OPTIONS if k in cfg}
        preds, scores = done if done is not None else infer(spec, files, factory, **options)
        sub = build_submission(preds.stems, preds.n_windows, scores, spec["classes"], read_sample(args.sample),
                               bool(cfg.get("require_sample_rows", False)))  # fmt: skip
        write_submission(sub, args.out)
        metrics = preds.speed()
        if args.labels is not None:
            taxonomy = pd.read_csv(args.taxonomy, dtype={"primary_label": str}) if args.taxonomy else None
            class_of = None if taxonomy is None else dict(zip(taxonomy.primary_label, taxonomy.class_name, strict=True))
            found, per_class = score_labelled(sub, pd.read_csv(args.labels, dtype={"row_id": str}), class_of)
            metrics.update(found)
            if per_class is not None and args.per_class is not None:
                write_csv(per_class, args.per_class)
            if per_class is not None:  # one table artifact: hundreds of per-class metric columns swamp MLflow's UI
                run.log_table(per_class, "tables/per_class_auc.json")
        write_metrics(metrics, args.metrics, args.timings)
        run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
        run.log_artifact(args.out)
        run.set_tags({"backend": str(cfg.get("backend", "auto"))})
    print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items())))


if __name__ == "__main__":
    main()
