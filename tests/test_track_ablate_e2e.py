"""A seeded `birdclef ablate` end to end on a tiny DVC project: queue, retrain, reuse, the paired table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from track_fixtures import git_dvc_init, sh

STEP = '''\
"""train: seeded noisy scores of the labels (better with train.quality); ensemble: blends in a fixed noise."""
import pathlib
import sys

import numpy as np
import pandas as pd
import yaml

stage, params_path, out = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[-1])
out.parent.mkdir(parents=True, exist_ok=True)
params = yaml.safe_load(open(params_path))
labels = pd.read_csv("data/test_labels.csv", dtype={"row_id": str})
species = [c for c in labels.columns if c != "row_id"]
if stage == "train":
    cfg = params["train"]
    rng = np.random.default_rng(cfg["seed"])
    y = labels[species].to_numpy(float)
    scores = cfg["quality"] * y + rng.normal(size=y.shape)
    pd.DataFrame(scores, columns=species).assign(row_id=labels["row_id"]).to_parquet(out)
else:
    raw = pd.read_parquet(sys.argv[3])
    noise = np.random.default_rng(123).normal(size=(len(raw), len(species)))
    w = params["ensemble"]["noise"]
    blend = raw[species].to_numpy() * (1 - w) + w * 3 * noise
    pd.DataFrame(blend, columns=species).assign(row_id=raw["row_id"]).to_parquet(out)
'''

DVC = {"stages": {
    "train": {"cmd": "python step.py train params.yaml build/raw.parquet", "deps": ["step.py", "data"],
              "params": ["train"], "outs": ["build/raw.parquet"]},
    "ensemble": {"cmd": "python step.py ensemble params.yaml build/raw.parquet build/ensemble/pred.parquet",
                 "deps": ["step.py", "build/raw.parquet"], "params": ["ensemble"],
                 "outs": ["build/ensemble/pred.parquet"]},
}}  # fmt: skip


def _project(root: Path) -> Path:
    git_dvc_init(root)
    data = root / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    rows = [f"s{f}_{5 * (k + 1)}" for f in range(12) for k in range(4)]
    species = ["a1", "a2", "f1", "f2"]
    labels = pd.DataFrame((rng.random((len(rows), 4)) < 0.3).astype(int), columns=species)
    labels.insert(0, "row_id", rows)
    labels.to_csv(data / "test_labels.csv", index=False)
    pd.DataFrame({"primary_label": species, "class_name": ["Aves", "Aves", "Amphibia", "Amphibia"]}).to_csv(
        data / "taxonomy.csv", index=False
    )
    (root / "step.py").write_text(STEP)
    params = {"tracking": {"enabled": False}, "train": {"seed": 0, "quality": 1.0}, "ensemble": {"noise": 0.0}}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "dvc.yaml").write_text(yaml.safe_dump(DVC, sort_keys=False))
    (root / ".gitignore").write_text("/mlflow.db\n/build/ablate\n")
    sh(["dvc", "add", "-q", "data"], root)
    sh(["dvc", "repro", "-q"], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "tiny seeded project"], root)
    (root / "spec.yaml").write_text(yaml.safe_dump({
        "name": "t", "seeds": [0, 1], "seed_keys": ["train.seed"], "targets": ["ensemble"],
        "predictions": "build/ensemble/pred.parquet", "jobs": 1,
        "variants": {
            "baseline": {},
            "better": {"set": {"train.quality": 2.5}, "published": {"sign": "+", "rank": 1}},
            "noisy": {"set": {"ensemble.noise": 0.6}, "published": {"sign": "+", "rank": 2}},
        }}, sort_keys=False))  # fmt: skip
    return root


@pytest.mark.slow
@pytest.mark.integration
def test_seeded_ablation_retrains_reuses_and_tabulates(tmp_path: Path) -> None:
    root = _project(tmp_path / "proj")
    dry = sh(["birdclef", "ablate", "spec.yaml", "--dry-run"], root).stdout
    assert "# noisy: reuse" in dry and "# better: retrain" in dry and "t-noisy" not in dry
    sh(["birdclef", "ablate", "spec.yaml", "--out", "table.md"], root, timeout=900)
    names = sh(["dvc", "exp", "ls", "--name-only"], root).stdout.split()
    assert sorted(names) == ["t-baseline-s0", "t-baseline-s1", "t-better-s0", "t-better-s1"]  # no noisy run
    for seed in (0, 1):  # the reuse variant ran the ensemble command on the baseline's scores of its seed
        assert (root / "build" / "ablate" / "t" / f"noisy-s{seed}" / "build" / "ensemble" / "pred.parquet").is_file()
    table = (root / "table.md").read_text()
    row = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    better, noisy = row["better"], row["noisy"]
    assert "| retrain |" in better and "| reuse |" in noisy
    delta = lambda line: float(line.split("|")[5].split()[0])  # noqa: E731 - the "Δ (95% CI)" cell
    assert delta(better) > 0.05 and delta(noisy) < -0.05
    assert better.endswith("| yes |") and noisy.endswith("| no (opposite) |")  # both published "+"
    assert "bootstrap half-width" in table and "seed spread" in table
