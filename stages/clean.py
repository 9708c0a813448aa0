"""DVC stage `clean`: recordings manifest + audio -> voice-free, trimmed, deduplicated segment table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from birdclef.audio import AudioError
from birdclef.audio.clean import CleanConfig, run_clean
from birdclef.audio.rules import load_exclusions
from birdclef.io import atomic_path, load_params, sweep_temps, write_csv, write_metrics, write_parquet
from birdclef.track import stage_run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", required=True, help="data root (competition layout); manifest paths are relative to it")
    p.add_argument("--manifest", required=True, help="acquire output folder holding recordings.parquet")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--out", required=True, help="writes segments.parquet, voice_spans.parquet, quarantine.csv")
    p.add_argument("--metrics", required=True, help="flat JSON metrics file")
    p.add_argument("--timings", required=True, help="timing JSON to write (durations and rates, wall time)")
    args = p.parse_args(argv)
    sweep_temps(args.out, args.metrics, args.timings)  # what a killed run left beside its outputs

    truth_csv = Path(args.data) / "synth_truth" / "voice.csv"
    out = Path(args.out)
    try:
        everything = load_params(args.params)
        section = everything.get("clean", {})
        with stage_run("clean", {"clean": section}, everything.get("tracking")) as run:
            cfg = CleanConfig.from_params(section)
            recordings = pd.read_parquet(Path(args.manifest) / "recordings.parquet")
            exclusions = load_exclusions(cfg.exclude_csv) if cfg.exclude_csv else None
            truth = pd.read_csv(truth_csv) if truth_csv.exists() else None
            result = run_clean(recordings, args.data, cfg, exclusions=exclusions, voice_truth=truth)
            with atomic_path(out) as tmp:  # the folder appears whole or not at all
                write_parquet(result.segments, tmp / "segments.parquet")
                write_parquet(result.voice_spans, tmp / "voice_spans.parquet")
                write_csv(result.quarantine, tmp / "quarantine.csv")
            write_metrics(result.metrics, args.metrics, args.timings)
            run.log_metrics(result.metrics)
            run.log_artifact(out / "quarantine.csv")
    except (AudioError, KeyError, ValueError, FileNotFoundError) as err:
        print(f"clean failed: {err}", file=sys.stderr)
        return 1

    m = result.metrics
    print(f"clean: kept {m['segments_kept']} segments of {m['files_kept']}/{m['files_in']} files, "
          f"{m['hours_kept']:.2f} h; quarantined {len(result.quarantine)} rows -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
