"""DVC stage `mels@<name>`: waveform cache -> mel cache of one named mel config (a marker when caching is off)."""

from __future__ import annotations

import argparse

import torch

from birdclef.features.cache import WaveCache
from birdclef.features.mel_cache import build_mel_cache
from birdclef.features.waves import FeaturesConfig
from birdclef.io import atomic_path, load_params
from birdclef.track import stage_run


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--features", required=True, help="waveform cache folder (features stage output)")
    p.add_argument("--name", required=True, help="mel config name under `mels:` in params")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--out", required=True, help="mel cache folder: mel.npy, index.parquet, meta.json")
    args = p.parse_args(argv)

    everything = load_params(args.params)
    mels = everything.get("mels", {})
    if args.name not in mels:
        raise SystemExit(f"{args.params}: no mel config {args.name!r} under mels: (have {', '.join(sorted(mels))})")
    cfg = FeaturesConfig.from_params(everything.get("features", {}))
    torch.set_num_threads(max(1, cfg.workers))
    logged = {"mel": {args.name: mels[args.name]}, "features": everything.get("features", {})}
    with stage_run(f"mels@{args.name}", logged, everything.get("tracking")) as run:
        with atomic_path(args.out) as tmp:
            m = build_mel_cache(WaveCache(args.features), mels[args.name], tmp, args.name, cfg.mel_dtype,
                                cfg.cache_mel)  # fmt: skip
        run.log_metrics(m)
    state = f"{m['keys']} keys, {m['frames']} frames, {m['mb']} MB" if cfg.cache_mel else "off (marker only)"
    print(f"mels {args.name}: {state} -> {args.out}")


if __name__ == "__main__":
    main()
