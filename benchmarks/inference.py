"""Inference speed and memory benchmark: one SED member end to end, ONNX vs torch, N-member ensembles, peak RSS.

Prints one JSON object (times are medians of ``--repeats`` runs, after one warm-up):
- ``e2e_ms_per_min_<backend>``: decode (ogg) + mel + model + post-processing of one 60-s soundscape with
  ``--threads`` intra-op threads (goal <= 150 ms on 2 cores); ``decode_ms_per_min`` alone. ``onnxruntime`` and
  ``openvino`` run as the infer stage does (numpy FFT front end + body graph); ``onnxruntime_graph_frontend``
  runs the ONNX front-end graph (Conv-DFT) instead, for reference;
- ``ort_speedup``: torch eager / onnxruntime model time (mel + model, decode excluded; goal >= 2.5);
  ``ort_body_speedup`` the same for the network alone (``body_ms_per_min_*``, mel precomputed) and
  ``frontend_ms_per_min_*`` the mel front ends alone (torchaudio, and the numpy/scipy FFT one the infer stage runs);
- ``ensemble_ms_per_min_n<N>``: N members sharing one mel config end to end, as the infer stage runs them (one
  chunking pass, one front end, N bodies); ``ensemble_bound_ms_per_min_n<N>`` = decode + mel + N x body, the
  parts timed alone on the same file just before (the goal the ensemble should stay under);
- ``bare_backbone_ms_per_min_onnxruntime``: the bare timm backbone's ONNX graph (``forward_features``, no head, no
  front end) on the same 12 mel windows; ``member_bound_ms_per_min`` = decode + numpy front end + 1.2 x that, the
  bound the member's end-to-end onnxruntime time should stay under (``member_within_bound``);
- per ``--precisions`` entry P (``fp16``: OpenVINO IR with FP16 weights; ``int8``: static QDQ calibrated on
  ``--calibration-audio``; ``int8_nncf``: NNCF's INT8 OpenVINO IR, calibrated on the same):
  ``e2e_ms_per_min_<P>_<backend>`` and ``body_ms_per_min_<P>_<backend>`` on each backend that serves it,
  ``parity_<P>_<backend>`` (max abs probability diff vs fp32 on the export's test audio) and
  ``speedup_e2e_<P>`` = the fastest fp32 end to end / the fastest P end to end;
- ``kaggle_mode_ms_per_min_[<P>_]<backend>``: throughput as the Kaggle bundle runs (``runner.infer`` in a fresh
  process over ``--kaggle-files`` soundscapes, one worker per core with one thread each: wall ms per soundscape
  minute with every core busy, the median of ``--kaggle-repeats`` processes), fp32 and each precision;
  ``speedup_kaggle_mode_<P>`` = the fastest fp32 / the fastest P. With one thread per worker the network's share of
  the time is larger than in the ``--threads 2`` latency run (decode and front end do not speed up), and this
  ratio is the one that sets how many members fit in Kaggle's 90 minutes;
- ``rss_mb_<n>_files``, ``seconds_per_soundscape_minute_<n>_files``, ``projected_kaggle_minutes_<n>_files``:
  ``runner.infer`` over n generated 60-s noise soundscapes in a fresh process with ``--workers`` workers (files
  are hard links to ``--distinct`` distinct ones: more than a worker's mel cache holds, so none is served from it).

The model has random weights (speed does not depend on them). Run: ``python benchmarks/inference.py --model
sed_mnv3s`` (the default member).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import yaml

from birdclef import SAMPLE_RATE
from birdclef.audio.decode import load_audio
from birdclef.infer import ensemble, postprocess
from birdclef.infer.backends import (
    ExportedEnsemble,
    OrtPredictor,
    available_backends,
    load_graph,
    read_spec,
)
from birdclef.infer.export import body_wrapper, export_ensemble
from birdclef.infer.melspec import NumpyFrontEnd
from birdclef.infer.onnx_graphs import export_graph
from birdclef.infer.precision import SERVES
from birdclef.infer.runner import PREDICT_DEFAULTS, SPEC_FORMAT
from birdclef.infer.torch_backend import TorchPredictor
from birdclef.infer.windows import predict_file, predict_file_group, stack_predictors
from birdclef.models import create_model, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def median_ms(fn, repeats: int) -> float:
    # fn(i) works on the i-th distinct soundscape, so no front-end cache can serve a repeat from the last one.
    fn(0)  # warm-up: sessions, allocator, page cache
    times = []
    for i in range(1, repeats + 1):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(times), 1)


def noise_soundscape(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    wave = 0.05 * rng.normal(size=60 * SAMPLE_RATE)
    t = np.arange(wave.size) / SAMPLE_RATE
    wave += 0.1 * np.sin(2 * np.pi * (2000 + 500 * seed) * t) * (np.sin(2 * np.pi * 0.2 * t) > 0.5)
    sf.write(path, wave.astype(np.float32), SAMPLE_RATE, format="OGG")


def end_to_end(group, paths: list[Path], post: dict, batch_size: int):
    # As the infer stage runs a file: decode, one chunking pass for all members (a group predictor), combine,
    # file-level post-processing.
    def run(i: int) -> None:
        wave = load_audio(paths[i % len(paths)])
        outs = [windows for windows, _ in predict_file_group(group, wave, batch_size=batch_size)]
        scores = ensemble.combine(outs, [1.0] * len(outs), [str(i) for i in range(outs[0].shape[1])])
        postprocess.apply_file(scores, post)

    return run


def ensemble_and_bound(run, paths: list[Path], frontend, body, n: int, repeats: int) -> tuple[float, float]:
    """Median ms of ``run`` (an N-member ensemble end to end) and of decode + mel + N x body, the parts timed
    alone on the same file right before it, so that the load of the moment weighs on both alike."""
    run(0)
    took, bound = [], []
    for i in range(1, repeats + 1):
        t0 = time.perf_counter()
        wave = load_audio(paths[i])
        t1 = time.perf_counter()
        mel = frontend(np.ascontiguousarray(wave[: 12 * 5 * SAMPLE_RATE].reshape(12, -1)))[0]
        t2 = time.perf_counter()
        body(mel)
        t3 = time.perf_counter()
        run(i)
        took.append(time.perf_counter() - t3)
        bound.append((t1 - t0) + (t2 - t1) + n * (t3 - t2))
    return round(1000 * statistics.median(took), 1), round(1000 * statistics.median(bound), 1)


def rss_run(files_dir: Path, spec_path: Path, export_dir: Path, workers: int, backend: str = "onnxruntime") -> dict:
    # A fresh process, so its peak RSS is the inference's own; one thread per worker, as the Kaggle bundle runs.
    code = (
        "import json, sys\n"
        "from birdclef.infer.runner import infer, list_soundscapes, load_spec, ExportFactory\n"
        f"spec = load_spec({str(spec_path)!r})\n"
        f"files = list_soundscapes({str(files_dir)!r})\n"
        f"preds, _ = infer(spec, files, ExportFactory({str(export_dir)!r}, {backend!r}), workers={workers},"
        " threads=1)\n"
        "print(json.dumps(preds.speed()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


class _BareBackbone(torch.nn.Module):
    # The timm backbone alone: (B, in_chans, n_mels, frames) -> feature map, no head and no front end.
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = model.backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)


def bare_backbone_ms(model, mels: list[np.ndarray], path: Path, threads: int, repeats: int) -> float:
    """Median ms of the bare backbone's ONNX graph (onnxruntime) on the mel windows, as the member feeds it."""
    with torch.no_grad():
        inputs = [model.head.prepare(torch.from_numpy(m).expand(-1, model.in_chans, -1, -1)).numpy() for m in mels]
    export_graph(_BareBackbone(model).eval(), torch.from_numpy(inputs[0][:2]), path, "x", ["features"], (0, 3))
    graph = load_graph("onnxruntime", path, threads)
    return median_ms(lambda i: graph(inputs[i]), len(inputs) - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--model", default="sed_mnv3s", help="a params.yaml `models` entry")
    ap.add_argument("--classes", type=int, default=206)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--members", default="1,3,6")
    ap.add_argument("--rss-files", default="50,700", help="comma-separated soundscape counts; empty to skip")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--distinct", type=int, default=40, help="distinct soundscapes (more than a worker's mel cache)")
    ap.add_argument(
        "--precisions", default="fp16,int8,int8_nncf", help="reduced-precision exports to time (empty: none)"
    )
    ap.add_argument(
        "--kaggle-files",
        type=int,
        default=40,
        help="soundscapes for the Kaggle-mode throughput run of each precision (0: skip)",
    )
    ap.add_argument("--kaggle-repeats", type=int, default=3, help="Kaggle-mode runs per backend and precision (median)")
    ap.add_argument(
        "--calibration-audio",
        type=Path,
        default=ROOT / "data" / "train_soundscapes",
        help="int8 calibration recordings (default: the demo's train soundscapes; else the noise files)",
    )
    args = ap.parse_args()

    params = yaml.safe_load(args.params.read_text())
    model_cfg = dict(params["models"][args.model])
    mel = params["mels"][model_cfg.pop("mel")]
    post = postprocess.resolve(params.get("ensemble", {}).get("postprocess"))
    batch = int(params.get("ensemble", {}).get("predict", {}).get("batch_size", 16))
    torch.set_num_threads(args.threads)
    result: dict = {"model": args.model, "classes": args.classes, "threads": args.threads, "repeats": args.repeats,
                    "cpu_count": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2)}  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        classes = [f"sp{i:03d}" for i in range(args.classes)]
        torch.manual_seed(0)
        model = create_model(model_cfg, args.classes, mel).eval()
        save_checkpoint(tmp / "model.pt", model, {"classes": classes})
        members = [{"name": "m0", "checkpoint": str(tmp / "model.pt"), "weight": 1.0, "classes": None}]
        export_ensemble(members, tmp / "export", {"fused": False, "threads": args.threads, "bench_repeats": 1})
        paths = [tmp / f"noise_{seed}.ogg" for seed in range(max(args.distinct, args.repeats + 1))]
        for seed, path in enumerate(paths):
            noise_soundscape(path, seed)
        waves = [load_audio(p) for p in paths[: args.repeats + 1]]

        spec = read_spec(tmp / "export")
        torch_pred = TorchPredictor(model, args.threads)
        frontend = tmp / "export" / next(iter(spec["mels"].values()))["frontend"]
        # What the infer stage runs: the numpy FFT front end + the body graph; and the all-ONNX chain for reference.
        candidates = [("torch", torch_pred)]
        for backend in available_backends():
            ens = ExportedEnsemble(tmp / "export", backend, args.threads)
            candidates.append((backend, next(iter(ens.predictors().values()))))
        graph_chain = OrtPredictor([frontend, tmp / "export" / spec["members"][0]["body"]], args.threads)
        candidates.append(("onnxruntime_graph_frontend", graph_chain))
        result["decode_ms_per_min"] = median_ms(lambda i: load_audio(paths[i]), args.repeats)
        for name, pred in candidates:
            result[f"model_ms_per_min_{name}"] = median_ms(
                lambda i, p=pred: predict_file(p, waves[i], batch_size=batch), args.repeats
            )
            result[f"e2e_ms_per_min_{name}"] = median_ms(
                end_to_end(stack_predictors([pred]), paths, post, batch), args.repeats
            )
        result["ort_speedup"] = round(result["model_ms_per_min_torch"] / result["model_ms_per_min_onnxruntime"], 2)

        # The two halves apart, on 12 five-second windows per soundscape minute.
        batches = [np.ascontiguousarray(w[: 12 * 5 * SAMPLE_RATE].reshape(12, -1)) for w in waves]
        numpy_fe = NumpyFrontEnd.load(tmp / "export" / next(iter(spec["mels"].values()))["numpy"], args.threads)
        with torch.inference_mode():
            result["frontend_ms_per_min_torch"] = median_ms(
                lambda i: model.frontend(torch.from_numpy(batches[i])), args.repeats
            )
        result["frontend_ms_per_min_numpy"] = median_ms(lambda i: numpy_fe(batches[i]), args.repeats)
        mels = [numpy_fe(b)[0] for b in batches]
        body = body_wrapper(model).eval()
        with torch.inference_mode():
            result["body_ms_per_min_torch"] = median_ms(lambda i: body(torch.from_numpy(mels[i])), args.repeats)
        ort_body = load_graph("onnxruntime", tmp / "export" / spec["members"][0]["body"], args.threads)
        result["body_ms_per_min_onnxruntime"] = median_ms(lambda i: ort_body(mels[i]), args.repeats)
        result["ort_body_speedup"] = round(result["body_ms_per_min_torch"] / result["body_ms_per_min_onnxruntime"], 2)
        result["bare_backbone_ms_per_min_onnxruntime"] = bare_backbone_ms(
            model, mels, tmp / "bare_backbone.onnx", args.threads, args.repeats
        )
        result["member_bound_ms_per_min"] = round(
            result["decode_ms_per_min"] + result["frontend_ms_per_min_numpy"]
            + 1.2 * result["bare_backbone_ms_per_min_onnxruntime"], 1
        )  # fmt: skip
        result["member_within_bound"] = result["e2e_ms_per_min_onnxruntime"] <= result["member_bound_ms_per_min"]

        predict = dict(PREDICT_DEFAULTS, batch_size=batch)
        ens_spec = {"format": SPEC_FORMAT, "classes": classes, "members": members, "combination": "mean",
                    "postprocess": post, "predict": predict, "file_seconds": 60}  # fmt: skip
        (tmp / "spec.json").write_text(json.dumps(ens_spec))
        kaggle_dir = tmp / "kaggle_mode"
        kaggle_dir.mkdir()
        for i in range(args.kaggle_files):
            os.link(paths[i % len(paths)], kaggle_dir / f"K{i:04d}.ogg")

        def kaggle_mode(export_dir: Path, backend: str) -> float:
            # Throughput as the Kaggle bundle runs: the infer runner, one worker per core, one thread each;
            # ms of wall time per soundscape minute with all cores busy; the median of fresh-process runs.
            runs = [rss_run(kaggle_dir, tmp / "spec.json", export_dir, os.cpu_count() or 1, backend)
                    for _ in range(max(1, args.kaggle_repeats))]  # fmt: skip
            return round(1000 * statistics.median(r["seconds_per_soundscape_minute"] for r in runs), 1)

        kaggle_fp32 = None
        if args.kaggle_files:
            for backend in available_backends():
                took = kaggle_mode(tmp / "export", backend)
                result[f"kaggle_mode_ms_per_min_{backend}"] = took
                kaggle_fp32 = took if kaggle_fp32 is None else min(kaggle_fp32, took)

        # Reduced-precision bodies (front end fp32), end to end as the infer stage runs them, and the body alone.
        calibration = args.calibration_audio if args.calibration_audio.exists() else paths[0].parent
        fp32_best = min(result[f"e2e_ms_per_min_{b}"] for b in available_backends())
        for precision in (p for p in args.precisions.split(",") if p):
            folder = tmp / f"export_{precision}"
            cfg = {"fused": False, "threads": args.threads, "bench_repeats": 1, "precision": precision,
                   "calibration_audio": str(calibration)}  # fmt: skip
            metrics = export_ensemble(members, folder, cfg)
            spec_p = read_spec(folder)
            best = kaggle_best = None
            for backend in (b for b in SERVES[precision] if b in available_backends()):
                ens = ExportedEnsemble(folder, backend, args.threads)
                pred = next(iter(ens.predictors().values()))
                took = median_ms(end_to_end(stack_predictors([pred]), paths, post, batch), args.repeats)
                result[f"e2e_ms_per_min_{precision}_{backend}"] = took
                body_p = load_graph(backend, folder / spec_p["members"][0]["body"], args.threads,
                                    "f16" if precision == "fp16" else "f32")  # fmt: skip
                result[f"body_ms_per_min_{precision}_{backend}"] = median_ms(
                    lambda i, g=body_p: g(mels[i]), args.repeats
                )
                if hasattr(body_p, "precision"):
                    result[f"runtime_precision_{precision}_{backend}"] = body_p.precision
                result[f"parity_{precision}_{backend}"] = metrics.get(f"parity_{precision}_{backend}_m0")
                best = took if best is None else min(best, took)
                if kaggle_fp32:
                    took = kaggle_mode(folder, backend)
                    result[f"kaggle_mode_ms_per_min_{precision}_{backend}"] = took
                    kaggle_best = took if kaggle_best is None else min(kaggle_best, took)
            if best:
                result[f"speedup_e2e_{precision}"] = round(fp32_best / best, 2)
            if kaggle_best:
                result[f"speedup_kaggle_mode_{precision}"] = round(kaggle_fp32 / kaggle_best, 2)

        # N members on one mel config: the same body graph N times behind one front end, run as the infer stage
        # runs members that share a chunking (one batch stack, one mel, N bodies). The bound the issue sets:
        # decode + mel + N x model, from the parts measured above.
        for n in (int(x) for x in args.members.split(",") if x):
            spec_n = {**spec, "members": [{**spec["members"][0], "name": f"m{i}"} for i in range(n)]}
            (tmp / "export" / "export_spec.json").write_text(json.dumps(spec_n))
            group = ExportedEnsemble(tmp / "export", "onnxruntime", args.threads).group_predictor()
            run = end_to_end(group, paths, post, batch)
            took, bound = ensemble_and_bound(run, paths, numpy_fe, ort_body, n, args.repeats)
            result[f"ensemble_ms_per_min_n{n}"] = took
            result[f"ensemble_bound_ms_per_min_n{n}"] = bound
        (tmp / "export" / "export_spec.json").write_text(json.dumps(spec))

        for n in (int(x) for x in args.rss_files.split(",") if x):
            folder = tmp / f"ss_{n}"
            folder.mkdir()
            for i in range(n):
                os.link(paths[i % len(paths)], folder / f"S{i:04d}.ogg")
            speed = rss_run(folder, tmp / "spec.json", tmp / "export", args.workers)
            result[f"rss_mb_{n}_files"] = speed["peak_rss_mb"]
            result[f"seconds_per_soundscape_minute_{n}_files"] = speed["seconds_per_soundscape_minute"]
            result[f"projected_kaggle_minutes_{n}_files"] = speed["projected_kaggle_minutes"]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
