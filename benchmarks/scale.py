"""Scale-out benchmark: pseudo-labelling throughput with 1 and 2 torchrun processes, and archive-size projections.

Each run labels ``--files`` generated one-minute soundscapes with one random-init member (``--model``, a
``models.<name>`` entry of params.yaml, 206 classes) through the same code the `pseudo` stage runs:
``birdclef.dist.sharded_map`` over ranks, ``teacher_predictions`` with 5-s chunks at a 2.5-s stride. With
``--cores`` cores, ``k`` processes get ``cores // k`` intra-op threads each. Wall time is rank 0's, from the
start of labelling to the merge (start-up and model building excluded). Median of ``--repeats`` runs.

Prints one JSON object:
- ``soundscapes_per_second_<k>proc``, ``speedup_2proc`` (= rate 2 / rate 1; 2.0 is linear on 2 cores);
- projections, at the best measured rate R (soundscape minutes per second):
  ``hours_for_9726_soundscapes = 9726 / R / 3600`` (the competition's train soundscapes, one minute each) and
  ``hours_for_100000_hours_on_{K}_gpus = 100000 * 60 / (R_gpu * K) / 3600`` when CUDA is present
  (``R_gpu`` measured here on one GPU, batch of chunks 64, assuming linear scaling over K GPUs — the ranks share
  nothing but the final merge), else the same formula on K CPU machines of this kind.

Run: ``python benchmarks/scale.py`` (add ``--files 48 --repeats 3`` for steadier figures).
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
import torch
import yaml

from birdclef import SAMPLE_RATE, dist
from birdclef.models import create_model
from birdclef.train.evaluate import model_predictor
from birdclef.train.pseudo import teacher_predictions

ROOT = Path(__file__).resolve().parents[1]
N_CLASSES = 206


class NoiseSoundscapes:
    """Deterministic one-minute noise soundscapes generated on demand (``read(key)``), as the waveform cache."""

    def read(self, key: str, start: int = 0, length: int | None = None) -> np.ndarray:
        rng = np.random.default_rng(int(key.split("_")[1]))
        return (0.05 * rng.standard_normal(60 * SAMPLE_RATE)).astype(np.float32)


def build_predictor(model_name: str, device: str):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    cfg = params["models"][model_name]
    torch.manual_seed(0)
    model = create_model({**cfg, "pretrained": False}, N_CLASSES, params["mels"][cfg["mel"]]).eval().to(device)
    return model_predictor(model, device)


def worker(args: argparse.Namespace) -> None:
    """One rank: label its blocks, rank 0 writes the wall time."""
    rank, world = dist.rank_world()
    torch.set_num_threads(max(1, args.cores // world))
    predictor = build_predictor(args.model, args.device)
    ids = [f"sc_{i:05d}" for i in range(args.files)]
    waves = NoiseSoundscapes()

    def label(block: list[str]) -> list[dict[str, np.ndarray]]:
        w, _ = teacher_predictions([predictor], waves, block, 5.0, 2.5, batch_size=args.batch, progress=False)
        return [{"windows": w[i]} for i in range(len(block))]

    if world > 1:
        dist.init()
        torch.distributed.barrier()  # start the clock when every rank has built its model
    t0 = time.perf_counter()
    out = dist.sharded_map(ids, label, args.blocks, f"run{args.tag}", block=args.block, progress=False)
    seconds = time.perf_counter() - t0
    if out is not None:
        Path(args.result).write_text(json.dumps({"seconds": seconds, "files": len(out)}))
        dist.clear(args.blocks, f"run{args.tag}")
    dist.finish()


def timed(nproc: int, args: argparse.Namespace, run: int, tmp: Path) -> float:
    result = tmp / f"r{nproc}_{run}.json"
    base = [__file__, "--worker", "--files", str(args.files), "--model", args.model, "--cores", str(args.cores),
            "--block", str(args.block), "--batch", str(args.batch), "--device", args.device,
            "--blocks", str(tmp / "blocks"), "--result", str(result), "--tag", f"{nproc}_{run}"]  # fmt: skip
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    f"--nproc-per-node={nproc}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, args.cores // nproc))}
    subprocess.run([*launcher, *base], check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads(result.read_text())["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=24, help="one-minute soundscapes per run")
    ap.add_argument("--model", default="sed_mnv3s", help="models.<name> of params.yaml")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--procs", default="1,2", help="process counts to measure")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--block", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16, help="chunks per forward pass")
    ap.add_argument("--gpus", type=int, default=8, help="K of the 100,000-hour projection")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--blocks", default="", help=argparse.SUPPRESS)
    ap.add_argument("--result", default="", help=argparse.SUPPRESS)
    ap.add_argument("--tag", default="0", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return

    report: dict[str, float | int | str] = {"model": args.model, "files": args.files, "cores": args.cores,
                                            "repeats": args.repeats}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        rates = {}
        for k in [int(p) for p in args.procs.split(",")]:
            times = [timed(k, args, r, Path(tmp)) for r in range(args.repeats)]
            rates[k] = args.files / statistics.median(times)
            report[f"soundscapes_per_second_{k}proc"] = round(rates[k], 3)
        if 1 in rates and 2 in rates:
            report["speedup_2proc"] = round(rates[2] / rates[1], 3)
        best = max(rates.values())
        report["hours_for_9726_soundscapes"] = round(9726 / best / 3600, 3)
        report[f"hours_for_100000_hours_on_{args.gpus}_cpu_machines"] = round(
            100000 * 60 / (best * args.gpus) / 3600, 1
        )
        if torch.cuda.is_available():
            gpu = argparse.Namespace(**{**vars(args), "device": "cuda", "batch": 64, "cores": 4})
            t = statistics.median([timed(1, gpu, r, Path(tmp)) for r in range(args.repeats)])
            r_gpu = args.files / t
            report["gpu"] = torch.cuda.get_device_name(0)
            report["soundscapes_per_second_1gpu"] = round(r_gpu, 2)
            report["hours_for_9726_soundscapes_1gpu"] = round(9726 / r_gpu / 3600, 3)
            report[f"hours_for_100000_hours_on_{args.gpus}_gpus"] = round(100000 * 60 / (r_gpu * args.gpus) / 3600, 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
