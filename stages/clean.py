"""DVC stage `clean`: recordings manifest + audio -> voice-free, trimmed, deduplicated segment table."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from birdclef.audio.clean import CleanConfig, run_clean
from birdclef.audio.rules import load_exclusions
from birdclef.io import load_params, write_csv, write_json, write_parquet


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", required=True, help="data root (competition layout); manifest paths are relative to it")
    p.add_argument("--manifest", required=True, help="acquire output folder holding recordings.parquet")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--out", required=True, help="writes segments.parquet, voice_spans.parquet, quarantine.csv")
    p.add_argument("--metrics", required=True, help="flat JSON metrics file")
    args = p.parse_args(argv)

    cfg = CleanConfig.from_params(load_params(args.params, "clean"))
    recordings = pd.read_parquet(Path(args.manifest) / "recordings.parquet")
    exclusions = load_exclusions(cfg.exclude_csv) if cfg.exclude_csv else None
    truth_csv = Path(args.data) / "synth_truth" / "voice.csv"
    truth = pd.read_csv(truth_csv) if truth_csv.exists() else None

    result = run_clean(recordings, args.data, cfg, exclusions=exclusions, voice_truth=truth)

    out = Path(args.out)
    write_parquet(result.segments, out / "segments.parquet")
    write_parquet(result.voice_spans, out / "voice_spans.parquet")
    write_csv(result.quarantine, out / "quarantine.csv")
    write_json(args.metrics, result.metrics)
    m = result.metrics
    print(f"clean: kept {m['segments_kept']} segments of {m['files_kept']}/{m['files_in']} files, "
          f"{m['hours_kept']:.2f} h; quarantined {len(result.quarantine)} rows -> {out}")


if __name__ == "__main__":
    main()
