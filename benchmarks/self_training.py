"""Self-training with several seeds: soundscape AUC per Noisy Student iteration, mean and std over seeds (JSON).

For each seed, runs ``dvc exp run -S train.loop.seed=<seed> -n selftrain-seed<seed>`` in a DVC project (default:
this repository, whose data/ must exist: ``make data``), i.e. the whole default chain train@0 -> pseudo@0 ->
train@1 -> pseudo@1 -> train@2 with the current params, and reads the experiment's metrics:
``metrics/train/it<k>.json`` (test-soundscape AUC of each member) and ``metrics/pseudo/it<k>.json`` (the pseudo
labels' AUC against the planted truth). Acquire, clean and features do not depend on the seed: DVC's run cache
restores them after the first seed.

Prints one JSON object: per iteration ``soundscape_auc_it<k>_mean`` / ``_std`` (population std over seeds,
members averaged first), per round ``pseudo_auc_it<k>_mean`` / ``_std``, every seed's values, and the issue's
checks: ``it1_gain_exceeds_std`` (mean it1 - mean it0 > max(std it0, std it1)) and ``it2_within_std_of_it1``
(mean it2 >= mean it1 - std it2).

Run: ``python benchmarks/self_training.py --seeds 0,1,2 --target train@2`` (about 15 minutes per seed on 2 cores
with the demo preset; ``--target`` stops after the last student). ``--no-run`` only reads earlier experiments.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from birdclef.track.ablate import experiments

ROOT = Path(__file__).resolve().parents[1]


def run_seed(project: Path, seed: int, extra: list[str], targets: list[str]) -> None:
    sets = ["-S", f"train.loop.seed={seed}"]
    for item in extra:
        sets += ["-S", item]
    cmd = ["dvc", "exp", "run", *sets, "-n", f"selftrain-seed{seed}", "--force", *targets]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=project, check=True)


def exp_metrics(project: Path, name: str) -> dict[str, dict]:
    """``{metrics file: its JSON}`` of experiment ``name`` from ``dvc exp show --json``."""
    out = subprocess.run(["dvc", "exp", "show", "--json", "--all-commits"], cwd=project, check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    found = experiments(json.loads(out)).get(name)
    if found is None or found["state"] != "success":
        raise LookupError(f"{project}: no successful experiment named {name} ({found and found['error']})")
    return found["metrics"]


def summarise(per_seed: dict[int, dict[str, dict]]) -> dict[str, object]:
    report: dict[str, object] = {"seeds": sorted(per_seed)}
    means: dict[int, float] = {}
    stds: dict[int, float] = {}
    for k in range(10):
        key = f"metrics/train/it{k}.json"
        if not all(key in m for m in per_seed.values()):
            break
        values = [float(np.mean([member["soundscape_auc"] for member in m[key].values()])) for m in per_seed.values()]
        means[k], stds[k] = float(np.mean(values)), float(np.std(values))
        report[f"soundscape_auc_it{k}"] = [round(v, 4) for v in values]
        report[f"soundscape_auc_it{k}_mean"] = round(means[k], 4)
        report[f"soundscape_auc_it{k}_std"] = round(stds[k], 4)
        pkey = f"metrics/pseudo/it{k}.json"
        if all(pkey in m and "auc_raw" in m[pkey] for m in per_seed.values()):
            pv = [float(m[pkey]["auc_raw"]) for m in per_seed.values()]
            report[f"pseudo_auc_it{k}"] = [round(v, 4) for v in pv]
            report[f"pseudo_auc_it{k}_mean"] = round(float(np.mean(pv)), 4)
            report[f"pseudo_auc_it{k}_std"] = round(float(np.std(pv)), 4)
    if 0 in means and 1 in means:
        report["it1_minus_it0"] = round(means[1] - means[0], 4)
        report["it1_gain_exceeds_std"] = bool(means[1] - means[0] > max(stds[0], stds[1]))
    if 1 in means and 2 in means:
        report["it2_within_std_of_it1"] = bool(means[2] >= means[1] - stds[2])
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=ROOT, help="DVC project with data/ (default: this repository)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra -S override (repeatable)")
    ap.add_argument("--target", action="append", default=[], help="stage(s) to reproduce (default: all), e.g. train@2")
    ap.add_argument("--no-run", action="store_true", help="only read experiments selftrain-seed<N> that exist")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed = {}
    for seed in seeds:
        if not args.no_run:
            run_seed(args.project, seed, args.set, args.target)
        per_seed[seed] = exp_metrics(args.project, f"selftrain-seed{seed}")
    print(json.dumps(summarise(per_seed), indent=2))


if __name__ == "__main__":
    main()
