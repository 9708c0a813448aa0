"""DVC stage `export`: ensemble members to ONNX (a front end per mel config + a body per member), parity-checked."""

from __future__ import annotations

import argparse
from pathlib import Path

from birdclef.infer.export import export_ensemble
from birdclef.infer.members import load_spec
from birdclef.infer.teacher_member import teacher_files
from birdclef.io import load_params, sweep_temps, write_metrics
from birdclef.track import stage_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--spec", type=Path, required=True, help="ensemble spec (build/ensemble/spec.json)")
    ap.add_argument("--out", type=Path, required=True, help="export folder: ONNX graphs + export_spec.json")
    ap.add_argument("--metrics", type=Path, required=True, help="metrics/export.json")
    ap.add_argument("--timings", type=Path, required=True, help="metrics/timing/export.json (speed per backend)")
    ap.add_argument("--parity-audio", type=Path, default=None, help="a recording for the parity check")
    args = ap.parse_args()
    sweep_temps(args.out, args.metrics, args.timings)  # what a killed run left beside its outputs

    params = load_params(args.params)
    cfg = params["export"]
    spec = load_spec(args.spec)
    # A teacher member's files stay where the ensemble stage found them (they are not ONNX-exported): check them
    # now, and `birdclef bundle` copies them.
    teachers = teacher_files(spec["teacher"]) if spec.get("teacher") else {}
    with stage_run("export", {"export": cfg}, params.get("tracking")) as run:
        metrics = export_ensemble(spec["members"], args.out, cfg, spec, args.parity_audio)
        metrics |= {f"size_mb_teacher_{k}": round(f.stat().st_size / 2**20, 3) for k, f in teachers.items()}
        write_metrics(metrics, args.metrics, args.timings)
        run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
        run.set_tags({"backend": metrics["backend"]})
        for graph in sorted(args.out.glob("fused_*.onnx")):  # the whole wave -> probabilities model per member
            run.log_onnx(graph, name=graph.stem)
    print(", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items())))


if __name__ == "__main__":
    main()
