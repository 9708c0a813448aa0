"""An ablation spec's variants on the real-audio benchmark (issue 18): the catalogue's effects checked on real calls.

The SynthCLEF catalogue (``birdclef ablate ablations/catalogue.yaml``) measures each published technique as one
params change against the committed params on the bench data. This script takes the same spec's variants (their
``set:`` and ``published:`` entries; not its ``preset:``, which is SynthCLEF's) to the real-audio task of
:mod:`real_task` and measures them the same way:

- ``baseline``: today's params (``real_task``'s ``default``), one run per seed, its build/ kept;
- a retraining variant: one fresh pipeline run per seed with the variant's overrides on top;
- a reuse variant (its params reach only the ensemble stage, ``AblationSpec.kinds``): the baseline run of the same
  seed re-ensembled in place (``dvc repro ensemble`` with the variant's params; nothing retrains).

Each run keeps its test predictions (``real_task_stats.save_predictions``); the table is
:func:`birdclef.track.ablate_table.pooled_effects` (seed ``s`` of a variant against seed ``s`` of the baseline on
the same 8 test soundscapes, a bootstrap over files and seeds) under the write-ups' sign, as in the SynthCLEF table.
Runs go ``--jobs`` at a time; a run whose ``result.json`` holds a score for the same commit and overrides is not
run again, so an interrupted benchmark resumes where it stopped.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/real_task_ablate.py --work /tmp/rt \\
        --variants sumix,ce,mixup,no_specaugment,soft_auc,topk_boost --seeds 0,1,2 --out real_task_ablate.json \\
        --markdown real_task_ablate.md --set train.threads=1 --set pseudo.threads=1 --set ensemble.threads=1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_task import REPO, _set_dotted, _tail, parse_sets, run_env, run_one  # noqa: E402
from real_task_build import AUDIO, build_task  # noqa: E402
from real_task_stats import per_class, save_predictions  # noqa: E402

from birdclef.track.ablate_seeds import class_map  # noqa: E402
from birdclef.track.ablate_spec import AblationSpec  # noqa: E402
from birdclef.track.ablate_table import OVERALL, Noise, VariantResult, markdown, noise, pooled_effects  # noqa: E402

BASELINE = "baseline"
RESULT = "result.json"


def _done(run_dir: Path, commit: str, overrides: dict[str, Any]) -> dict[str, Any] | None:
    """The finished result in ``run_dir`` when it was made by ``commit`` with ``overrides`` (else None)."""
    path = run_dir / RESULT
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    same = result.get("commit") == commit and result.get("overrides") == overrides
    return result if same and "score" in result else None


def _save(run_dir: Path, result: dict[str, Any]) -> dict[str, Any]:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / (RESULT + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(run_dir / RESULT)  # never a half-written result for --resume to trust
    return result


def base_overrides(seed: int, extra: dict[str, Any], sets: dict[str, Any]) -> dict[str, Any]:
    """What :func:`real_task.run_one` writes into a run's params (``default`` variant): the same dict ``_done``
    compares."""
    return {"tracking.enabled": False, "train.loop.seed": seed, **extra, **sets}


def retrain(variant: str, seed: int, sets: dict[str, Any], *, work: Path, commit: str, extra: dict[str, Any],
            keep: bool) -> dict[str, Any]:  # fmt: skip
    """One pipeline run of ``variant`` (the baseline: ``sets`` empty) for ``seed``; resumed when already done."""
    run_dir = work / f"{variant}_s{seed}"
    found = _done(run_dir, commit, base_overrides(seed, extra, sets))
    if found is not None:
        return found
    print(f"real_task_ablate: {variant} seed {seed} ...", file=sys.stderr, flush=True)
    result = run_one("default", seed, task=work / "task", work=work, commit=commit, keep=keep,
                     extra={**extra, **sets}, label=variant)  # fmt: skip
    result["commit"] = commit
    said = f"{result['score']:.4f}" if "score" in result else "FAILED"
    print(f"real_task_ablate: {variant} seed {seed}: {said} ({result['wall_s']:.0f} s)", file=sys.stderr, flush=True)
    return _save(run_dir, result)


def reuse(variant: str, seed: int, sets: dict[str, Any], *, work: Path, commit: str,
          extra: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """``variant``'s ensemble of the kept baseline run of ``seed`` (only the ensemble stage reruns), its predictions
    saved beside its result; the baseline's params.yaml and ensemble outputs are restored afterwards."""
    run_dir = work / f"{variant}_s{seed}"
    overrides = base_overrides(seed, extra, sets)
    found = _done(run_dir, commit, overrides)
    if found is not None:
        return found
    repo = work / f"{BASELINE}_s{seed}" / "repo"
    result: dict[str, Any] = {"variant": variant, "seed": seed, "kind": "reuse", "overrides": overrides,
                              "commit": commit}  # fmt: skip
    if not (repo / "build" / "ensemble").is_dir():
        result["error"] = f"the baseline run {repo} has no build/ensemble (run it with the build kept)"
        return _save(run_dir, result)
    started = time.perf_counter()
    original = (repo / "params.yaml").read_text()
    params = yaml.safe_load(original)
    for key, value in sets.items():
        _set_dotted(params, key, value)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "dvc.log"
    try:
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        with log.open("w") as f:
            rc = subprocess.run(["dvc", "repro", "ensemble"], cwd=repo, env=run_env(repo, work), stdout=f,
                                stderr=subprocess.STDOUT).returncode  # fmt: skip
        if rc:
            result["error"] = f"dvc repro ensemble exited {rc}: {_tail(log)}"
        else:
            ensemble = json.loads((repo / "metrics" / "ensemble.json").read_text())
            result.update(score=ensemble["score"], per_class=per_class(ensemble))
            result["predictions"] = str(save_predictions(repo, run_dir))
    finally:
        (repo / "params.yaml").write_text(original)
    with log.open("a") as f:  # the baseline's own ensemble back in its build/ (DVC's run cache restores it)
        back = subprocess.run(["dvc", "repro", "ensemble"], cwd=repo, env=run_env(repo, work), stdout=f,
                              stderr=subprocess.STDOUT).returncode  # fmt: skip
    result["baseline_restored"] = back == 0
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return _save(run_dir, result)


