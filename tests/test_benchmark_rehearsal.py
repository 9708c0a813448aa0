"""presets/rehearsal.yaml and benchmarks/rehearsal.py's arithmetic (the runs themselves are the benchmark's)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from birdclef.synth.config import CLASS_NAMES, PRESETS
from birdclef.track.pipeline import preset_args
from birdclef.train.params import check_params

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("rehearsal", ROOT / "benchmarks" / "rehearsal.py")
rehearsal = importlib.util.module_from_spec(_spec)
sys.modules["rehearsal"] = rehearsal
_spec.loader.exec_module(rehearsal)

PRESET = ROOT / rehearsal.PRESET


def _applied(tmp_path: Path) -> dict:
    from dvc.utils.hydra import apply_overrides

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    args = preset_args(PRESET, tmp_path / "params.yaml")
    apply_overrides(str(tmp_path / "params.yaml"), args[1::2])
    return yaml.safe_load((tmp_path / "params.yaml").read_text())


def test_preset_selects_the_full_synthclef_preset_and_its_206_species() -> None:
    entry = yaml.safe_load(PRESET.read_text())["synth"]
    assert entry["preset"] == "full"
    classes = PRESETS["full"].classes
    assert sum(classes.values()) == 206 and tuple(classes) == CLASS_NAMES  # the competition's class mix
    sets = rehearsal.synth_overrides(entry)
    full = PRESETS["full"]
    assert sets == {name: round(getattr(full, name) * entry["scale"]) for name in rehearsal.SCALED_COUNTS}
    assert rehearsal.synth_overrides(entry, 2.0)["train_soundscapes"] == 2 * sets["train_soundscapes"]


def test_preset_goes_through_dvc_and_the_strict_params_check(tmp_path: Path) -> None:
    args = preset_args(PRESET, tmp_path / "absent.yaml")
    assert not any(a.lstrip("+").startswith("synth") for a in args[1::2])  # a dataset, not a params key
    params = _applied(tmp_path)
    check_params(params)  # every section, unknown keys refused
    assert params["train"]["loop"]["epochs"] == 1 and params["train"]["loop"]["min_samples_per_epoch"] == 0
    assert rehearsal.stage_order(params) == ["acquire", "clean", "features", "pretrain", "teacher", "distill",
                                             "train@0", "pseudo@0", "train@1", "ensemble", "export", "infer"]
    members = {(m["iteration"], m["model"]) for m in params["ensemble"]["members"]}
    assert members <= {(it["k"], m) for it in params["iterations"] for m in it["members"]}


def test_projection_is_linear_in_the_stage_driver() -> None:
    counts = {"focal_files": 357, "focal_hours": 2.0, "segment_hours": 1.5, "train_soundscapes": 50,
              "test_soundscapes": 25}  # fmt: skip
    real = rehearsal.real_counts(counts)
    # 280 h of focal audio kept at the rehearsal's 75 %, plus 9,726 minutes of train soundscapes
    assert real["cached_hours"] == pytest.approx(280 * 0.75 + 9726 / 60)
    assert rehearsal.project(10.0, "focal_files", counts, real) == pytest.approx(10 * 28_564 / 357)
    assert rehearsal.project(4.0, "train_soundscapes", counts, real) == pytest.approx(4 * 9_726 / 50)
    assert rehearsal.project(3.0, "test_soundscapes", counts, real) == pytest.approx(3 * 700 / 25)
    assert rehearsal.project(52.0, None, counts, real) == 52.0  # fixed cost
    assert set(rehearsal.DRIVERS) >= {s.partition("@")[0] for s in rehearsal.stage_order(
        {"iterations": [{"k": 0}], "pseudo": {"rounds": [{"k": 0}]}})}  # fmt: skip


def test_merge_reports_rss_growth_per_soundscape() -> None:
    def report(n: int, rss: float) -> dict:
        return {"counts": {"train_soundscapes": n}, "stages": {"pseudo@0": {"peak_rss_mb": rss, "wall_s": 1.0}}}

    out = rehearsal.merge(report(100, 900.0), report(50, 800.0))  # either order
    stage = out["stages"]["pseudo@0"]
    assert out["train_soundscapes"] == [50, 100] and stage["peak_rss_mb"] == [800.0, 900.0]
    assert stage["rss_mb_per_train_soundscape"] == pytest.approx(2.0)
    assert stage["projected_peak_rss_mb"] == pytest.approx(800 + 2.0 * (9726 - 50))


def test_table_shows_measured_and_projected() -> None:
    report = {"stages": {"pseudo@0": {"wall_s": 30.0, "projected_wall_s": 5835.6, "peak_rss_mb": 812.4,
                                      "disk_bytes": 2**20, "projected_disk_bytes": 2**30 * 3,
                                      "drivers": {"time": "train_soundscapes", "disk": None}}}}  # fmt: skip
    table = rehearsal.markdown_table(report).splitlines()
    assert table[2] == "| pseudo@0 | 30 s -> 1.6 h | 812 MB | 1.0 MB -> 3.0 GB | train_soundscapes, fixed |"
