"""Tests for `birdclef predict`: inputs, per-window CSV and Raven tables, skip/resume, corrupt files, real audio."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from click.testing import CliRunner
from teacher_fixtures import stand_in_entry

from birdclef.infer.bundle import build_bundle
from birdclef.infer.predict import (
    RAVEN_COLUMNS,
    Scorer,
    find_audio,
    predict_command,
    predict_paths,
    raven_table,
    window_table,
)
from birdclef.infer.teacher_member import TeacherMember

from export_fixtures import CLASSES, SR, exported, soundscape

REAL_AUDIO = Path(__file__).resolve().parents[2] / "shared" / "real-audio"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return exported(tmp_path_factory)


@pytest.fixture(scope="module")
def scorer(built):
    return Scorer(built["export"], backend="onnxruntime", threads=1)


@pytest.fixture
def recordings(tmp_path: Path) -> Path:
    """A 60-s mono wav at 32 kHz, a stereo 12-s flac at 44.1 kHz in a sub-folder, a 3-s ogg at 22.05 kHz, junk."""
    folder = tmp_path / "recordings"
    (folder / "site_b").mkdir(parents=True)
    sf.write(folder / "dawn.wav", soundscape(60, 0), SR)
    sf.write(folder / "site_b" / "dusk.flac", soundscape(12, 1, sr=44_100, channels=2), 44_100)
    sf.write(folder / "short.ogg", soundscape(3, 2, sr=22_050), 22_050)
    (folder / "broken.mp3").write_bytes(b"ID3 but nothing after")
    (folder / "notes.txt").write_text("not audio")
    return folder


def test_find_audio_walks_folders_and_keeps_sub_folder_names(recordings: Path, tmp_path: Path):
    found = find_audio([recordings])
    assert [str(stem) for _, stem in found] == ["broken", "dawn", "short", "site_b/dusk"]
    assert find_audio([recordings / "dawn.wav"]) == [(recordings / "dawn.wav", Path("dawn"))]
    other = tmp_path / "other"
    other.mkdir()
    sf.write(other / "dawn.wav", soundscape(5, 3), SR)
    with pytest.raises(ValueError, match="dawn.csv"):
        find_audio([recordings / "dawn.wav", other / "dawn.wav"])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_audio([tmp_path / "nowhere"])


def test_window_table_lists_the_top_k_species_or_every_column():
    scores = np.array([[0.1, 0.7, 0.2, 0.0], [0.9, 0.05, 0.3, 0.6]], dtype=np.float32)
    top = window_table("a.wav", scores, CLASSES, duration_s=8.0, top_k=2)
    assert list(top.columns) == ["file", "start", "end", "species_1", "prob_1", "species_2", "prob_2"]
    assert top["end"].tolist() == [5.0, 8.0]  # the last window ends with the file
    assert top[["species_1", "species_2"]].values.tolist() == [["sp_b", "frog1"], ["sp_a", "ins1"]]
    assert top["prob_1"].tolist() == pytest.approx([0.7, 0.9])
    wide = window_table("a.wav", scores, CLASSES, 10.0, all_columns=True)
    assert list(wide.columns) == ["file", "start", "end", *CLASSES]
    np.testing.assert_allclose(wide[CLASSES].to_numpy(), scores)


def test_raven_table_has_one_selection_per_window_and_species_over_the_threshold():
    scores = np.array([[0.1, 0.7, 0.8, 0.0], [0.9, 0.05, 0.3, 0.5]], dtype=np.float32)
    table = raven_table(scores, CLASSES, duration_s=7.5, threshold=0.5, freq_range=(40.0, 15_000.0))
    assert tuple(table.columns) == RAVEN_COLUMNS
    assert table["Selection"].tolist() == [1, 2, 3, 4]
    assert table["Species"].tolist() == ["frog1", "sp_b", "sp_a", "ins1"]  # by time, then confidence
    assert table["Begin Time (s)"].tolist() == [0.0, 0.0, 5.0, 5.0]
    assert table["End Time (s)"].tolist() == [5.0, 5.0, 7.5, 7.5]
    assert set(table["View"]) == {"Spectrogram 1"} and set(table["Low Freq (Hz)"]) == {40.0}
    assert raven_table(scores, CLASSES, 10.0, 0.95, (0.0, 1.0)).empty


def test_predict_writes_tables_per_file_skips_done_files_and_reports_a_corrupt_one(
    scorer: Scorer, recordings: Path, tmp_path: Path
):
    out = tmp_path / "out"
    report = predict_paths([recordings], scorer, out, top_k=2, threshold=0.0, progress=False)
    assert sorted(p.name for p in report.written) == ["dawn.wav", "dusk.flac", "short.ogg"]
    assert list(report.failed) == [recordings / "broken.mp3"]
    dawn = pd.read_csv(out / "dawn.csv")
    assert len(dawn) == 12 and dawn["start"].tolist()[:2] == [0.0, 5.0] and dawn["file"][0].endswith("dawn.wav")
    assert pd.read_csv(out / "site_b" / "dusk.csv")["end"].tolist() == [5.0, 10.0, 12.0]
    assert len(pd.read_csv(out / "short.csv")) == 1
    raven = pd.read_csv(out / "dawn.selections.txt", sep="\t")
    assert tuple(raven.columns) == RAVEN_COLUMNS and len(raven) == 12 * len(CLASSES)  # threshold 0: all
    assert raven["Confidence"].between(0, 1).all() and set(raven["Species"]) == set(CLASSES)
    assert not (out / "broken.csv").exists()

    again = predict_paths([recordings], scorer, out, progress=False)
    assert len(again.skipped) == 3 and not again.written
    (out / "short.selections.txt").unlink()  # half-done file: redone
    assert [p.name for p in predict_paths([recordings], scorer, out, progress=False).written] == ["short.ogg"]
    assert len(predict_paths([recordings], scorer, out, overwrite=True, progress=False).written) == 3


def test_an_interrupted_run_keeps_finished_files_and_resumes(scorer: Scorer, recordings: Path, tmp_path: Path):
    class Interrupting:
        classes, freq_range = scorer.classes, scorer.freq_range

        def score_file(self, path: Path):
            if Path(path).stem == "short":  # the file after dawn.wav (broken.mp3 fails in decoding)
                raise KeyboardInterrupt
            return scorer.score_file(path)

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        predict_paths([recordings], Interrupting(), out, progress=False)
    assert (out / "dawn.csv").is_file() and not (out / "short.csv").exists()
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no half-written temporary left
    resumed = predict_paths([recordings], scorer, out, progress=False)
    assert [p.name for p in resumed.skipped] == ["dawn.wav"] and len(resumed.written) == 2


def test_predict_command_takes_an_export_a_bundle_or_a_checkpoint(built, recordings: Path, tmp_path: Path):
    bundle = tmp_path / "bundle"
    build_bundle(built["export"], bundle, tmp_path)
    checkpoint = built["spec"]["members"][0]["checkpoint"]
    results = {}
    for name, model in (("export", built["export"]), ("bundle", bundle), ("torch", checkpoint)):
        out = tmp_path / name
        args = [str(recordings), "--model" if name != "bundle" else "--bundle", str(model), "--out", str(out)]
        result = CliRunner().invoke(predict_command, [*args, "--all-columns", "--threads", "1"])
        assert result.exit_code == 1 and "broken.mp3" in result.output  # reported, the others are written
        assert "3 written" in result.output
        results[name] = pd.read_csv(out / "dawn.csv")[CLASSES].to_numpy()
    np.testing.assert_allclose(results["export"], results["bundle"], atol=1e-6)
    assert results["torch"].shape == results["export"].shape


def test_a_teacher_member_joins_each_recording_against_the_stored_reference(built, scorer: Scorer, tmp_path: Path):
    entry = stand_in_entry(tmp_path / "stand_in", CLASSES, {"sp_a": "Omnia sonora"}, weight=0.5, method="rank")
    # reference: teacher scores uniform on [0, 1] (F_t(t) = t), students' uniform on [0, 0.4] (Q_s(p) = 0.4 p)
    entry["reference"] = {"columns": [0], "students": [np.linspace(0, 0.4, 51).tolist()],
                          "teacher": [np.linspace(0, 1, 51).tolist()]}  # fmt: skip
    export = tmp_path / "export"
    shutil.copytree(built["export"], export)
    spec = json.loads((export / "export_spec.json").read_text())
    spec["ensemble"]["teacher"] = entry
    (export / "export_spec.json").write_text(json.dumps(spec))
    wave = soundscape(22, 1)  # 5 windows, the last one padded
    students, teacher = scorer(wave), TeacherMember(entry)(wave, 5)[:, 0]
    assert np.ptp(teacher) > 0.05  # the stand-in hears the gated tone in some windows only
    bundle = tmp_path / "bundle"
    build_bundle(export, bundle, tmp_path)
    for model in (export, bundle):  # the bundle's teacher files are under model/teacher/
        got = Scorer(model, backend="onnxruntime", threads=1)(wave)
        np.testing.assert_allclose(got[:, 0], 0.5 * students[:, 0] + 0.5 * 0.4 * teacher, atol=1e-6)
        np.testing.assert_array_equal(got[:, 1:], students[:, 1:])  # species the teacher lacks: the students'


@pytest.mark.skipif(not REAL_AUDIO.is_dir(), reason="shared/real-audio is not present")
def test_predict_runs_over_real_recordings_of_any_rate_and_format(scorer: Scorer, tmp_path: Path):
    report = predict_paths([REAL_AUDIO], scorer, tmp_path / "out", progress=False)
    assert not report.failed, report.failed
    assert any(p.suffix == ".mp3" for p in report.written) and len(report.written) >= 10
    forest = pd.read_csv(tmp_path / "out" / "opensoundscape_1min_forest.csv")
    assert len(forest) == 12 and forest["end"].iloc[-1] == pytest.approx(60.0)
    assert forest["prob_1"].between(0, 1).all()


def test_a_long_recording_streams_in_blocks_with_the_whole_file_scores(scorer: Scorer, tmp_path: Path, monkeypatch):
    from birdclef.audio.decode import load_audio
    from birdclef.infer import blockwise

    path = tmp_path / "long.flac"
    sf.write(path, soundscape(197.0, 3, sr=44_100), 44_100)  # 40 windows, resampled on the way
    spans: list[int] = []
    real = blockwise.score_blocks

    def spy(blocks, score_span, *args):
        def span(wave, n):
            spans.append(len(wave))
            return score_span(wave, n)

        return real(blocks, span, *args)

    monkeypatch.setattr(blockwise, "score_blocks", spy)
    scores, duration, stats = scorer.score_file(path)
    assert duration == pytest.approx(197.0) and scores.shape == (40, len(CLASSES)) and not stats.silent
    block, margin = scorer._plan
    assert len(spans) == 3 and max(spans) <= (block + 2 * margin) * 5 * SR < 197 * SR  # never the whole file
    monkeypatch.setattr(blockwise, "score_blocks", real)
    whole = scorer._span(load_audio(path), 40)[0]  # one pass over the whole decoded file
    np.testing.assert_allclose(scores, whole, atol=2e-5)


def test_predict_warns_once_about_digital_silence_and_a_cut_file(scorer: Scorer, tmp_path: Path, caplog):
    import logging

    folder = tmp_path / "odd"
    folder.mkdir()
    sf.write(folder / "quiet.wav", np.zeros(12 * SR, np.float32), SR)
    sf.write(folder / "cut.ogg", soundscape(30, 4), SR)
    data = (folder / "cut.ogg").read_bytes()
    (folder / "cut.ogg").write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        report = predict_paths([folder], scorer, tmp_path / "out", progress=False)
    assert sorted(p.name for p in report.written) == ["cut.ogg", "quiet.wav"]  # both still scored
    for name, what in (("quiet.wav", "silent (all samples are zero)"), ("cut.ogg", "truncated: the last Ogg page")):
        [line] = [r.getMessage() for r in caplog.records if name in r.getMessage()]
        assert what in line and line.count(name) == 1
    cut = pd.read_csv(tmp_path / "out" / "cut.csv")
    assert 2 <= len(cut) < 6  # what decodes of the 30 s, not six windows of padding


def test_the_mmap_threshold_is_held_where_glibc_allocates():
    """predict holds glibc's mmap threshold (M_MMAP_THRESHOLD) so a long recording's freed block buffers return to
    the system; elsewhere it is a no-op that says so."""
    import platform

    from birdclef.infer.predict import fix_mmap_threshold

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert fix_mmap_threshold() is True
