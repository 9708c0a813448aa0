"""AUC change of reduced-precision exports (fp16, int8, int8_nncf) against fp32 on a labelled demo split.

The same checkpoints are exported in each precision, run over the split as the infer stage runs them and scored
like the infer stage.

Prints one JSON object: per precision ``auc_<P>`` (macro ROC-AUC over the labelled soundscapes), ``auc_change_<P>``
(``auc_<P> - auc_fp32``), ``max_abs_score_diff_<P>`` (largest |score - fp32 score| over every window and class
of the post-processed submission), ``backend_<P>`` (the backend the export serves on), ``seconds_per_soundscape_
minute_<P>`` (the runner's own timing; a busy machine makes it noisy: ``benchmarks/inference.py`` times speed),
the export's parity metrics and the INT8 graphs' QDQ node counts, and the bundle planner's verdict on that export
(``projected_kaggle_minutes_<P>``: 700 soundscapes on 4 cores; ``fit_alone_<P>``: how many members of the first
checkpoint's kind fit alone in 90 minutes), from the export's and this run's timings as ``birdclef bundle`` plans.

Run: ``python benchmarks/precision_auc.py --checkpoint build/train/it2/sed_mnv3s/model.pt`` (several
``--checkpoint`` make an equal-weight ensemble).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from birdclef.infer import postprocess
from birdclef.infer.backends import read_spec
from birdclef.infer.budget import plan_bundle
from birdclef.infer.export import export_ensemble
from birdclef.infer.members import ExportFactory
from birdclef.infer.runner import PREDICT_DEFAULTS, SPEC_FORMAT, infer, list_soundscapes
from birdclef.infer.submission import build_submission, read_sample, score_labelled
from birdclef.models import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, action="append", required=True, help="a member's model.pt")
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--data", type=Path, default=ROOT / "data")
    ap.add_argument("--split", choices=["test", "val"], default="test")
    ap.add_argument("--precisions", default="fp32,fp16,int8,int8_nncf")
    ap.add_argument("--calibration-audio", type=Path, default=None, help="default: DATA/train_soundscapes")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    params = yaml.safe_load(args.params.read_text())
    ens_cfg = params.get("ensemble", {})
    post = postprocess.resolve(ens_cfg.get("postprocess"))
    predict = dict(
        PREDICT_DEFAULTS, **{k: v for k, v in (ens_cfg.get("predict") or {}).items() if k in PREDICT_DEFAULTS}
    )
    members, classes = [], None
    for i, path in enumerate(args.checkpoint):
        model, _ = load_checkpoint(path)
        classes = classes or list(model.classes)
        if list(model.classes) != classes:
            raise SystemExit(f"{path}: another class list than the first checkpoint's")
        members.append({"name": f"m{i}_{path.parent.name}", "checkpoint": str(path), "weight": 1.0, "classes": None})
    spec = {"format": SPEC_FORMAT, "classes": classes, "members": members, "combination": "mean",
            "postprocess": post, "predict": predict, "file_seconds": 60}  # fmt: skip
    files = list_soundscapes(args.data / f"{args.split}_soundscapes")
    labels = pd.read_csv(args.data / f"{args.split}_labels.csv", dtype={"row_id": str})
    sample = read_sample(args.data / "sample_submission.csv")
    calibration = args.calibration_audio or args.data / "train_soundscapes"
    export_cfg = dict(params.get("export", {}), calibration_audio=str(calibration))

    result: dict = {"checkpoints": [str(p) for p in args.checkpoint], "split": args.split, "files": len(files)}
    subs: dict[str, pd.DataFrame] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in args.precisions.split(","):
            folder = Path(tmp) / f"export_{precision}"
            try:
                metrics = export_ensemble(members, folder, {**export_cfg, "precision": precision}, spec)
            except ValueError as err:  # the export refuses a precision whose parity fails: report it, go on
                result[f"refused_{precision}"] = str(err)
                continue
            result |= {f"export_{precision}_{k}": v for k, v in metrics.items() if "parity" in k or "int8" in k}
            preds, scores = infer(spec, files, ExportFactory(str(folder)), workers=args.workers, threads=1)
            sub = build_submission(preds.stems, preds.n_windows, scores, classes, sample, False)
            found, _ = score_labelled(sub, labels)
            subs[precision] = sub
            result[f"auc_{precision}"] = round(float(found["score"]), 5)
            result[f"backend_{precision}"] = metrics["backend"]
            speed = preds.speed()
            result[f"seconds_per_soundscape_minute_{precision}"] = speed["seconds_per_soundscape_minute"]
            plan = plan_bundle(read_spec(folder), metrics, speed)
            result[f"projected_kaggle_minutes_{precision}"] = plan["projected_minutes"]
            result[f"fit_alone_{precision}"] = plan["kinds"][plan["members"][members[0]["name"]]["kind"]]["fit_alone"]
    if "fp32" in subs:
        base = subs["fp32"].set_index("row_id")
        for precision, sub in subs.items():
            other = sub.set_index("row_id").loc[base.index, base.columns]
            result[f"auc_change_{precision}"] = round(result[f"auc_{precision}"] - result["auc_fp32"], 5)
            result[f"max_abs_score_diff_{precision}"] = float(np.abs(other.to_numpy() - base.to_numpy()).max())
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
