"""dvc.yaml: every stage reports its scores and, apart, its timings, both as DVC metrics (issue 16 item 8)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = {name: spec.get("do", spec) for name, spec in DVC["stages"].items()}


def _metrics(spec: dict) -> dict[str, dict]:
    return {path: opts for entry in spec.get("metrics", []) for path, opts in entry.items()}


def test_every_stage_is_covered():
    assert {"acquire", "clean", "features", "pretrain", "distill", "teacher", "train", "pseudo", "ensemble",
            "export", "infer"} <= set(STAGES)  # fmt: skip


@pytest.mark.parametrize("name", sorted(STAGES))
def test_scores_and_timings_are_both_metrics_files_passed_on_the_command_line(name):
    spec = STAGES[name]
    cmd = " ".join(spec["cmd"].split())
    scores = re.search(r"--metrics (\S+)", cmd).group(1)
    timings = re.search(r"--timings (\S+)", cmd).group(1)
    assert timings.startswith("metrics/timing/") and not scores.startswith("metrics/timing/")
    declared = _metrics(spec)
    for path in (scores, timings):
        assert path in declared and declared[path] == {"cache": False}, f"{name}: {path} is no metrics file"


def test_no_two_stages_share_a_timing_file():
    timings = [re.search(r"--timings (\S+)", spec["cmd"]) for spec in STAGES.values()]
    paths = [found.group(1) for found in timings if found]
    assert len(paths) == len(set(paths))  # train_it${item.k} and pseudo_it${item.k}: one file per iteration
