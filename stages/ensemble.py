"""DVC stage `ensemble`: run the chosen members over labelled soundscapes, fit weights (on val), write the spec."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from birdclef.infer.ensemble_spec import build_spec, read_split
from birdclef.infer.members import torch_factory
from birdclef.infer.submission import per_class_table, read_sample
from birdclef.infer.teacher_spec import describe
from birdclef.io import atomic_path, load_params, sweep_temps, write_json, write_metrics, write_parquet
from birdclef.track import stage_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--soundscapes", type=Path, required=True, help="the test split (data/test_soundscapes)")
    ap.add_argument("--labels", type=Path, required=True, help="their 0/1 labels in submission format")
    ap.add_argument("--val-soundscapes", type=Path, default=None, help="the val split (fit.source: val, score_val)")
    ap.add_argument("--val-labels", type=Path, default=None, help="their labels (data/val_labels.csv)")
    ap.add_argument("--sample", type=Path, required=True, help="sample_submission.csv (class order)")
    ap.add_argument("--taxonomy", type=Path, required=True, help="taxonomy.csv (class_name, scientific_name)")
    ap.add_argument("--train-csv", type=Path, required=True, help="train.csv (per-class counts for smoothing)")
    ap.add_argument("--train-dir", type=Path, required=True, help="parent of the it<k>/<model>/model.pt folders")
    ap.add_argument("--segments", type=Path, default=None, help="clean segment table (fit.source: oof)")
    ap.add_argument("--quarantine", type=Path, default=None,
                    help="acquire's quarantine.csv: its soundscapes are left out of the scores")  # fmt: skip
    ap.add_argument("--out", type=Path, required=True, help="output folder: spec.json + member_scores/")
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--timings", type=Path, required=True, help="timing JSON to write (durations and rates, wall time)")
    args = ap.parse_args()
    sweep_temps(args.out, args.metrics, args.timings)  # what a killed run left beside its outputs
    if (args.val_soundscapes is None) != (args.val_labels is None):
        ap.error("--val-soundscapes and --val-labels go together")

    params = load_params(args.params)
    cfg = params["ensemble"]
    sample = read_sample(args.sample)
    classes = [c for c in sample.columns if c != "row_id"]
    taxonomy = pd.read_csv(args.taxonomy, dtype={"primary_label": str})
    class_of = dict(zip(taxonomy["primary_label"], taxonomy["class_name"], strict=True))
    primary = pd.read_csv(args.train_csv, usecols=["primary_label"], dtype=str)["primary_label"]
    counts = primary.value_counts().reindex(classes, fill_value=0).to_numpy()
    test = read_split("test", args.soundscapes, args.labels, args.quarantine)
    if test.missing:
        raise SystemExit(f"ensemble failed: the test split is unusable: {test.missing}")
    val = read_split("val", args.val_soundscapes, args.val_labels, args.quarantine) if args.val_soundscapes else None
    try:  # T2: the foundation teacher as a member (ensemble.teacher, with the `teacher` section's adapter)
        teacher = describe(cfg.get("teacher"), params.get("teacher"), classes, taxonomy)
    except (ValueError, FileNotFoundError, ImportError) as err:
        raise SystemExit(f"ensemble failed: {err}") from err

    with stage_run("ensemble", {"ensemble": cfg}, params.get("tracking")) as run:
        segments = pd.read_parquet(args.segments) if args.segments else None
        try:
            spec, metrics, tables = build_spec(cfg, args.train_dir, test, classes, torch_factory, class_of, counts,
                                               segments, teacher, val)  # fmt: skip
        except ValueError as err:  # a setting that cannot apply, a file that cannot be scored under on_bad: fail, ...
            raise SystemExit(f"ensemble failed: {err}") from err
        with atomic_path(args.out) as out:
            (out / "member_scores").mkdir(parents=True)
            write_json(out / "spec.json", spec)
            for name, table in tables.items():
                write_parquet(table, out / "member_scores" / f"{name}.parquet")
        write_metrics(metrics, args.metrics, args.timings)
        run.log_metrics(metrics)
        # the final ensemble's AUC per species on test, as one table (not hundreds of metric columns)
        run.log_table(per_class_table(test.labels, tables["ensemble"], class_of), "tables/per_class_auc.json")
        run.log_artifact(args.out / "spec.json")
    print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items())))


if __name__ == "__main__":
    main()
