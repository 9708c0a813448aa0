"""Training speed: samples per second of the default model, and of the data loader alone (it must not limit training).

Prints one JSON object (medians of ``--repeats`` timed runs of ``--steps`` steps, after one warm-up step):
- ``loader_samples_per_second``: FocalDataset crops (RMS-weighted policy) + collate + the default waveform
  augmentation, as fit() feeds them, from the waveform cache (``--features``, the features stage's folder) or, when
  it is absent, from an in-memory cache of generated 20-s clips;
- ``train_samples_per_second_cpu``: forward + backward + AdamW step of ``--model`` (params.yaml) on CPU with
  ``train.threads`` threads, batch ``train.loop.batch_size``, 5-s crops;
- ``loader_to_train_ratio`` (goal >= 3);
- with CUDA: ``train_samples_per_second_gpu_amp`` at batch 64 with bf16/fp16 autocast.

Run: ``python benchmarks/train_speed.py [--features build/features]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from birdclef import SAMPLE_RATE
from birdclef.features.cache import WaveCache
from birdclef.models import create_model
from birdclef.train.augment import WaveAugment
from birdclef.train.augment_ops import CacheNoiseBank
from birdclef.train.datasets import FocalDataset
from birdclef.train.fit import _collate_items
from birdclef.train.member import quiet_soundscape_spans

ROOT = Path(__file__).resolve().parents[1]
N_CLASSES = 206


class ClipCache:
    """In-memory waveform source of generated clips (``read``, ``length``, ``rms``), when no cache folder exists."""

    rms_hop = 3200

    def __init__(self, n: int = 64, seconds: float = 20.0) -> None:
        rng = np.random.default_rng(0)
        self.waves = {f"c{i}": (0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)
                      for i in range(n)}  # fmt: skip

    def keys(self, kind: str | None = None) -> list[str]:
        return list(self.waves)

    def length(self, key: str) -> int:
        return len(self.waves[key])

    def read(self, key: str, start: int = 0, length: int | None = None) -> np.ndarray:
        w = self.waves[key]
        return w[start : start + length if length is not None else None]

    def rms(self, key: str) -> np.ndarray:
        w = self.waves[key]
        n = len(w) // self.rms_hop
        return np.sqrt((w[: n * self.rms_hop].reshape(n, -1) ** 2).mean(1)).astype(np.float32)


def source(features: Path | None) -> tuple[object, pd.DataFrame, list[str]]:
    if features is not None and (features / "index.parquet").exists():
        cache = WaveCache(features)
        keys = cache.keys("segment")
    else:
        cache = ClipCache()
        keys = cache.keys()
    labels = [f"sp{i}" for i in range(N_CLASSES)]
    segs = pd.DataFrame({"segment_id": keys, "primary_label": [labels[i % N_CLASSES] for i in range(len(keys))],
                         "secondary_labels": [[] for _ in keys], "weight": 1.0})  # fmt: skip
    return cache, segs, labels


def median_rate(fn, n_samples: int, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return n_samples / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=Path, default=ROOT / "build" / "features")
    ap.add_argument("--model", default=None, help="models.<name> (default: iteration 0's first member)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    tcfg = params["train"]
    name = args.model or params["iterations"][0]["members"][0]
    mcfg = dict(params["models"][name])
    mel = params["mels"][mcfg.pop("mel")]
    batch = int(tcfg["loop"]["batch_size"])
    torch.set_num_threads(int(tcfg.get("threads", 2)))

    cache, segs, labels = source(args.features)
    ds = FocalDataset(segs, cache, labels, float(tcfg["crop_s"]), tcfg.get("crop_policy", "random"))
    noise = None
    if isinstance(cache, WaveCache) and cache.keys("train_soundscape"):
        noise = CacheNoiseBank(cache, quiet_soundscape_spans(cache, cache.keys("train_soundscape")))  # A9 as train
    augment = WaveAugment(tcfg.get("augment", {}), noise_bank=noise)
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)

    def load_batch() -> dict[str, torch.Tensor]:
        idx = rng.integers(0, len(ds), batch)
        return augment(_collate_items([ds[int(i)] for i in idx]), gen, rng)

    def load_steps() -> None:
        for _ in range(args.steps):
            load_batch()

    report: dict[str, object] = {"model": name, "batch_size": batch, "threads": torch.get_num_threads(),
                                 "crop_s": tcfg["crop_s"], "data": type(cache).__name__}  # fmt: skip
    report["loader_samples_per_second"] = round(median_rate(load_steps, args.steps * batch, args.repeats), 1)

    def train_rate(device: str, bs: int, amp: bool) -> float:
        torch.manual_seed(0)
        model = create_model({**mcfg, "pretrained": False}, N_CLASSES, mel).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        wave = torch.randn(bs, int(float(tcfg["crop_s"]) * SAMPLE_RATE), device=device) * 0.1
        target = (torch.rand(bs, N_CLASSES, device=device) < 0.01).float()
        dtype = torch.bfloat16 if device == "cuda" else torch.float32

        def steps() -> None:
            for _ in range(args.steps):
                with torch.autocast(device, dtype=dtype, enabled=amp):
                    out = model(wave)
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(out["clip"].float(), target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if device == "cuda":
                torch.cuda.synchronize()

        return median_rate(steps, args.steps * bs, args.repeats)

    report["train_samples_per_second_cpu"] = round(train_rate("cpu", batch, False), 2)
    report["loader_to_train_ratio"] = round(
        report["loader_samples_per_second"] / report["train_samples_per_second_cpu"], 1
    )
    if torch.cuda.is_available():
        report["gpu"] = torch.cuda.get_device_name(0)
        report["train_samples_per_second_gpu_amp"] = round(train_rate("cuda", 64, True), 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
