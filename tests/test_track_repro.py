"""Reproducibility: two fresh copies of a project, `dvc repro --force`, byte-identical metrics and submission."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from track_fixtures import REPO, sh, tiny_project

# Wall-clock figures (seconds, throughput, memory, projected Kaggle time) legitimately differ between runs.
TIMING = re.compile(r"(seconds|per_second|rss|startup|minutes)")


def _outputs(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in (root / "metrics").rglob("*") if p.is_file())
    # the pipeline's submission.csv files, not the input data's nor the copy MLflow keeps as a run artifact
    files += sorted(
        p for p in root.rglob("submission.csv") if p.relative_to(root).parts[0] not in ("data", "mlruns", "mlartifacts")
    )
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files}


def _without_timing(doc: object) -> object:
    if isinstance(doc, dict):
        return {k: _without_timing(v) for k, v in doc.items() if not TIMING.search(str(k))}
    return doc


def _compare(a: Path, b: Path) -> list[str]:
    """Files that differ between two runs; JSON with wall-clock keys is compared without those keys."""
    left, right = _outputs(a), _outputs(b)
    assert left, f"{a}: the pipeline wrote no metrics"
    assert set(left) == set(right), f"different output files: {sorted(set(left) ^ set(right))}"
    differ = []
    for name, blob in left.items():
        if blob == right[name]:
            continue
        if name.endswith(".json"):
            l_doc, r_doc = json.loads(blob), json.loads(right[name])
            if _without_timing(l_doc) == _without_timing(r_doc) and l_doc != r_doc:
                continue  # only wall-clock keys differ
        differ.append(name)
    return differ


@pytest.mark.integration
def test_two_fresh_copies_of_a_tiny_project_reproduce_byte_identical_metrics(tmp_path):
    origin = tiny_project(tmp_path / "origin")
    copies = []
    for name in ("a", "b"):
        clone = tmp_path / name
        sh(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
        (clone / "data").mkdir()
        (clone / "data" / "raw.txt").write_text((origin / "data" / "raw.txt").read_text())
        sh(["dvc", "repro", "--force", "-q"], clone)
        copies.append(clone)
    assert _compare(*copies) == []
    assert (copies[0] / "metrics" / "history.csv").read_bytes() == (copies[1] / "metrics" / "history.csv").read_bytes()
    # The check can fail: a changed number shows up, a changed wall-clock figure does not.
    train = copies[1] / "metrics" / "train.json"
    doc = json.loads(train.read_text())
    train.write_text(json.dumps({**doc, "train_seconds": 12.5}, indent=1, sort_keys=True))
    assert _compare(*copies) == []
    train.write_text(json.dumps({**doc, "val_auc": doc["val_auc"] + 1e-6}, indent=1, sort_keys=True))
    assert _compare(*copies) == ["metrics/train.json"]


TINY_OVERRIDES = {
    "tracking.enabled": False,
    "train.loop.epochs": 1,
    "train.loop.progress": False,
    "train.threads": 1,
    "train.device": "cpu",
}


def _set(doc: dict, dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    node = doc
    for key in parents:
        if not isinstance(node.get(key), dict):
            return  # the key is not in this version of params.yaml
        node = node[key]
    if leaf in node:
        node[leaf] = value


@pytest.mark.slow
@pytest.mark.integration
def test_real_pipeline_on_the_tiny_preset_is_byte_reproducible_and_tracked(tmp_path):
    """Two clones of the committed project, SynthCLEF tiny data, shrunk training, a forced full run in each.

    Clone A runs through `birdclef repro` with MLflow on (one parent run, a child per executed stage); clone B runs
    plain `dvc repro` with tracking off. Tracking must not change a single output byte.
    """
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    copies = []
    for name, tracked in (("a", True), ("b", False)):
        clone = tmp_path / name
        sh(["git", "clone", "-q", str(REPO), str(clone)], tmp_path)
        sh(["python", "-m", "birdclef.cli", "data", "synth", "--preset", "tiny", "--seed", "0", "--out", "data"], clone)
        params = yaml.safe_load((clone / "params.yaml").read_text())
        for key, value in {**TINY_OVERRIDES, "tracking.enabled": tracked}.items():
            _set(params, key, value)
        (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        sh(["dvc", "add", "-q", "data"], clone)
        if tracked:
            sh(["python", "-m", "birdclef.cli", "repro", "--force"], clone, {"MLFLOW_TRACKING_URI": store},
               timeout=3000)  # fmt: skip
        else:
            sh(["dvc", "repro", "--force"], clone, timeout=3000)
        copies.append(clone)
    assert _compare(*copies) == []

    stages = set(yaml.safe_load((copies[0] / "dvc.lock").read_text())["stages"])
    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    [parent] = [r for r in runs if r.data.tags.get("dvc_stage") == "pipeline"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(runs) - 1
    commit = sh(["git", "rev-parse", "HEAD"], copies[0]).stdout.strip()
    assert {r.data.tags["git_commit"] for r in runs} == {commit}
    assert {r.data.tags["dvc_stage"] for r in children} == stages  # every stage records (train: one run a member)
