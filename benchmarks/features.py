"""Benchmark of the features stage: cache build vs plain decoding, mel front end vs librosa, crop reads, peak RSS.

Prints one JSON object (medians of --runs runs). Run after `dvc repro features` (it reads the data and the
clean/acquire tables at the default paths), or point the options elsewhere. Goals: cache/decode ratio <= 2,
mel speed-up over librosa >= 1, >= 2,000 random 5-s crop reads per second, peak RSS < 2 GB at any size.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import soundfile as sf
import yaml

from birdclef import SAMPLE_RATE
from birdclef.features.cache import WaveCache
from birdclef.features.waves import FeaturesConfig, build_wave_cache

REPO = Path(__file__).resolve().parents[1]


def _median_time(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _decode_only(data: Path, seg: pd.DataFrame, sc: pd.DataFrame) -> None:
    for path, start, end in zip(seg.path, seg.start_s, seg.end_s, strict=True):
        with sf.SoundFile(data / path) as f:
            a, b = round(start * f.samplerate), round(end * f.samplerate)
            f.seek(a)
            f.read(b - a, dtype="float32")
    for path in sc.path:
        sf.read(data / path, dtype="float32")


def _mel_bench(runs: int, clips: int = 32) -> dict[str, float]:
    import librosa
    import torch

    from birdclef.features.frontend import MelFrontEnd

    torch.set_num_threads(2)
    cfg = yaml.safe_load((REPO / "params.yaml").read_text())["mels"]["mel128"]
    front = MelFrontEnd(cfg).eval()
    x = np.random.default_rng(0).standard_normal((clips, 5 * SAMPLE_RATE)).astype(np.float32) * 0.1

    def ours() -> None:
        with torch.inference_mode():
            front(torch.from_numpy(x))

    def theirs() -> None:
        for clip in x:
            s = librosa.feature.melspectrogram(
                y=clip,
                sr=SAMPLE_RATE,
                n_fft=cfg["n_fft"],
                hop_length=cfg["hop_length"],
                n_mels=cfg["n_mels"],
                fmin=cfg["fmin"],
                fmax=cfg["fmax"],
            )
            librosa.power_to_db(s, ref=np.max, top_db=cfg["top_db"])

    ours(), theirs()  # warm-up (numba compilation, torch kernels)
    t_ours, t_theirs = _median_time(ours, runs), _median_time(theirs, runs)
    return {
        "mel_clips_per_s": round(clips / t_ours, 1),
        "librosa_clips_per_s": round(clips / t_theirs, 1),
        "mel_speedup_vs_librosa": round(t_theirs / t_ours, 2),
        "librosa_version": librosa.__version__,
    }


def _crop_reader(args: tuple[WaveCache, float, int]) -> int:
    cache, seconds, seed = args
    rng = np.random.default_rng(seed)
    keys = cache.keys()
    lengths = np.array([cache.length(k) for k in keys])
    n, crop, t0 = 0, 5 * SAMPLE_RATE, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        i = int(rng.integers(len(keys)))
        cache.read(keys[i], int(rng.integers(0, max(1, lengths[i] - crop))), crop)
        n += 1
    return n


def _crops_per_s(cache_dir: Path, runs: int, seconds: float = 2.0) -> dict[str, float]:
    cache = WaveCache(cache_dir)
    one = [_crop_reader((cache, seconds, r)) / seconds for r in range(runs)]
    two = []
    for r in range(runs):
        with mp.get_context("fork").Pool(2) as pool:
            two.append(
                sum(pool.map(_crop_reader, [(cache, seconds, 100 + 2 * r), (cache, seconds, 101 + 2 * r)])) / seconds
            )
    return {
        "crop_reads_per_s_1proc": round(statistics.median(one)),
        "crop_reads_per_s_2proc": round(statistics.median(two)),
    }


def _peak_rss_stage(data: Path, segments: Path, soundscapes: Path, out: Path) -> dict[str, float]:
    """Run stages/features.py and poll the summed RSS of its process tree (parent + decoding workers)."""
    params = out.parent / "bench_params.yaml"
    params.write_text(yaml.safe_dump({"features": yaml.safe_load((REPO / "params.yaml").read_text())["features"]}))
    cmd = [
        sys.executable,
        str(REPO / "stages/features.py"),
        "--data",
        str(data),
        "--segments",
        str(segments),
        "--soundscapes",
        str(soundscapes),
        "--params",
        str(params),
        "--out",
        str(out),
        "--metrics",
        str(out.parent / "bench_metrics.json"),
        "--timings",
        str(out.parent / "bench_timings.json"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak, stop = [0, 0], threading.Event()

    def poll() -> None:
        p = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                tree = [p, *p.children(recursive=True)]
                rss = [q.memory_info().rss for q in tree]
                peak[0], peak[1] = max(peak[0], sum(rss)), max(peak[1], max(rss))
            except psutil.Error:
                pass
            time.sleep(0.05)

    t = threading.Thread(target=poll, daemon=True)
    t0 = time.perf_counter()
    t.start()
    rc = proc.wait()
    stop.set()
    t.join()
    hours = pd.read_parquet(out / "index.parquet").length.sum() / SAMPLE_RATE / 3600 if rc == 0 else 0.0
    return {
        "rc": rc,
        "wall_s": round(time.perf_counter() - t0, 1),
        "cache_hours": round(hours, 2),
        "peak_rss_tree_mb": round(peak[0] / 2**20),
        "peak_rss_max_proc_mb": round(peak[1] / 2**20),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, default=Path("data"))
    p.add_argument("--segments", type=Path, default=Path("build/clean/segments.parquet"))
    p.add_argument("--soundscapes", type=Path, default=Path("build/acquire/soundscapes.parquet"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--scale", type=int, default=5, help="full-size RSS run: the demo's items repeated N times")
    p.add_argument("--skip-mel", action="store_true")
    args = p.parse_args()
    if not args.segments.exists() or not args.soundscapes.exists():
        print(json.dumps({"skipped": f"run the pipeline first: {args.segments} / {args.soundscapes} missing"}))
        return
    seg, sc = pd.read_parquet(args.segments), pd.read_parquet(args.soundscapes)
    out: dict[str, object] = {
        "segments": len(seg),
        "soundscapes": len(sc),
        "runs": args.runs,
        "cpu_count": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(dir=REPO / "build" if (REPO / "build").is_dir() else None) as tmp:
        tmp_dir = Path(tmp)
        t_decode = _median_time(lambda: _decode_only(args.data, seg, sc), args.runs)
        cfg1 = FeaturesConfig(workers=1)
        t_cache1 = _median_time(lambda: build_wave_cache(seg, sc, args.data, tmp_dir / "c1", cfg1), args.runs)
        cfg2 = FeaturesConfig(workers=2)
        t_cache2 = _median_time(lambda: build_wave_cache(seg, sc, args.data, tmp_dir / "c2", cfg2), args.runs)
        out.update(
            decode_only_s=round(t_decode, 2),
            cache_1worker_s=round(t_cache1, 2),
            cache_2workers_s=round(t_cache2, 2),
            cache_vs_decode_ratio=round(t_cache1 / t_decode, 2),
        )
        out.update(_crops_per_s(tmp_dir / "c1", args.runs))
        if not args.skip_mel:
            out.update(_mel_bench(args.runs))
        demo = _peak_rss_stage(args.data, args.segments, args.soundscapes, tmp_dir / "rss_demo")
        out.update({f"demo_{k}": v for k, v in demo.items()})
        big_seg = pd.concat([seg.assign(segment_id=seg.segment_id + f"#{i}") for i in range(args.scale)])
        big_sc = pd.concat([sc.assign(soundscape_id=sc.soundscape_id + f"#{i}") for i in range(args.scale)])
        big_seg.to_parquet(tmp_dir / "seg.parquet"), big_sc.to_parquet(tmp_dir / "sc.parquet")
        full = _peak_rss_stage(args.data, tmp_dir / "seg.parquet", tmp_dir / "sc.parquet", tmp_dir / "rss_full")
        out.update({f"full_x{args.scale}_{k}": v for k, v in full.items()})
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
