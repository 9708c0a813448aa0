"""birdclef.io: how overrides merge into params sections; what killed atomic writers leave, and its sweeping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from birdclef.io import atomic_path, merged, read_json, split_timings, sweep_temps, write_metrics

TRAIN = {"crop_s": 5, "loop": {"epochs": 12, "scheduler": {"name": "cosine", "warmup_epochs": 1, "min_lr": 1e-6},
                               "optimizer": {"name": "adamw", "lr": 0.002}}}  # fmt: skip


def test_nested_dicts_merge_and_the_base_is_left_alone():
    out = merged(TRAIN, {"loop": {"epochs": 3, "scheduler": {"warmup_epochs": 0}}})
    assert out == {"crop_s": 5, "loop": {"epochs": 3, "scheduler": {"name": "cosine", "warmup_epochs": 0,
                                                                      "min_lr": 1e-6},
                                         "optimizer": {"name": "adamw", "lr": 0.002}}}  # fmt: skip
    assert TRAIN["loop"]["epochs"] == 12 and TRAIN["loop"]["scheduler"]["warmup_epochs"] == 1


def test_a_dict_of_another_name_replaces_the_base():
    out = merged(TRAIN, {"loop": {"scheduler": {"name": "constant"}}})
    assert out["loop"]["scheduler"] == {"name": "constant"}  # not constant with cosine's min_lr
    assert out["loop"]["epochs"] == 12 and out["loop"]["optimizer"] == {"name": "adamw", "lr": 0.002}
    radam = merged(TRAIN, {"loop": {"optimizer": {"name": "radam", "lr": 0.001}}})["loop"]["optimizer"]
    assert radam == {"name": "radam", "lr": 0.001}


def test_the_same_name_or_a_missing_name_merges():
    same = merged(TRAIN, {"loop": {"scheduler": {"name": "cosine", "min_lr": 0.0}}})["loop"]["scheduler"]
    assert same == {"name": "cosine", "warmup_epochs": 1, "min_lr": 0.0}
    unnamed_base = merged({"scheduler": {"warmup_epochs": 2}}, {"scheduler": {"name": "constant"}})
    assert unnamed_base == {"scheduler": {"warmup_epochs": 2, "name": "constant"}}
    assert merged({"a": {"name": "x", "v": 1}}, {"a": 3}) == {"a": 3}  # a non-dict value replaces, as before


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


KILLED_WRITER = """
import os, signal, sys
from birdclef.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.mkdir()
    (tmp / "model.pt").write_bytes(b"half")
    os.kill(os.getpid(), signal.SIGKILL)  # between the write and the rename
