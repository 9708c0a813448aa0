"""benchmarks/real_task_ablate.py: the catalogue variants on the real task, tabulated from fake runs (no audio)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import real_task_ablate as rta  # noqa: E402

from birdclef.metric import score  # noqa: E402
from birdclef.track.ablate_spec import AblationSpec  # noqa: E402

SPECIES = ["aaa", "bbb", "ccc"]


def _truth(rng: np.random.Generator, files: int = 6) -> pd.DataFrame:
    rows = [f"f{i}_{5 * (w + 1)}" for i in range(files) for w in range(12)]
    labels = (rng.random((len(rows), len(SPECIES))) < 0.25).astype(int)
    labels[0] = 1  # every species has a positive
    return pd.DataFrame({"row_id": rows, **{s: labels[:, j] for j, s in enumerate(SPECIES)}})


def _pred(truth: pd.DataFrame, rng: np.random.Generator, signal: float) -> pd.DataFrame:
    y = truth[SPECIES].to_numpy(float)
    return pd.DataFrame({"row_id": truth["row_id"], **dict(zip(SPECIES, (signal * y + rng.random(y.shape)).T,
                                                               strict=True))})  # fmt: skip


def _run(work: Path, variant: str, seed: int, truth: pd.DataFrame, pred: pd.DataFrame) -> dict:
    preds = work / f"{variant}_s{seed}" / "predictions"
    preds.mkdir(parents=True)
    truth.to_csv(preds / "test_labels.csv", index=False)
    pred.to_parquet(preds / "ensemble.parquet")
    return {"variant": variant, "seed": seed, "score": score(truth, pred), "predictions": str(preds)}


@pytest.fixture
def spec(tmp_path: Path) -> AblationSpec:
    path = tmp_path / "spec.yaml"
    path.write_text(
        "name: t\nbaseline: baseline\nseeds: [0, 1]\nvariants:\n  baseline: {}\n"
        "  better: {set: {train.loss.name: ce}, published: {sign: '+', rank: 1, ref: L3}}\n"
        "  later: {set: {ensemble.postprocess.topk_boost.enabled: true}, published: {sign: '-', ref: I4}}\n"
    )
    return AblationSpec.load(path, tmp_path)


def test_table_pairs_each_seed_with_the_baselines_and_pools_the_differences(tmp_path: Path, spec: AblationSpec):
    rng = np.random.default_rng(0)
    truth = _truth(rng)
    taxonomy = tmp_path / "taxonomy.csv"
    pd.DataFrame({"primary_label": SPECIES, "class_name": ["Aves", "Aves", "Amphibia"]}).to_csv(taxonomy, index=False)
    runs, diffs = {}, []
    for seed in (0, 1):
        base, better = _pred(truth, rng, 0.3), _pred(truth, rng, 1.5)
        runs["baseline", seed] = _run(tmp_path, "baseline", seed, truth, base)
        runs["better", seed] = _run(tmp_path, "better", seed, truth, better)
        diffs.append(score(truth, better) - score(truth, base))
    runs["later", 0] = _run(tmp_path, "later", 0, truth, _pred(truth, rng, 0.3))  # seed 1 never ran
    kinds = {"baseline": "baseline", "better": "retrain", "later": "reuse"}
    rows, found, taxa = rta.table(spec, kinds, ["better", "later"], [0, 1], runs, taxonomy)

    assert [r.variant for r in rows] == ["baseline", "better", "later"]
    assert taxa == ["Amphibia", "Aves"]
    better = rows[1].effects["all"]
    assert better.diff == pytest.approx(np.mean(diffs), abs=1e-12)  # the mean of the per-seed paired differences
    assert better.per_seed == pytest.approx(tuple(diffs), abs=1e-12)
    assert better.low > 0 and rows[1].status == "ok" and set(rows[1].effects) == {"all", "Amphibia", "Aves"}
    assert rows[2].status == "missing seeds [1]" and rows[2].effects["all"].per_seed == pytest.approx(
        (score(truth, pd.read_parquet(Path(runs["later", 0]["predictions"]) / "ensemble.parquet"))
         - runs["baseline", 0]["score"],), abs=1e-12)  # fmt: skip
    assert found.scores == pytest.approx(tuple(runs["baseline", s]["score"] for s in (0, 1)), abs=1e-12)
    md = rta.markdown(rows, taxa, found, [0, 1], {"commit": "x"})
    assert "| better | retrain |" in md and "| yes |" in md  # published + and a real gain


def test_a_finished_run_is_reused_only_for_the_same_commit_and_overrides(tmp_path: Path):
    over = rta.base_overrides(1, {"train.threads": 1}, {"train.loss.name": "ce"})
    assert over == {"tracking.enabled": False, "train.loop.seed": 1, "train.threads": 1, "train.loss.name": "ce"}
    run_dir = tmp_path / "ce_s1"
    rta._save(run_dir, {"commit": "abc", "overrides": over, "score": 0.7})
    assert rta._done(run_dir, "abc", dict(over))["score"] == 0.7
    assert rta._done(run_dir, "def", over) is None  # other code
    assert rta._done(run_dir, "abc", {**over, "train.threads": 2}) is None  # other params
    rta._save(run_dir, {"commit": "abc", "overrides": over, "error": "boom"})
    assert rta._done(run_dir, "abc", over) is None  # a failed run runs again
    assert not (run_dir / "result.json.tmp").exists()


def test_reuse_without_a_kept_baseline_build_says_which_folder(tmp_path: Path):
    result = rta.reuse("topk_boost", 0, {"ensemble.postprocess.topk_boost.enabled": True}, work=tmp_path,
                       commit="abc", extra={})  # fmt: skip
    assert "baseline_s0" in result["error"] and "build/ensemble" in result["error"]
    assert json.loads((tmp_path / "topk_boost_s0" / "result.json").read_text())["error"] == result["error"]


def test_set_arguments_parse_as_yaml_and_a_malformed_one_is_named():
    assert rta.parse_sets(["train.threads=1", "a.b=[1, 2]", "c= true"]) == {"train.threads": 1, "a.b": [1, 2],
                                                                           "c": True}  # fmt: skip
    with pytest.raises(ValueError, match="'train.threads'"):
        rta.parse_sets(["train.threads"])
