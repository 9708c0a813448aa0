"""`birdclef ablate`: spec checks, -S arguments, exp show parsing, and a queued ablation on a tiny DVC project."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from birdclef.track.ablate import AblationSpec, ablate_command, experiments, resolve
from birdclef.track.overrides import set_args

from track_fixtures import head, sh, tiny_project


def _spec(tmp_path, doc) -> AblationSpec:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return AblationSpec.load(path)


def test_spec_defaults_and_errors(tmp_path):
    spec = _spec(tmp_path, {"name": "loss", "variants": {"bce": {"train.loss.name": "bce"}, "plain": None}})
    assert spec.baseline == "bce" and spec.variants["plain"] == {} and spec.exp_name("plain") == "loss-plain"
    with pytest.raises(ValueError, match="baseline 'x' is not one of"):
        _spec(tmp_path, {"baseline": "x", "variants": {"a": {}}})
    with pytest.raises(ValueError, match="'bad name' is not a valid experiment name"):
        _spec(tmp_path, {"variants": {"bad name": {}}})
    with pytest.raises(ValueError, match="`variants` must map"):
        _spec(tmp_path, {"variants": []})


def test_preset_goes_under_every_variant_and_names_its_data(tmp_path):
    """A spec's preset reaches every run (baseline too), the variant's own setting wins, the seed wins over both."""
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "b.yaml").write_text(
        "synth: {preset: bench, seed: 0}\ntrain.threads: 1\ntrain.loop.epochs: 8\ntrain.loop.seed: 9\n"
    )
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"preset": "presets/b.yaml", "seeds": [3], "variants": {
        "base": {}, "long": {"set": {"train.loop.epochs": 12}}}}))  # fmt: skip
    spec = AblationSpec.load(path, tmp_path)
    assert spec.overrides("base", 3) == {"train.threads": 1, "train.loop.epochs": 8, "train.loop.seed": 3}
    assert spec.overrides("long", 3) == {"train.threads": 1, "train.loop.epochs": 12, "train.loop.seed": 3}
    assert spec.variants["base"] == {} and spec.data == {"preset": "bench", "seed": 0}
    with pytest.raises(ValueError, match=r"meant for the SynthCLEF 'bench' dataset, but .* holds no SynthCLEF data"):
        spec.check_data(tmp_path)
    truth = tmp_path / "data" / "synth_truth"
    truth.mkdir(parents=True)
    (truth / "generator.json").write_text('{"preset": "demo", "seed": 0}')
    with pytest.raises(ValueError, match=r"holds SynthCLEF 'demo': birdclef data synth --preset bench --seed 0"):
        spec.check_data(tmp_path)
    (truth / "generator.json").write_text('{"preset": "bench", "seed": 0}')
    spec.check_data(tmp_path)
    path.write_text(yaml.safe_dump({"preset": "presets/none.yaml", "variants": {"a": {}}}))
    with pytest.raises(ValueError, match=r"spec.yaml: preset 'presets/none.yaml': No such file"):
        AblationSpec.load(path, tmp_path)


def test_set_args_keep_types_for_dvc():
    assert set_args({"a.b": "bce", "c": 2, "d": [1, 2], "e": True}) == [
        "-S", "a.b=bce", "-S", "c=2", "-S", "d=[1, 2]", "-S", "e=true"
    ]  # fmt: skip


def test_set_args_nested_values_parse_back_through_dvc(tmp_path):
    from dvc.utils.hydra import apply_overrides

    params = {"a": {"b": 1, "rounds": [{"k": 0, "tau": 1.0}]}, "models": {"x": {"head": "sed"}}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    new = {"head": "cnn", "path": "build/it2/{model}/model.pt", "pretrained": None, "flag": True}
    args = set_args({"a.rounds": [{"k": 0, "tau": 0.5}], "models.y": new}, params)
    assert args[3].startswith("+models.y=")  # a key new to params.yaml needs Hydra's '+'
    apply_overrides(str(path), args[1::2])
    assert yaml.safe_load(path.read_text()) == {"a": {"b": 1, "rounds": [{"k": 0, "tau": 0.5}]},
                                                "models": {"x": {"head": "sed"}, "y": new}}  # fmt: skip


def test_gpu_preset_overrides_parse_back_through_dvc(tmp_path):
    import shutil

    from dvc.utils.hydra import apply_overrides

    from birdclef.track.pipeline import preset_args

    from track_fixtures import REPO

    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    args = preset_args(REPO / "presets" / "gpu.yaml", tmp_path / "params.yaml")
    apply_overrides(str(tmp_path / "params.yaml"), args[1::2])
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert params["models"]["sed_b3"]["backbone"] == "tf_efficientnet_b3.ns_jft_in1k"
    assert params["train"]["crop_s"] == 20 and len(params["iterations"]) == 5
    assert params["iterations"][2]["members"] == ["sed_b0", "sed_b3", "sed_regnety", "sed_nfnet"]
    assert [r["tau"] for r in params["pseudo"]["rounds"]] == [1.0, 0.65, 0.55, 0.6]
    assert params["train"]["loop"]["optimizer"] == {"name": "adamw", "lr": 0.0005, "weight_decay": 0.0001}


def test_resolve_takes_the_last_matching_file_and_one_word_taxa():
    metrics = {
        "metrics/train/it1.json": {"m1": {"soundscape_auc": 0.6, "soundscape_auc_Aves": 0.7},
                                   "m2": {"soundscape_auc": 0.8, "soundscape_auc_Aves": 0.9}},
        "metrics/train/it0.json": {"m1": {"soundscape_auc": 0.1}},
        "metrics/ensemble.json": {"score": 0.5, "score_aves": 0.6, "score_hand_weights": 0.4},
    }  # fmt: skip
    value, taxa = resolve(metrics, "metrics/infer.json:score|metrics/train/it*.json:soundscape_auc")
    assert value == pytest.approx(0.7) and taxa == {"aves": pytest.approx(0.8)}
    assert resolve(metrics, "metrics/ensemble.json:score") == (0.5, {"aves": 0.6})
    assert resolve(metrics, "metrics/infer.json:score") == (None, {})


def test_experiments_reads_names_metrics_and_errors():
    stale = {"metrics": {"m.json": {"data": {"score": 0.5}}}}  # DVC shows the baseline's files for a failed run
    show = [
        {"rev": "workspace", "experiments": None},
        {
            "rev": "abc",
            "experiments": [
                {
                    "revs": [{"name": "x-a", "rev": "e1", "data": {"metrics": {"m.json": {"data": {"score": 1}}}},
                              "error": None}],  # fmt: skip
                    "executor": {"state": "success"},
                },
                {"revs": [{"name": "x-a", "data": stale, "error": None}], "executor": {"state": "success"}},
                {
                    "revs": [{"name": "x-b", "data": stale, "error": {"msg": "Experiment run failed"}}],
                    "executor": {"state": "failed"},
                },
                {"revs": [{"name": "x-c", "data": stale, "error": None}], "executor": {"state": "queued"}},
            ],
        },
    ]
    assert experiments(show) == {
        "x-a": {"metrics": {"m.json": {"score": 1}}, "state": "success", "error": None, "rev": "e1"},
        "x-b": {"metrics": {}, "state": "failed", "error": "Experiment run failed", "rev": None},
        "x-c": {"metrics": {}, "state": "queued", "error": None, "rev": None},
    }  # fmt: skip


def _expected(epochs: int, lr: float) -> tuple[float, float, float]:
    """The tiny pipeline's train.json formula: (score, score_aves, score_insecta)."""
    auc = round(0.5 + 0.4 * (1 - 0.5**epochs) * lr, 6)
    return round(auc - 0.01, 6), round(auc - 0.02, 6), round(auc - 0.05 * lr, 6)


