"""DVC stage `features`: segments + soundscapes -> one memory-mapped 32 kHz int16 waveform cache + RMS index."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from birdclef.audio import AudioError
from birdclef.features.waves import FeaturesConfig, build_wave_cache
from birdclef.io import atomic_path, load_params, sweep_temps, write_metrics
from birdclef.track import stage_run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", required=True, help="data root the table paths are relative to")
    p.add_argument("--segments", required=True, help="clean stage's segments.parquet")
    p.add_argument("--soundscapes", help="acquire stage's soundscapes.parquet (optional)")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--out", required=True, help="cache folder: waves.npy, rms.npy, index.parquet, meta.json")
    p.add_argument("--metrics", required=True, help="flat JSON metrics file")
    p.add_argument("--timings", required=True, help="timing JSON to write (durations and rates, wall time)")
    args = p.parse_args(argv)
    sweep_temps(args.out, args.metrics, args.timings)  # what a killed run left beside its outputs

    try:
        everything = load_params(args.params)
        section = everything.get("features", {})
        with stage_run("features", {"features": section}, everything.get("tracking")) as run:
            cfg = FeaturesConfig.from_params(section)
            segments = pd.read_parquet(args.segments)
            soundscapes = pd.read_parquet(args.soundscapes) if args.soundscapes else None
            with atomic_path(args.out) as tmp:
                metrics = build_wave_cache(segments, soundscapes, args.data, tmp, cfg)
            write_metrics(metrics, args.metrics, args.timings)
            run.log_metrics(metrics)
    except (AudioError, KeyError, ValueError, FileNotFoundError) as err:
        print(f"features failed: {err}", file=sys.stderr)
        return 1
    print(f"features: {sum(v for k, v in metrics.items() if k.startswith('keys_'))} keys, "
          f"{metrics['cache_mb']} MB, {metrics['failed']} failed -> {Path(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