def _predictions(run: dict[str, Any]) -> pd.DataFrame | None:
    path = Path(run.get("predictions") or "") / "ensemble.parquet"
    return pd.read_parquet(path) if "score" in run and path.is_file() else None


def table(
    spec: AblationSpec,
    kinds: dict[str, str],
    variants: list[str],
    seeds: list[int],
    runs: dict[tuple[str, int], dict[str, Any]],
    taxonomy: Path,
) -> tuple[list[VariantResult], Noise, list[str]]:
    """The seeded table's rows (baseline first), the baseline's noise and the taxon columns, from the runs'
    predictions (seed ``s`` of a variant paired with seed ``s`` of the baseline)."""
    base = {s: runs.get((BASELINE, s), {}) for s in seeds}
    labels = next((Path(r["predictions"]) / "test_labels.csv" for r in base.values() if _predictions(r) is not None),
                  None)  # fmt: skip
    if labels is None:
        raise SystemExit("real_task_ablate: no baseline run has predictions: nothing to compare against")
    truth = pd.read_csv(labels)
    taxa_map = class_map(taxonomy)
    scored = [c for c in truth.columns if c != "row_id" and truth[c].sum() > 0]
    taxa = sorted({taxa_map.get(c, "unknown") for c in scored})
    base_tables = {s: _predictions(r) for s, r in base.items()}
    found = noise(truth, [t for t in base_tables.values() if t is not None])
    rows = [VariantResult(BASELINE, "baseline", {}, {}, "ok",
                          tuple(r["score"] for r in base.values() if "score" in r), None)]  # fmt: skip
    for variant in variants:
        pairs, scores, missing = [], [], []
        for s in seeds:
            mine, theirs = _predictions(runs.get((variant, s), {})), base_tables[s]
            if mine is None or theirs is None:
                missing.append(s)
                continue
            pairs.append((theirs, mine))
            scores.append(runs[variant, s]["score"])
        failed = [runs[variant, s]["error"] for s in seeds if "error" in runs.get((variant, s), {})]
        status = f"failed: {failed[0][:120]}" if failed else f"missing seeds {missing}" if missing else "ok"
        effects = pooled_effects(truth, pairs, taxa_map) if pairs else None
        rows.append(VariantResult(variant, kinds[variant], spec.variants[variant], spec.published.get(variant, {}),
                                  status, tuple(scores), effects))  # fmt: skip
    return rows, found, taxa


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--spec", type=Path, default=REPO / "ablations" / "catalogue.yaml", help="the ablation spec")
    ap.add_argument("--variants", default="", help="comma-separated variants of the spec (default: all but its "
                    "baseline)")  # fmt: skip
    ap.add_argument("--seeds", default=None, help="train.loop.seed values, comma-separated (default: the spec's)")
    ap.add_argument("--work", type=Path, required=True, help="working folder: one sub-folder per run (resumable)")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each on 2 cores)")
    ap.add_argument("--commit", default="HEAD", help="the committed code every run clones")
    ap.add_argument("--task-seed", type=int, default=0, help="seed of the real task")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=YAML",
                    help="a dotted params override for every run, the baseline's included (e.g. train.threads=1)")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON report here too")
    ap.add_argument("--markdown", type=Path, default=None, help="write the markdown table here")
    ap.add_argument("--table-only", action="store_true", help="only tabulate the runs --work already holds")
    args = ap.parse_args(argv)

    if not AUDIO.is_dir():
        print(json.dumps({"skipped": f"{AUDIO} is absent (the real-audio folder)"}))
        return 0
    spec = AblationSpec.load(args.spec, REPO)
    kinds = spec.kinds(REPO)
    variants = [v for v in args.variants.split(",") if v] or [v for v in spec.variants if v != spec.baseline]
    unknown = sorted(set(variants) - set(spec.variants))
    if unknown:
        ap.error(f"variant(s) {unknown} are not in {args.spec}: {', '.join(spec.variants)}")
    variants = [v for v in variants if v != spec.baseline]
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [int(s) for s in spec.seeds or [0]]
    try:
        extra = parse_sets(args.set)
    except ValueError as err:
        ap.error(str(err))
    commit = subprocess.run(["git", "rev-parse", args.commit], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.strip()  # fmt: skip
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "task" / "test_labels.csv").is_file():
        build_task(work / "task", args.task_seed)
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    retrains = [v for v in variants if kinds[v] == "retrain"]
    reuses = [v for v in variants if kinds[v] == "reuse"]
    common = {"work": work, "commit": commit, "extra": extra}

    def baseline_then_reuse(seed: int) -> None:
        runs[BASELINE, seed] = retrain(BASELINE, seed, {}, keep=True, **common)
        for v in reuses:
            runs[v, seed] = reuse(v, seed, spec.variants[v], **common)

    def variant_run(variant: str, seed: int) -> None:
        runs[variant, seed] = retrain(variant, seed, spec.variants[variant], keep=False, **common)

    if not args.table_only:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = []
            for seed in seeds:  # seeds outermost: an interrupted run still has every variant of the first seeds
                futures.append(pool.submit(baseline_then_reuse, seed))
                futures += [pool.submit(variant_run, v, seed) for v in retrains]
            for f in futures:
                f.result()
    else:
        for v in [BASELINE, *variants]:
            for s in seeds:
                path = work / f"{v}_s{s}" / RESULT
                if path.is_file():
                    runs[v, s] = json.loads(path.read_text())
    rows, found, taxa = table(spec, kinds, variants, seeds, runs, work / "task" / "taxonomy.csv")
    header = {"spec": str(args.spec.relative_to(REPO) if args.spec.is_relative_to(REPO) else args.spec),
              "benchmark": "benchmarks/real_task.py's task (5 species of real calls, 8 test soundscape minutes)",
              "commit": commit, "seeds": str(seeds), "overrides on every run": str(extra)}  # fmt: skip
    text = markdown(rows, taxa, found, seeds, header)
    report = {
        "commit": commit, "spec": header["spec"], "seeds": seeds, "set": extra,
        "noise": {"half_width": found.half_width, "seed_sd": found.seed_sd, "scores": list(found.scores)},
        "variants": {r.variant: {"kind": r.kind, "status": r.status, "scores": list(r.scores),
                                 "effects": {g: vars(e) for g, e in (r.effects or {}).items()}} for r in rows},
        "runs": [runs[k] for k in sorted(runs)],
    }  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=list) + "\n")
    if args.markdown:
        args.markdown.write_text(text)
    print(text)
    return 1 if any(r.status.startswith("failed") for r in rows) or not rows[0].scores or any(
        OVERALL not in (r.effects or {}) for r in rows[1:]) else 0  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
