"""Seeded ablations (issue 18 items 3, 5): the reuse rule from dvc.yaml, the table arithmetic on tiny synthetic
prediction files, and the MLflow table artifacts (sqlite store in tmp_path)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from birdclef.metric import paired_bootstrap, score
from birdclef.track.ablate_spec import AblationSpec, queue_commands
from birdclef.track.ablate_table import Effect, VariantResult, frame, markdown, noise, pooled_effects, reproduced
from birdclef.track.paired import read_table
from birdclef.track.reach import stage_params, variant_kind

REPO = Path(__file__).resolve().parents[1]
TAXA = {"a1": "Aves", "a2": "Aves", "i1": "Insecta"}


def _dvc_yaml(tmp_path: Path) -> Path:
    doc = {"stages": {
        "train": {"foreach": "${iterations}", "do": {"cmd": "t ${item.k}", "params": ["train", "models"]}},
        "pseudo": {"foreach": "${pseudo.rounds}", "do": {"cmd": "p", "params": ["train.device"]}},
        "teacher": {"cmd": "x", "params": ["teacher"]},
        "ensemble": {"cmd": "e", "params": ["ensemble", "teacher.name"]},
        "infer": {"cmd": "i", "params": ["infer"]},
    }}  # fmt: skip
    path = tmp_path / "dvc.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_reuse_rule_comes_from_the_stages_params_lists(tmp_path: Path) -> None:
    stages = stage_params(_dvc_yaml(tmp_path))
    assert "pseudo.rounds" in stages["pseudo"] and "iterations" in stages["train"]  # interpolated: reached too
    assert variant_kind({"ensemble.postprocess.smoothing.enabled": False}, stages) == "reuse"
    assert variant_kind({"ensemble.combination": "rank", "ensemble.fit.method": "coordinate"}, stages) == "reuse"
    assert variant_kind({"train.loss.name": "focal"}, stages) == "retrain"
    assert variant_kind({"ensemble.combination": "rank", "train.loss.name": "ce"}, stages) == "retrain"
    assert variant_kind({"teacher.name": "perch_v2"}, stages) == "retrain"  # the teacher stage reads it too
    assert variant_kind({"pseudo.rounds": [{"k": 0, "tau": 1.0}]}, stages) == "retrain"
    assert variant_kind({"infer.workers": 1}, stages) == "retrain"  # infer's params cannot change the ensemble's AUC
    assert variant_kind({}, stages) == "retrain"
    with pytest.raises(ValueError, match="trian.loss reach no stage"):
        variant_kind({"trian.loss": 1}, stages)
    real = stage_params(REPO / "dvc.yaml")  # the project's own pipeline
    assert variant_kind({"ensemble.postprocess.topk_boost.enabled": True}, real) == "reuse"
    assert variant_kind({"train.loss.name": "focal"}, real) == "retrain"


def test_queue_skips_reuse_variants_and_names_every_seed(tmp_path: Path) -> None:
    _dvc_yaml(tmp_path)
    doc = {"name": "abl", "seeds": [0, 1], "targets": ["ensemble"], "variants": {
        "base": {}, "focal": {"set": {"train.loss.name": "focal"}, "published": {"sign": "+", "rank": 2}},
        "topk": {"ensemble.postprocess.topk_boost.enabled": True}}}  # fmt: skip
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    spec = AblationSpec.load(tmp_path / "spec.yaml")
    kinds = spec.kinds(tmp_path)
    assert kinds == {"base": "baseline", "focal": "retrain", "topk": "reuse"}
    assert spec.published["focal"] == {"sign": "+", "rank": 2}
    cmds = [c[1:] for c in queue_commands(spec, kinds)]
    assert cmds[:2] == [
        ["exp", "run", "--queue", "-n", "abl-base-s0", "-S", "train.loop.seed=0", "ensemble"],
        ["exp", "run", "--queue", "-n", "abl-base-s1", "-S", "train.loop.seed=1", "ensemble"],
    ]
    assert cmds[2][4] == "abl-focal-s0" and "train.loss.name=focal" in cmds[2]
    assert len(cmds) == 5 and cmds[-1][:3] == ["exp", "run", "--run-all"]  # no topk run: it reuses the baseline's
    # A key the repo's params lack (a preset's new mel config) is queued as +key, as Hydra needs to add it.
    params = {"train": {"loss": {"name": "bce"}, "loop": {"seed": 0}}}
    cmds = [c[1:] for c in queue_commands(spec, kinds, params)]
    assert "train.loss.name=focal" in cmds[2] and "train.loop.seed=0" in cmds[0]
    doc["variants"]["gamma"] = {"train.loss.focal.gamma": 3.0}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    spec = AblationSpec.load(tmp_path / "spec.yaml")
    cmds = [c[1:] for c in queue_commands(spec, spec.kinds(tmp_path), params)]
    assert "+train.loss.focal.gamma=3.0" in cmds[-2] and "train.loss.name=focal" in cmds[2]


# ---------------------------------------------------------------- arithmetic on synthetic prediction files


def _labels(n_files: int = 10, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [f"sc{f}_{5 * (w + 1)}" for f in range(n_files) for w in range(12)]
    data = {c: (rng.random(len(rows)) < 0.25).astype(int) for c in TAXA}
    return pd.DataFrame({"row_id": rows, **data})


def _predict(labels: pd.DataFrame, skill: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = labels.copy()
    for c in TAXA:
        out[c] = skill * labels[c] + rng.normal(0, 1, len(labels))
    return out


def _files(tmp_path: Path, labels: pd.DataFrame, seeds: list[int], skill_b: float) -> list[tuple]:
    pairs = []
    for s in seeds:  # written and read back as the ablation reads them
        _predict(labels, 1.0, 100 + s).to_parquet(tmp_path / f"base-s{s}.parquet")
        _predict(labels, skill_b, 200 + s).to_csv(tmp_path / f"var-s{s}.csv", index=False)
        pairs.append((read_table(str(tmp_path / f"base-s{s}.parquet")), read_table(str(tmp_path / f"var-s{s}.csv"))))
    return pairs


def test_one_seed_is_exactly_the_paired_bootstrap(tmp_path: Path) -> None:
    labels = _labels()
    pairs = _files(tmp_path, labels, [0], 1.5)
    found = pooled_effects(labels, pairs, TAXA, n_resamples=300)
    ref = paired_bootstrap(labels, *pairs[0], n_resamples=300)
    assert found["all"].diff == pytest.approx(ref.diff)
    assert (found["all"].low, found["all"].high) == pytest.approx((ref.low, ref.high))
    assert found["all"].n_files == 10 and set(found) == {"all", "Aves", "Insecta"}
    insect = [c for c in labels if c in ("row_id", "i1")]  # a taxon column is its own species' macro AUC
    assert found["Insecta"].diff == pytest.approx(score(labels[insect], pairs[0][1][insect])
                                                  - score(labels[insect], pairs[0][0][insect]))  # fmt: skip


def test_mean_delta_over_seeds_interval_and_reproduced(tmp_path: Path) -> None:
    labels = _labels(n_files=30)
    pairs = _files(tmp_path, labels, [0, 1, 2], 3.0)
    found = pooled_effects(labels, pairs, TAXA, n_resamples=300)["all"]
    per_seed = [score(labels, b) - score(labels, a) for a, b in pairs]
    assert found.per_seed == pytest.approx(tuple(per_seed)) and found.diff == pytest.approx(np.mean(per_seed))
    assert found.low < found.diff < found.high and found.real and found.sign == "+"
    assert found.seed_sd == pytest.approx(np.std(per_seed, ddof=1))
    assert reproduced(found, "+") == "yes" and reproduced(found, "-") == "no (opposite)"
    assert reproduced(found, "0") == "no (real effect)" and reproduced(found, None) == "n/a"
    flat = Effect(0.001, -0.01, 0.012, (0.001,), 0.55, 30)
    assert reproduced(flat, "+") == "no (within noise)" and reproduced(flat, "0") == "yes"
    level = noise(labels, [a for a, _ in pairs], n_resamples=300)
    base_scores = [score(labels, a) for a, _ in pairs]
    assert level.scores == pytest.approx(tuple(base_scores))
    assert level.seed_sd == pytest.approx(np.std(base_scores, ddof=1)) and 0 < level.half_width < 0.2
    rows = [VariantResult("base", "baseline", {}, {}, "ok", level.scores, None),
            VariantResult("better", "retrain", {"train.loss.name": "focal"}, {"sign": "+", "rank": 2}, "ok",
                          tuple(score(labels, b) for _, b in pairs), {"all": found})]  # fmt: skip
    text = markdown(rows, ["Aves"], level, [0, 1, 2], {"commit": "`abc`"})
    line = next(x for x in text.splitlines() if x.startswith("| better"))
    assert f"{found.diff:+.4f} [{found.low:+.4f}, {found.high:+.4f}]" in line and line.endswith("| + (rank 2) | yes |")
    half = f"bootstrap half-width (baseline, 95%, 30 test soundscapes, mean over 3 seed(s)): {level.half_width:.4f}"
    assert half in text
    assert f"seed spread of the baseline score over seeds [0, 1, 2]: sd {level.seed_sd:.4f}" in text
    table = frame(rows, ["Aves"])
    assert table.loc[1, "delta"] == pytest.approx(found.diff) and table.loc[1, "reproduced"] == "yes"


# ---------------------------------------------------------------- MLflow tables


def test_tables_go_to_the_run_as_one_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from birdclef.track.runs import parent_run, stage_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_PARENT_RUN_ID", raising=False)
    per_class = pd.DataFrame({"primary_label": ["a1", "i1"], "class_name": ["Aves", "Insecta"], "auc": [0.9, 0.7]})
    tracking = {"experiment": "t"}
    with stage_run("infer", {"infer": {}}, tracking) as run:
        run.log_table(per_class, "tables/per_class_auc.json")
    with parent_run("ablate x", tracking) as parent:
        parent.log_table(pd.DataFrame({"variant": ["a", "b"], "delta": [0.0, 0.01]}), "ablation.json")
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    got = mlflow.load_table("tables/per_class_auc.json", run_ids=[run.run_id])
    assert got["primary_label"].tolist() == ["a1", "i1"] and got["auc"].tolist() == pytest.approx([0.9, 0.7])
    assert not any(k.startswith("auc_") for k in client.get_run(run.run_id).data.metrics)  # a table, not columns
    doc = json.loads(Path(client.download_artifacts(parent.run_id, "ablation.json", str(tmp_path))).read_text())
    assert doc["columns"] == ["variant", "delta"] and len(doc["data"]) == 2


def test_reuse_reruns_the_stage_command_on_copied_inputs_with_the_variant_params(tmp_path: Path) -> None:
    from birdclef.track.ablate_reuse import rewrite, stage_spec, variant_params

    spec = stage_spec(REPO)
    assert "build/train" in spec["deps"] and {"build/ensemble", "metrics/ensemble.json"} <= set(spec["outs"])
    cmd = rewrite(spec["cmd"], tmp_path, {"build/train", *spec["outs"]})
    assert cmd[cmd.index("--params") + 1] == str(tmp_path / "params.yaml")
    assert cmd[cmd.index("--train-dir") + 1] == str(tmp_path / "build/train")
    assert cmd[cmd.index("--out") + 1] == str(tmp_path / "build/ensemble")
    assert cmd[cmd.index("--soundscapes") + 1] == "data/test_soundscapes"  # the workspace's data: not moved
    variant_params((REPO / "params.yaml").read_text(), {"ensemble.combination": "rank", "train.loop.seed": 2},
                   tmp_path / "params.yaml")  # fmt: skip
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert params["ensemble"]["combination"] == "rank" and params["train"]["loop"]["seed"] == 2


def test_reuse_runs_go_jobs_at_a_time_and_keep_their_errors() -> None:
    import threading

    from birdclef.track.ablate_seeds import run_reuses

    both = threading.Barrier(2, timeout=10)  # passes only when two reuse runs are in flight together

    def reuse(variant: str, seed: int | None, base_rev: str) -> Path:
        both.wait()
        if variant == "bad":
            raise RuntimeError("ensemble for bad failed (exit 1)\nTraceback ...")
        return Path(f"{variant}-s{seed}-{base_rev}")

    tasks = [("rank", 0, "r0"), ("bad", 0, "r0"), ("rank", 1, "r1"), ("minmax", 1, "r1")]
    out = run_reuses(tasks, reuse, jobs=2)
    assert out[("rank", 0)] == Path("rank-s0-r0") and out[("minmax", 1)] == Path("minmax-s1-r1")
    assert isinstance(out[("bad", 0)], RuntimeError)
    alone = threading.Barrier(2, timeout=0.3)  # one at a time: it never fills (BrokenBarrierError, a RuntimeError)
    serial = run_reuses(tasks[:2], lambda *t: alone.wait() and Path("x"), jobs=1)
    assert all(isinstance(v, threading.BrokenBarrierError) for v in serial.values())