"""


def test_a_sigkilled_atomic_write_leaves_a_temp_that_the_next_start_sweeps(tmp_path):
    out = tmp_path / "build" / "train" / "it1"
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(out)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    (debris,) = (tmp_path / "build" / "train").iterdir()
    assert debris.name.startswith(".it1.") and (debris / "it1" / "model.pt").exists()
    assert sweep_temps(out) == [debris]
    assert list((tmp_path / "build" / "train").iterdir()) == []


def test_sweep_spares_live_writers_other_outputs_and_other_ranks(tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    dead, live = _dead_pid(), os.getpid()
    train, metrics, resume = tmp_path / "train", tmp_path / "metrics", tmp_path / "resume" / "it1"
    (resume / "m").mkdir(parents=True)
    metrics.mkdir()
    made = {
        "dead": train / f".it1.{dead}.abcd1234.tmp",
        "legacy": train / ".it1.q_w3e4r5.tmp",  # written before temps carried a pid
        "live": train / f".it1.{live}.zzzz9999.tmp",  # a writer still at work (another rank, a stage beside)
        "other": train / f".it2.{dead}.abcd1234.tmp",  # another output's: not this stage's to sweep
        "metrics": metrics / f".it1.json.{dead}.mmmmmmmm.tmp",  # a file output's temp, beside it
        "inside": resume / "m" / f".last.pt.{dead}.rrrrrrrr.tmp",  # inside a persistent output folder
    }
    for path in made.values():
        (path / path.name.split(".")[1]).mkdir(parents=True)
    (resume / "m" / "last.pt").write_bytes(b"kept")
    monkeypatch.setenv("RANK", "1")
    assert sweep_temps(train / "it1", metrics / "it1.json", resume) == []  # only rank 0 sweeps
    monkeypatch.setenv("RANK", "0")
    removed = sweep_temps(train / "it1", metrics / "it1.json", resume, tmp_path / "absent" / "x", None)
    assert sorted(removed) == sorted(made[k] for k in ("dead", "legacy", "metrics", "inside"))
    assert made["live"].exists() and made["other"].exists() and (resume / "m" / "last.pt").read_bytes() == b"kept"
    with atomic_path(train / "it1") as tmp:  # the writer's own pid is in its temp's name
        assert tmp.parent.name.startswith(f".it1.{live}.") and tmp.parent.name.endswith(".tmp")
        tmp.mkdir()
    assert sweep_temps(train / "it1") == [] and (train / "it1").is_dir()


STAGE_METRICS = {  # what the train, infer, export and teacher stages report, in one dict
    "sed_b0": {"soundscape_auc": 0.71, "val_auc": 0.9, "train_seconds": 140.3, "train_samples_per_second": 32.9},
    "score": 0.74, "n_files": 24, "cores": 2, "peak_rss_mb": 1133.9, "startup_seconds": 2.9,
    "seconds_per_soundscape_minute": 0.11, "projected_kaggle_minutes": 0.7, "teacher_startup_seconds": 1.0,
    "seconds_openvino": 0.057, "size_mb_member_it1": 5.2, "parity_openvino_it1": 1e-6, "backend": "openvino",
    "audio_minutes": 1.0, "seconds_per_audio_minute": 0.4, "hours_kept": 0.97, "teacher_n_covered": 2,
}


def test_timings_leave_the_scores_at_every_depth():
    scores, timings = split_timings(STAGE_METRICS)
    assert scores == {"sed_b0": {"soundscape_auc": 0.71, "val_auc": 0.9}, "score": 0.74, "n_files": 24,
                      "size_mb_member_it1": 5.2, "backend": "openvino",
                      "audio_minutes": 1.0, "hours_kept": 0.97, "teacher_n_covered": 2}  # fmt: skip
    assert timings == {"sed_b0": {"train_seconds": 140.3, "train_samples_per_second": 32.9}, "cores": 2,
                       "peak_rss_mb": 1133.9, "startup_seconds": 2.9, "seconds_per_soundscape_minute": 0.11,
                       "projected_kaggle_minutes": 0.7, "teacher_startup_seconds": 1.0, "seconds_openvino": 0.057,
                       "parity_openvino_it1": 1e-6,
                       "seconds_per_audio_minute": 0.4}  # fmt: skip
    assert split_timings({"enabled": 0, "rank1": {}}) == ({"enabled": 0, "rank1": {}}, {})


def test_a_rerun_rewrites_only_the_timing_file(tmp_path):
    paths = tmp_path / "metrics" / "train" / "it0.json", tmp_path / "metrics" / "timing" / "train_it0.json"
    written = []
    for seconds in (140.3, 151.0):  # the same result, another speed
        metrics = {**STAGE_METRICS, "sed_b0": {**STAGE_METRICS["sed_b0"], "train_seconds": seconds}}
        assert write_metrics(metrics, *paths) == split_timings(metrics)[0]
        written.append([p.read_bytes() for p in paths])
    assert written[0][0] == written[1][0] and written[0][1] != written[1][1]
    timings = read_json(paths[1])
    assert timings["sed_b0"]["train_seconds"] == 151.0 and 0 < timings["stage_seconds"] < 3600
