"""The pre-flight check of `birdclef ablate`: the stages every run reuses must be locked, cached and up to date."""

from __future__ import annotations

import shutil

import yaml
from click.testing import CliRunner

from birdclef.track.ablate import ablate_command
from birdclef.track.ablate_ready import cache_dir, in_cache, missing_outputs, readiness_problems, upstream

from track_fixtures import sh, tiny_project

LOCK = {"schema": "2.0", "stages": {
    "acquire": {"deps": [{"path": "data", "md5": "d.dir"}], "outs": [{"path": "build/acquire", "md5": "a1.dir"}]},
    "features": {"deps": [{"path": "build/acquire/manifest.parquet"}], "outs": [{"path": "build/features"}]},
    "train@0": {"deps": [{"path": "build/features"}], "outs": [{"path": "build/models/it0"}]},
    "pseudo@0": {"deps": [{"path": "build/models/it0/sed"}], "outs": [{"path": "build/pseudo/it0"}]},
    "train@1": {"deps": [{"path": "build/pseudo/it0"}], "outs": [{"path": "build/models/it1"}]},
    "ensemble": {"deps": [{"path": "build/models"}], "outs": [{"path": "build/ensemble"}]},
    "export": {"deps": [{"path": "build/ensemble/weights.json"}], "outs": [{"path": "build/onnx"}]},
    "teacher": {"deps": [{"path": "data"}], "outs": [{"path": "build/teacher"}]},
}}  # fmt: skip


def test_upstream_follows_paths_into_and_out_of_outputs_and_stops_at_the_target():
    # a dep inside an out (manifest.parquet in build/acquire) and an out inside a dep (it0 in build/models) both link
    assert upstream(LOCK, ["ensemble"]) == ["acquire", "features", "train@0", "pseudo@0", "train@1", "ensemble"]
    assert upstream(LOCK, ["train"]) == ["acquire", "features", "train@0", "pseudo@0", "train@1"]
    assert upstream(LOCK, ["features"]) == ["acquire", "features"]
    assert upstream(LOCK, []) == list(LOCK["stages"])


def test_missing_outputs_looks_up_dvc3_and_legacy_cache_layouts(tmp_path):
    lock = {"stages": {"a": {"outs": [{"path": "x", "md5": "ab12.dir"}, {"path": "m.json", "md5": "cd34",
                                                                          "cache": False}]},
                       "b": {"outs": [{"path": "y", "md5": "ef56"}, {"path": "z"}]}}}  # fmt: skip
    assert missing_outputs(lock, ["a", "b"], tmp_path) == ["a: x", "b: y"]  # uncached / unhashed outs skipped
    (tmp_path / "files" / "md5" / "ab").mkdir(parents=True)
    (tmp_path / "files" / "md5" / "ab" / "12.dir").write_text("[]")
    (tmp_path / "ef").mkdir()
    (tmp_path / "ef" / "56").write_text("")
    assert in_cache(tmp_path, "ab12.dir") and in_cache(tmp_path, "ef56")
    assert missing_outputs(lock, ["a", "b"], tmp_path) == []
    assert missing_outputs(lock, ["b"], tmp_path / "elsewhere") == ["b: y"]


def test_a_shared_stage_missing_from_the_cache_or_out_of_date_stops_the_ablation(tmp_path):
    root = tiny_project(tmp_path / "proj")
    sh(["dvc", "repro", "-q"], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "results"], root)
    # prepare is shared (no key reaches it), train is each run's own: only prepare is checked
    assert readiness_problems(root, {"train.lr", "train.epochs"}, []) == []
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    md5 = lock["stages"]["prepare"]["outs"][0]["md5"]
    cache = cache_dir(root)
    assert in_cache(cache, md5)

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "abl", "metric": "metrics/train.json:score",
                                    "variants": {"base": {}, "lowlr": {"train.lr": 0.25}}}))  # fmt: skip
    moved = tmp_path / "object"
    shutil.move(cache / "files" / "md5" / md5[:2] / md5[2:], moved)
    assert readiness_problems(root, {"train.lr"}, []) == ["prepare: build/prep.txt is not in the DVC cache"]
    # a key that reaches prepare makes it each run's own: nothing shared is left to check
    assert readiness_problems(root, {"train.lr", "prepare.repeat"}, []) == []
    res = CliRunner().invoke(ablate_command, [str(spec), "--repo", str(root)])
    assert res.exit_code != 0
    assert "prepare: build/prep.txt is not in the DVC cache" in res.output and "dvc repro prepare" in res.output
    assert sh(["dvc", "queue", "status"], root).stdout.count("abl-") == 0  # refused before queueing anything
    shutil.move(moved, cache / "files" / "md5" / md5[:2] / md5[2:])

    (root / "data" / "raw.txt").write_text("wood warbler\n")  # the data changed, not re-added / re-run
    problems = readiness_problems(root, {"train.lr"}, [])
    assert problems == ["prepare is out of date (changed deps: data modified)"]
