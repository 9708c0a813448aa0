"""Tests for birdclef.infer.teacher_member: the teacher member rebuilt from its spec entry, its run over files,
the blend over all rows, the per-file blend against the reference, speed figures, and the real BirdNET."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from teacher_fixtures import REAL_AUDIO, SR, burst, stand_in_entry

from birdclef.infer import teacher_member as M
from birdclef.teachers import create_teacher, predict_windows

CLASSES = ["sp_all", "sp_q1", "frog1"]
SCIENTIFIC = {"sp_all": "Omnia sonora", "sp_q1": "Beta secunda"}  # the stand-in's classes 4 and 1; frog1 unknown


@pytest.fixture
def entry(tmp_path: Path) -> dict:
    return stand_in_entry(tmp_path / "stand_in", CLASSES, SCIENTIFIC)


def test_the_member_gives_the_adapters_probabilities_in_class_order(entry: dict, tmp_path: Path):
    assert entry["index"] == [4, 1, -1] and entry["teacher_labels"][:2] == ["Omnia sonora_All", "Beta secunda_Beta"]
    member = M.TeacherMember(entry)
    wave = burst(17.0, 7.0, 7.5)  # a tone in window 1 only; 17 s -> 4 windows asked for, the tail zero-padded
    got = member(wave, 4)
    section = {k: entry[k] for k in ("sample_rate", "window_s", "logits_output", "embedding_output")}
    adapter = create_teacher("onnx", {"model_path": entry["files"]["model"]["path"],
                                      "labels_path": entry["files"]["labels"]["path"], **section})  # fmt: skip
    probs, _ = predict_windows(adapter, np.concatenate([wave, np.zeros(3 * SR, np.float32)]))
    np.testing.assert_allclose(got[:, :2], probs[:, [4, 1]], atol=1e-6)
    assert np.isnan(got[:, 2]).all()  # an uncovered species gets no teacher signal, never a zero
    assert np.flatnonzero(got[:, 0] > 0.5).tolist() == [1]
    assert member(wave, 2).shape == (2, 3)  # cut to the students' timeline


def test_changed_missing_or_foreign_files_are_refused(entry: dict, tmp_path: Path):
    labels = Path(entry["files"]["labels"]["path"])
    moved = tmp_path / "moved"
    shutil.copytree(labels.parent, moved)
    relative = {**entry, "files": {k: {**v, "path": Path(v["path"]).name} for k, v in entry["files"].items()}}
    assert M.teacher_files(relative, moved)["model"] == moved / "energy.onnx"  # a bundle's relative paths
    with pytest.raises(FileNotFoundError, match="teacher model file .*energy.onnx is gone"):
        M.teacher_files(relative, tmp_path)
    (moved / "labels.txt").write_text("\n".join(reversed(labels.read_text().splitlines())))
    with pytest.raises(ValueError, match="labels.txt: the teacher labels file changed since the ensemble stage"):
        M.TeacherMember(relative, moved)
    with pytest.raises(ValueError, match="not the label file the ensemble stage mapped .* 2 mapped species moved"):
        M.TeacherMember(relative, moved, verify=False)


def test_blend_rows_blends_covered_species_over_all_rows_and_keeps_the_others():
    entry = {"index": [0, -1], "weight": 0.2, "method": "rank"}
    students = np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]], np.float32)
    teacher = np.array([[0.9, np.nan], [0.1, np.nan], [0.2, np.nan], [0.3, np.nan]], np.float32)
    out = M.blend_rows(entry, students, teacher)
    # ranks r_s = (1, 2, 3, 4) / 4, r_t = (4, 1, 2, 3) / 4 -> 0.8 r_s + 0.2 r_t
    np.testing.assert_allclose(out[:, 0], [0.4, 0.45, 0.7, 0.95], atol=1e-6)
    np.testing.assert_array_equal(out[:, 1], students[:, 1])  # the students' scores, not their ranks
    teacher[1, 0] = np.nan  # a file the teacher failed on: its rows keep the students' ranks
    np.testing.assert_allclose(M.blend_rows(entry, students, teacher)[1, 0], 0.5, atol=1e-6)
    pct = M.blend_rows({**entry, "method": "percentile", "weight": 0.5}, students, teacher)
    # teacher percentiles (1, -, 0, 0.5) read off the students' quantiles (0.4, -, 0.1, 0.25), half each
    np.testing.assert_allclose(pct[:, 0], [0.25, 0.2, 0.2, 0.325], atol=1e-6)


def test_class_weights_from_a_per_class_fit_replace_the_one_weight_in_both_blends():
    entry = {"index": [0, 1], "weight": 0.2, "method": "rank", "class_weights": [1.0, 0.0]}
    students = np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]], np.float32)
    teacher = np.array([[0.9, 0.1], [0.1, 0.2], [0.2, 0.3], [0.3, 0.4]], np.float32)
    out = M.blend_rows(entry, students, teacher)
    np.testing.assert_allclose(out[:, 0], [1.0, 0.25, 0.5, 0.75], atol=1e-6)  # the teacher's ranks alone
    np.testing.assert_allclose(out[:, 1], [1.0, 0.75, 0.5, 0.25], atol=1e-6)  # the students' ranks alone
    one = M.blend_rows({**entry, "class_weights": None}, students, teacher)
    np.testing.assert_allclose(one[:, 0], [0.4, 0.45, 0.7, 0.95], atol=1e-6)  # no per-class fit: 0.2 everywhere
    ref = {"columns": [0, 1], "students": [[0, 0.5, 1], [0, 0.5, 1]], "teacher": [[0, 0.5, 1], [0, 0.5, 1]]}
    file_out = M.blend_file({**entry, "reference": ref}, students, teacher)
    np.testing.assert_allclose(file_out[:, 0], teacher[:, 0].clip(0, 1), atol=1e-6)  # w 1: Q_s(F_t(t)) = t here
    np.testing.assert_allclose(file_out[:, 1], students[:, 1], atol=1e-6)  # w 0: the students
    with pytest.raises(ValueError, match="class_weights hold 3 values for 2 classes"):
        M.blend_rows({**entry, "class_weights": [0.1, 0.2, 0.3]}, students, teacher)


def test_blend_file_reads_the_teachers_percentile_off_the_reference():
    # teacher reference with a tie block at 0: levels 0, .25, .5, .75, 1; the students' reference is Q_s(p) = p
    entry = {"index": [0, -1], "weight": 0.5, "reference": {"columns": [0], "students": [[0, 0.25, 0.5, 0.75, 1]],
                                                             "teacher": [[0, 0, 0, 0.5, 1]]}}  # fmt: skip
    students = np.array([[0.2, 0.3]] * 5, np.float32)
    teacher = np.array([[0.0], [0.25], [1.0], [2.0], [np.nan]], np.float32) * np.array([[1.0, np.nan]])
    out = M.blend_file(entry, students, teacher)
    # t = 0: the tied levels' mean 0.25; 0.25: 0.5 + 0.25 * (0.25 / 0.5); 1 and above: 1; NaN: the students
    np.testing.assert_allclose(out[:, 0], [0.1 + 0.125, 0.1 + 0.3125, 0.6, 0.6, 0.2], atol=1e-6)
    np.testing.assert_allclose(out[:, 1], 0.3)
    with pytest.raises(ValueError, match="no reference distribution"):
        M.blend_file({**entry, "reference": None}, students, teacher)


def test_predict_files_falls_back_per_file_and_names_a_failure(entry: dict, tmp_path: Path):
    good = tmp_path / "a.wav"
    sf.write(good, burst(10.0, 2.0, 2.5), SR)
    bad = tmp_path / "b.ogg"
    bad.write_bytes(b"not audio")
    run = M.predict_files(entry, [good, bad], [2, 2], on_error="fallback")
    assert run.probs.shape == (4, 3) and list(run.failed) == ["b"] and run.audio_seconds == pytest.approx(10.0)
    assert run.probs[0, 0] > 0.5 > run.probs[1, 0] and np.isnan(run.probs[2:]).all()
    with pytest.raises(ValueError, match="b.ogg: the teacher failed"):
        M.predict_files(entry, [good, bad], [2, 2], on_error="raise")
    with pytest.raises(RuntimeError, match="failed on every file"):
        M.predict_files(entry, [bad], [2], on_error="fallback")
    two = M.predict_files(entry, [good, good], [2, 2], workers=2, threads=1)  # worker processes: same numbers
    np.testing.assert_array_equal(two.probs, np.concatenate([run.probs[:2]] * 2))
    assert two.cores == 2


def test_the_teachers_time_adds_to_the_projected_kaggle_minutes():
    run = M.TeacherRun(np.zeros((0, 1)), audio_seconds=600, process_seconds=6.0, startup_seconds=3.0, cores=2)
    assert run.speed()["teacher_seconds_per_soundscape_minute"] == pytest.approx(0.6)
    assert run.speed()["teacher_projected_kaggle_minutes"] == pytest.approx((700 * 0.6 * 2 / 4 + 3) / 60, abs=0.01)
    students = {"seconds_per_soundscape_minute": 0.3, "projected_kaggle_minutes": 1.75, "peak_rss_mb": 100.0}
    total = M.with_teacher_speed(students, run)
    assert total["projected_kaggle_minutes"] == pytest.approx(1.75 + 3.55, abs=0.01)
    assert total["seconds_per_soundscape_minute"] == pytest.approx(0.9)
    assert total["students_projected_kaggle_minutes"] == 1.75
    assert M.with_teacher_speed(students, None) == students


BIRDNET = os.environ.get("BIRDNET_TFLITE", "")


@pytest.mark.skipif(not Path(BIRDNET).is_file(), reason="BIRDNET_TFLITE: BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite")
def test_the_real_birdnet_as_a_member(tmp_path: Path):
    pytest.importorskip("ai_edge_litert")
    import pandas as pd

    from birdclef.audio.decode import load_audio
    from birdclef.infer.teacher_spec import describe

    song = REAL_AUDIO / "hawkears_common_yellowthroat.mp3"
    if not song.is_file():
        pytest.skip(f"{song} is absent")
    taxonomy = pd.DataFrame({"primary_label": ["comyel", "invented"],
                             "scientific_name": ["Geothlypis trichas", "Nulla nulla"]})  # fmt: skip
    entry = describe({"enabled": True}, {"name": "birdnet", "model_path": BIRDNET}, ["comyel", "invented"], taxonomy)
    assert entry["runtime"] == "tflite" and entry["index"][1] == -1 and entry["n_labels"] == 6522
    wave = load_audio(song)
    n = max(1, round(len(wave) / SR / 5))
    got = M.TeacherMember(entry)(wave, n)  # XNNPACK, logits only
    reference, _ = predict_windows(create_teacher("birdnet", {"model_path": BIRDNET}), fit_windows(wave, n))
    np.testing.assert_allclose(got[:, 0], reference[:, entry["index"][0]], atol=1e-3)  # the built-in kernels'
    assert got[:, 0].max() > 0.9 and np.isnan(got[:, 1]).all()


def fit_windows(wave: np.ndarray, n: int) -> np.ndarray:
    """``wave`` zero-padded or cut to ``n`` 5-s windows, as the member fits it."""
    need = n * 5 * SR
    return np.concatenate([wave, np.zeros(max(0, need - len(wave)), np.float32)])[:need]
