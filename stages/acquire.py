"""DVC stage `acquire`: competition layout in data/ -> manifest (parquet), data-quality metrics, data docs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from birdclef.data.acquire import run_acquire
from birdclef.data.contracts import ContractError
from birdclef.data.layout import LayoutError, TableError
from birdclef.data.params import AcquireParams
from birdclef.data.problems import BadInputError
from birdclef.io import load_params, sweep_temps
from birdclef.track import stage_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="data root in the competition layout")
    parser.add_argument("--params", type=Path, required=True, help="params.yaml (reads its acquire section)")
    parser.add_argument("--out", type=Path, required=True, help="manifest folder to write")
    parser.add_argument("--metrics", type=Path, required=True, help="data-quality metrics JSON to write")
    parser.add_argument("--timings", type=Path, required=True, help="timing JSON to write (the stage's wall time)")
    parser.add_argument("--report", type=Path, required=True, help="data-docs folder to write")
    args = parser.parse_args(argv)
    sweep_temps(args.out, args.report, args.metrics, args.timings)  # what a killed run left beside its outputs
    try:
        everything = load_params(args.params)
        section = everything.get("acquire", {})
        with stage_run("acquire", {"acquire": section}, everything.get("tracking")) as run:
            params = AcquireParams.from_dict(section)
            quality = run_acquire(args.data, params, args.out, args.metrics, args.timings, args.report)
            run.log_metrics(quality)
    except (BadInputError, ContractError, LayoutError, TableError, KeyError, ValueError) as err:
        print(f"acquire failed: {err}", file=sys.stderr)
        return 1
    print(
        f"acquire: {quality['recordings']} recordings, {quality['soundscapes_train']} + "
        f"{quality['soundscapes_test']} soundscapes, {quality['species']} species, "
        f"{quality['quarantined_items']} quarantined, {quality['checks_failed']}/{quality['checks_run']} "
        f"contract checks failed -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
