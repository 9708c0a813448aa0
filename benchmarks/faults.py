"""Fault campaign (issue 16): SIGKILLs of ``dvc repro`` with resume, and bad audio through every stage that reads it.

Runs on fresh clones of the committed code (``--commit``, default HEAD) in a scratch folder, each with the SynthCLEF
``tiny`` preset as its data/, its own src/ first on PYTHONPATH and its own DVC cache and MLflow store; this
checkout's data/, dvc.lock and build/ are never touched.

1. Kills: an uninterrupted reference ``dvc repro``, then ``--kills`` SIGKILLs of the process group of ``dvc repro``
   (DVC, the stage and its workers) spread over the stages (train, pseudo, export, infer first, then the others),
   each at a random point of the stage and each resumed by the next ``dvc repro``; then every output is compared by
   sha256 with the reference (timing files aside), and the clone is searched for stray ``.*.tmp`` temporaries and
   MLflow runs left RUNNING.
2. Bad audio (``faults_cases.CASES``): each case as a train_audio file with its train.csv row and as a test
   soundscape; acquire with ``on_bad: fail`` (it must refuse, naming each bad file), then ``dvc repro``
   with ``acquire.on_bad: skip`` (it must complete), then ``birdclef predict`` on every test copy. Each (case,
   stage) gets a status: handled (a message or a quarantine/failed row names the file), ok (usable audio used),
   not reached (quarantined upstream), SILENT (bad audio used without a word) or CRASH.

Both runs use a small training budget (``--epochs``; the pipeline's code paths are the same). Prints the table and
then one JSON object. Run it under the shared lock on a shared machine:

    flock /tmp/heavy.lock .venv/bin/python benchmarks/faults.py --out /tmp/faults.json
    flock /tmp/heavy.lock .venv/bin/python benchmarks/faults.py --kills 2 --cases 3      # a quick look
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from faults_audio import analyse, audio_campaign
from faults_common import REPO, synth_tiny
from faults_kill import kill_campaign

THREADED = ("train", "pseudo", "ensemble", "export", "infer")  # the params sections with a ``threads`` key


def budget(epochs: int, threads: int | None = None) -> dict[str, Any]:
    """The small training budget of both campaigns: ``epochs`` epochs of 4 batches, a resume checkpoint every 2
    steps (so that a kill inside training resumes from one, the path a long run takes); ``threads``, when given, for
    every stage (1 beside other work: torch's spinning threads slow down many times on a shared core)."""
    out: dict[str, Any] = {"train.loop.epochs": epochs, "train.loop.min_samples_per_epoch": 64,
                           "train.loop.checkpoint_every": 2, "train.loop.progress": False}  # fmt: skip
    if threads is not None:
        out.update({f"{section}.threads": threads for section in THREADED})
    return out


def print_table(rows: list[dict[str, Any]]) -> None:
    """The bad-audio table as Markdown (case, stage, status, outcome) on stdout."""
    print("| case | stage | status | outcome |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['stage']} | {r['status']} | {r['outcome'].replace('|', '/')} |")


def main(argv: list[str] | None = None) -> int:
    """Run the campaigns; exit status 0 when every acceptance check holds."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=11, help="SIGKILLs to land (0: no kill campaign)")
    ap.add_argument("--cases", type=int, default=None, help="only the first N bad-audio cases (0: none)")
    ap.add_argument("--epochs", type=int, default=2, help="training epochs per iteration in both campaigns")
    ap.add_argument("--threads", type=int, default=None, help="threads of every stage (default: the params')")
    ap.add_argument("--seed", type=int, default=0, help="draws the kill points")
    ap.add_argument("--commit", default="HEAD", help="the committed code to clone")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temp folder)")
    ap.add_argument("--keep", action="store_true", help="leave the scratch folder (clones, logs) in place")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    ap.add_argument("--analyse", type=Path, default=None, help="only re-read the results kept (--keep) in this folder")
    args = ap.parse_args(argv)
    if args.analyse:
        return report(_reread(args.analyse), args.out)
    commit = subprocess.run(["git", "rev-parse", args.commit], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.strip()  # fmt: skip
    work = args.work or Path(tempfile.mkdtemp(prefix="birdclef-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result: dict[str, Any] = {"commit": commit, "work": str(work), "budget": budget(args.epochs, args.threads)}
    try:
        data = synth_tiny(work)
        if args.kills:
            result["kill"] = kill_campaign(work, commit, data, args.kills, args.seed, budget(args.epochs, args.threads))
            (work / "kill.json").write_text(json.dumps(result["kill"], indent=2))
            print(f"kills: {json.dumps({k: v for k, v in result['kill'].items() if k != 'kills'})}", file=sys.stderr)
        if args.cases != 0:
            model = work / "reference" / "build" / "export"
            result["audio"] = audio_campaign(work, commit, data, budget(args.epochs, args.threads), args.cases, model)
    finally:
        result["wall_s"] = round(time.perf_counter() - started)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return report(result, args.out)


def _reread(work: Path) -> dict[str, Any]:
    """What a kept campaign folder holds: the kill report as written, the bad-audio table re-derived."""
    result: dict[str, Any] = {"work": str(work)}
    if (work / "kill.json").is_file():
        result["kill"] = json.loads((work / "kill.json").read_text())
    if (work / "bad_audio.json").is_file():
        result["audio"] = analyse(work)
    return result


def report(result: dict[str, Any], out: Path | None) -> int:
    """Print the table and the JSON (also to ``out``); 0 when every acceptance check holds."""
    if "audio" in result:
        print_table(result["audio"]["rows"])
    result["ok"] = all(result[k]["ok"] for k in ("kill", "audio") if k in result)
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if out:
        out.write_text(text + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
