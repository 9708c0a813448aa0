"""The kill campaign of ``benchmarks/faults.py``: SIGKILLs of a tiny ``dvc repro`` spread over its stages, each
resumed by the next ``dvc repro``, against an uninterrupted reference run of the same commit and data."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import psutil
from faults_common import (
    Clone,
    make_clone,
    mlflow_runs,
    output_hashes,
    stage_order,
    stage_seconds,
    stray_temps,
    wait_gone,
)

# The order kills are planned in: the stages issue 16 names first (train, pseudo, export, infer), then the others;
# a plan of n kills takes the first n (cycling) and runs them in pipeline order.
PRIORITY = ("train@0", "pseudo@0", "export", "infer", "train@1", "ensemble", "features", "clean", "acquire",
            "pseudo@1", "train@2", "pretrain", "teacher", "distill")  # fmt: skip
# What makes a kill's outputs count as "the submission and model outputs" of the acceptance; every other output
# is compared too and reported.
MODEL_OUTPUT = re.compile(r"^(submission\.csv|build/(train|export|pseudo|ensemble)/.+)$")
_STAGE_CMD = re.compile(r"stages/(?P<script>\w+)\.py")


def running_stage(leader: int) -> tuple[str | None, float]:
    """The stage that the ``dvc repro`` of pid ``leader`` runs now, and how long it has run (seconds).

    Read from the stage script's command line (``stages/train.py --iteration 1`` is ``train@1``); None between
    stages.
    """
    try:
        children = psutil.Process(leader).children(recursive=True)
    except psutil.NoSuchProcess:
        return None, 0.0
    for child in children:
        try:  # DVC runs the command through a shell: its "-c" argument is the whole command line
            cmd = " ".join(child.cmdline()).split()
            started = child.create_time()
        except psutil.Error:
            continue
        script = next((m["script"] for a in cmd if (m := _STAGE_CMD.search(a))), None)
        if script is None:
            continue
        for flag in ("--iteration", "--round"):
            if flag in cmd and cmd.index(flag) + 1 < len(cmd):
                return f"{script}@{cmd[cmd.index(flag) + 1]}", time.time() - started
        return script, time.time() - started
    return None, 0.0


def plan(n: int, order: list[str]) -> list[str]:
    """``n`` kill targets among the stages of ``order``: :data:`PRIORITY` first (cycling), in pipeline order."""
    wanted = [s for s in PRIORITY if s in order] + [s for s in order if s not in PRIORITY]
    picks = [wanted[i % len(wanted)] for i in range(n)]
    return sorted(picks, key=order.index)


def kill_once(clone: Clone, target: str, fraction: float, ref_s: float, log: Path, timeout: float) -> dict[str, Any]:
    """Start ``dvc repro``, wait for ``target`` to run, SIGKILL the whole process group ``fraction`` of the
    reference stage time into it; what was running then and what the kill left behind."""
    proc = clone.popen(["dvc", "repro"], log)
    deadline = time.monotonic() + timeout
    seen = False
    while time.monotonic() < deadline and proc.poll() is None:
        stage, age = running_stage(proc.pid)
        if stage == target:
            seen = True
            if age >= fraction * ref_s:
                break
        elif seen:
            break  # the stage ended before its kill time: kill whatever runs next (DVC, or the next stage)
        time.sleep(0.05)
    if proc.poll() is not None:
        return {"target": target, "killed": False, "note": f"dvc repro exited {proc.returncode} first"}
    stage, age = running_stage(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    wait_gone(proc)
    time.sleep(0.5)  # the group's other members (stage, DataLoader workers) are reaped by init
    return {
        "target": target,
        "killed": True,
        "killed_in": stage or "dvc (between stages)",
        "seconds_into_stage": round(age, 1),
        "temps_after_kill": len(stray_temps(clone.root)),
        "running_runs_after_kill": mlflow_runs(clone.root).get("RUNNING", 0),
    }


def kill_campaign(
    work: Path, commit: str, data: Path, n_kills: int, seed: int, overrides: dict[str, Any], timeout: float = 900
) -> dict[str, Any]:
    """The reference run, then ``n_kills`` SIGKILLs of ``dvc repro`` each resumed, then the comparison.

    Args:
        work: scratch folder (a clone per run under it).
        commit: the committed code both runs clone.
        data: the tiny dataset folder (copied into each clone).
        n_kills: kills to land.
        seed: draws where in each stage the kill falls.
        overrides: dotted params for both runs (a small training budget).
        timeout: seconds any one ``dvc repro`` may take.

    Returns:
        The JSON-ready report: each kill, the final resume, differing outputs, stray temporaries, MLflow runs.
    """
    rng = random.Random(seed)
    started = time.perf_counter()
    # Both runs happen at one path (work/run; the reference is moved aside after it): the ONNX exports carry
    # the source paths of their stack traces, so two checkouts at different paths export different bytes.
    ref = make_clone(work, "run", commit, data, overrides)
    ref_log = work / "reference.log"
    t = time.perf_counter()
    rc = ref.run(["dvc", "repro"], ref_log, timeout)
    report: dict[str, Any] = {"overrides": overrides, "reference_rc": rc, "reference_s": round(time.perf_counter() - t)}
    order = stage_order(ref_log)
    ref_secs = stage_seconds(ref.root)
    ref_hash = output_hashes(ref.root)
    shutil.rmtree(work / "reference", ignore_errors=True)
    ref.root.rename(work / "reference")
    ref.root = work / "reference"
    if rc:
        report["error"] = f"the reference dvc repro exited {rc} (see {ref_log})"
        return report
    victim = make_clone(work, "run", commit, data, overrides)
    log = work / "killed.log"
    kills = []
    for target in plan(n_kills, order):
        frac = rng.uniform(0.15, 0.95)
        kills.append(kill_once(victim, target, frac, ref_secs.get(target, 5.0), log, timeout))
    rc = victim.run(["dvc", "repro"], log, timeout)  # the last resume, left to finish
    status_rc = victim.run(["dvc", "status"], log, 120)
    got = output_hashes(victim.root)
    differ = sorted(k for k in ref_hash.keys() | got.keys() if ref_hash.get(k) != got.get(k))
    report.update(
        stage_order=order,
        reference_stage_seconds=ref_secs,
        kills=kills,
        kills_landed=sum(k["killed"] for k in kills),
        stages_killed=sorted({k.get("killed_in", "") for k in kills if k["killed"]}),
        final_resume_rc=rc,
        dvc_status_rc=status_rc,
        outputs_compared=len(ref_hash),
        model_outputs_compared=sum(bool(MODEL_OUTPUT.match(k)) for k in ref_hash),
        model_outputs_differ=[k for k in differ if MODEL_OUTPUT.match(k)],
        other_outputs_differ=[k for k in differ if not MODEL_OUTPUT.match(k)],
        submission_identical="submission.csv" in got and ref_hash.get("submission.csv") == got["submission.csv"],
        stray_temps=stray_temps(victim.root),
        mlflow_runs=mlflow_runs(victim.root),
        reference_mlflow_runs=mlflow_runs(ref.root),
        wall_s=round(time.perf_counter() - started),
    )
    report["ok"] = bool(
        report["kills_landed"] >= n_kills
        and rc == 0
        and report["submission_identical"]
        and not report["model_outputs_differ"]
        and not report["stray_temps"]
        and not report["mlflow_runs"].get("RUNNING", 0)
    )
    return report