@pytest.mark.slow
@pytest.mark.integration
def test_ablate_queues_variants_and_tabulates_deltas_per_taxon(tmp_path):
    root = tiny_project(tmp_path / "proj")
    sh(["dvc", "repro", "-q"], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "results"], root)
    spec = {
        "name": "abl",
        "metric": "metrics/train.json:score",
        "variants": {"base": {}, "lowlr": {"train.lr": 0.25}, "broken": {"train.epochs": 0}},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    out = tmp_path / "ablation.md"
    res = CliRunner().invoke(ablate_command, [str(tmp_path / "spec.yaml"), "--repo", str(root), "--out", str(out)],
                             catch_exceptions=False)  # fmt: skip
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert f"- commit: `{head(root)}` (results)" in text
    assert "birdclef ablate" in text and "dvc exp run --queue -n abl-lowlr -S train.lr=0.25" in text
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert list(rows)[0] == "variant" and rows["variant"].endswith("| aves | insecta |")
    base, low = _expected(3, 0.5), _expected(3, 0.25)
    cells = " | ".join(f"{v:.4f}" for v in base)
    assert rows["base (baseline)"] == f"| base (baseline) | (committed params) | {cells} |"
    deltas = [f"{lv:.4f} ({lv - bv:+.4f})" for lv, bv in zip(low, base, strict=True)]
    assert rows["lowlr"] == f"| lowlr | `train.lr=0.25` | {' | '.join(deltas)} |"
    assert rows["broken (failed)"].endswith("| n/a | n/a | n/a |")


def test_no_import_circle_among_the_track_modules():
    """ablate -> pipeline -> overrides, never back (ablate.py and pipeline.py used to import each other)."""
    import ast

    from track_fixtures import REPO

    folder = REPO / "src/birdclef/track"
    graph = {}
    for path in folder.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):  # function-level imports count too
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("birdclef.track."):
                names.add(node.module.rsplit(".", 1)[1])
        graph[path.stem] = names - {path.stem}
    assert "overrides" in graph["pipeline"] and "pipeline" in graph["ablate"]

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph.get(start, ()))

    assert [m for m in graph if reaches(m, m)] == []


def test_runs_at_a_time_share_the_cores_threads_the_preset_sets_stay(tmp_path):
    """jobs 2 on 4 cores: every stage's committed "all cores" (null) or larger thread count becomes 2 per run; the
    preset's own value and a variant's stay; one job at a time changes nothing."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "train": {"threads": 4}, "pseudo": {"threads": None}, "teacher": {"threads": None},
        "ensemble": {"threads": 1}, "export": {"threads": 2}}))  # fmt: skip
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "p.yaml").write_text("teacher.threads: 3\n")
    path = tmp_path / "spec.yaml"
    doc = {"jobs": 2, "preset": "presets/p.yaml", "seeds": [0], "variants": {"base": {}, "fat": {"train.threads": 4}}}
    path.write_text(yaml.safe_dump(doc))
    spec = AblationSpec.load(path, tmp_path, cores=4)
    assert spec.threads == {"train.threads": 2, "pseudo.threads": 2}  # export (2) and ensemble (1) fit the share
    assert spec.overrides("base", 0) == {"train.threads": 2, "pseudo.threads": 2, "teacher.threads": 3,
                                         "train.loop.seed": 0}  # fmt: skip
    assert spec.overrides("fat", 0)["train.threads"] == 4
    assert AblationSpec.load(path, tmp_path, cores=2).threads == {"train.threads": 1, "pseudo.threads": 1,
                                                                  "export.threads": 1}  # fmt: skip
    path.write_text(yaml.safe_dump({**doc, "jobs": 1}))
    assert AblationSpec.load(path, tmp_path, cores=4).threads == {}
