"""Tests for birdclef.infer.runner: streaming over files, workers, bad input, combination and speed figures."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from birdclef.infer import ensemble, postprocess
from birdclef.infer import runner as R

SR = 32_000
CLASSES = ["a", "b", "c"]


def level_predictor(member, threads):
    """Numpy stand-in for a member: class scores follow the chunk level; member 'scale' changes the output."""
    scale = member.get("scale", 1.0)

    def predict(wave):
        level = np.clip(np.abs(wave).mean(axis=1) * scale, 0, 1)
        clip = np.stack([level, 1 - level, np.full_like(level, 0.5)], axis=-1)[:, : member.get("width", 3)]
        return {"clip": clip, "frame": clip[:, None, :]}

    return predict


def write_audio(path: Path, levels, fmt="OGG") -> Path:
    wave = np.repeat(np.asarray(levels, dtype=np.float32), 5 * SR)
    sign = np.where(np.arange(wave.size) % 2 == 0, 1.0, -1.0).astype(np.float32)
    sf.write(path, wave * sign, SR, format=fmt)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("soundscapes")
    for i in range(4):
        write_audio(d / f"site_{i}.wav", rng.uniform(0.05, 0.6, 12), fmt="WAV")
    write_audio(d / "site_9.ogg", rng.uniform(0.05, 0.6, 12))
    (d / "notes.txt").write_text("not audio")
    return d


MEMBERS = [{"name": "m1"}, {"name": "m2", "scale": 0.5}]


def test_files_sorted_and_workers_change_nothing(folder: Path):
    files = R.list_soundscapes(folder)
    assert [f.name for f in files] == ["site_0.wav", "site_1.wav", "site_2.wav", "site_3.wav", "site_9.ogg"]
    one = R.predict_folder(files, MEMBERS, level_predictor, workers=1)
    two = R.predict_folder(files, MEMBERS, level_predictor, workers=2, threads=1)
    assert one.stems == two.stems == [f.stem for f in files]
    assert one.n_windows == [12] * 5
    for a, b in zip(one.members, two.members, strict=True):
        assert a.shape == (60, 3)
        np.testing.assert_array_equal(a, b)
    assert two.cores == 2 and one.audio_seconds == pytest.approx(300.0)


def test_predictions_follow_the_audio(folder: Path):
    levels = np.random.default_rng(0).uniform(0.05, 0.6, 12)
    preds = R.predict_folder([folder / "site_0.wav"], MEMBERS, level_predictor)
    np.testing.assert_allclose(preds.members[0][:, 0], levels, atol=1e-4)
    np.testing.assert_allclose(preds.members[1][:, 0], levels * 0.5, atol=1e-4)


def test_member_level_post_processing_is_applied(folder: Path):
    files = R.list_soundscapes(folder)[:1]
    plain = R.predict_folder(files, MEMBERS[:1], level_predictor)
    post = {"peak_tta": {"enabled": True, "peak": 0.1, "weight": 1.0}}
    peaked = R.predict_folder(files, MEMBERS[:1], level_predictor, post=post)
    assert not np.allclose(plain.members[0], peaked.members[0])
    np.testing.assert_allclose(peaked.members[0][:, 0], 0.1, atol=1e-4)  # every chunk normalised to peak 0.1


def test_finish_combines_then_post_processes_per_file(folder: Path):
    preds = R.predict_folder(R.list_soundscapes(folder), MEMBERS, level_predictor)
    post = {"smoothing": {"kernel": [0.1, 0.8, 0.1]}, "topk_boost": {"enabled": True, "k": 1}}
    out = R.finish(preds, CLASSES, [0.25, 0.75], [None, None], "mean", post)
    combined = ensemble.combine(preds.members, [0.25, 0.75], CLASSES)
    np.testing.assert_allclose(out[12:24], postprocess.apply_file(combined[12:24], post), rtol=1e-6)
    assert out.shape == (60, 3) and out.dtype == np.float32


def test_corrupt_file_raises_naming_it_or_falls_back(folder: Path, tmp_path: Path, caplog):
    folder = Path(shutil.copytree(folder, tmp_path / "copy"))
    bad = folder / "site_5.ogg"
    bad.write_bytes(b"OggS" + bytes(100))
    files = R.list_soundscapes(folder)
    with pytest.raises(R.InferenceError, match="site_5.ogg"):
        R.predict_folder(files, MEMBERS, level_predictor)
    with caplog.at_level(logging.WARNING):
        preds = R.predict_folder(files, MEMBERS, level_predictor, on_error="fallback", workers=2, threads=1)
    assert list(preds.failed) == ["site_5"] and preds.n_windows[4] == 12
    out = R.finish(preds, CLASSES, [1, 1], [None, None])
    rows = slice(4 * 12, 5 * 12)
    ok = np.r_[0:48, 60:72]
    np.testing.assert_allclose(out[rows], np.broadcast_to(out[ok].mean(axis=0), (12, 3)), rtol=1e-6)
    assert np.isfinite(out).all()


def test_short_long_and_silent_files_still_give_their_rows(tmp_path: Path, caplog):
    d = tmp_path / "odd"
    d.mkdir()
    write_audio(d / "short.wav", [0.3] * 6, fmt="WAV")
    write_audio(d / "long.wav", [0.3] * 14, fmt="WAV")
    write_audio(d / "silent.wav", [0.0] * 12, fmt="WAV")
    with caplog.at_level(logging.WARNING):
        preds = R.predict_folder(R.list_soundscapes(d), MEMBERS[:1], level_predictor, file_seconds=60)
    assert preds.n_windows == [12, 12, 12]
    assert "zero-padded to 60 s" in caplog.text and "cut to 60 s" in caplog.text and "silent" in caplog.text
    short = preds.members[0][12:24, 0]  # files sorted: long, short, silent
    np.testing.assert_allclose(short, [0.3] * 6 + [0.0] * 6, atol=1e-4)
    own = R.predict_folder(R.list_soundscapes(d), MEMBERS[:1], level_predictor, file_seconds=None)
    assert own.n_windows == [14, 6, 12]


def test_taxon_group_member_merges_into_full_classes(folder: Path):
    members = [{"name": "all"}, {"name": "group", "width": 2}]
    preds = R.predict_folder(R.list_soundscapes(folder)[:2], members, level_predictor)
    assert preds.members[1].shape == (24, 2)
    out = R.finish(preds, CLASSES, [1, 1], [None, ["a", "b"]], post={"smoothing": {"enabled": False}})
    np.testing.assert_allclose(out[:, 2], 0.5)


class CountingFactory:
    """``level_predictor`` members that also offer ``group`` (as ``ExportFactory`` does), counting batches."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, ...]] = []

    def __call__(self, member, threads):
        return level_predictor(member, threads)

    def group(self, members, threads):
        predictors = [level_predictor(m, threads) for m in members]

        def predict(wave):
            self.batches.append(tuple(wave.shape))
            return [p(wave) for p in predictors]

        return predict


def test_members_sharing_a_chunking_run_in_one_pass_with_unchanged_scores(folder: Path):
    files = R.list_soundscapes(folder)[:2]
    members = [{"name": "m1"}, {"name": "ctx", "predict": {"chunk_s": 10}}, {"name": "m2", "scale": 0.5}]
    factory = CountingFactory()
    grouped = R.predict_folder(files, members, factory, predict={"batch_size": 16})
    # Per file: one 12-chunk batch for m1 + m2 together, one for the 10-s member: 2 files x 2 groups.
    assert factory.batches == [(12, 5 * SR), (12, 10 * SR)] * 2
    plain = R.predict_folder(files, members, level_predictor, predict={"batch_size": 16})  # no group: stacked
    for a, b in zip(grouped.members, plain.members, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(grouped.members[2][:, 0], 0.5 * grouped.members[0][:, 0], atol=1e-6)


def test_speed_projection_formula():
    preds = R.FolderPredictions(["x"], [12], [], audio_seconds=600, process_seconds=3.0, startup_seconds=6.0)
    preds.cores = 2
    speed = preds.speed()
    assert speed["seconds_per_soundscape_minute"] == pytest.approx(0.3)
    assert speed["projected_kaggle_minutes"] == pytest.approx((700 * 0.3 * 2 / 4 + 6.0) / 60, abs=0.01)


def test_a_long_file_is_decoded_only_as_far_as_it_is_kept(tmp_path: Path, monkeypatch, caplog):
    d = tmp_path / "long"
    d.mkdir()
    levels = [0.1, 0.2, 0.3, 0.4] * 9  # 180 s, of which file_seconds keeps 60
    write_audio(d / "long.wav", levels, fmt="WAV")
    decoded = []
    real = R.load_audio

    def spy(*args, **kwargs):
        wave = real(*args, **kwargs)
        decoded.append(wave.shape[0])
        return wave

    monkeypatch.setattr(R, "load_audio", spy)
    with caplog.at_level(logging.WARNING):
        preds = R.predict_folder(R.list_soundscapes(d), MEMBERS[:1], level_predictor, file_seconds=60)
    assert decoded == [60 * SR]  # not 180 s
    assert "180.00 s long, cut to 60 s" in caplog.text  # the whole length still in the warning
    np.testing.assert_allclose(preds.members[0][:, 0], levels[:12], atol=1e-4)
    # Speed counts the 60 s that were processed, not the file's 180 s.
    assert preds.audio_seconds == 60.0


def test_speed_counts_only_the_audio_processed(tmp_path: Path):
    d = tmp_path / "mix"
    d.mkdir()
    write_audio(d / "a_long.wav", [0.2] * 36, fmt="WAV")  # 180 s: 60 s processed
    write_audio(d / "b_ok.wav", [0.2] * 12, fmt="WAV")  # 60 s
    (d / "c_bad.ogg").write_bytes(b"OggS" + bytes(100))  # nothing processed
    preds = R.predict_folder(R.list_soundscapes(d), MEMBERS[:1], level_predictor, on_error="fallback")
    assert preds.audio_seconds == 120.0
    preds.process_seconds = 1.0
    assert preds.speed()["seconds_per_soundscape_minute"] == pytest.approx(0.5)


def test_skip_mode_lists_a_bad_file_once_named_and_keeps_going(tmp_path: Path, caplog):
    d = tmp_path / "skip"
    d.mkdir()
    write_audio(d / "a.wav", [0.2] * 12, fmt="WAV")
    (d / "b.ogg").write_bytes(b"OggS" + bytes(100))
    whole = write_audio(d / "c.ogg", [0.3] * 12)
    data = whole.read_bytes()
    whole.write_bytes(data[: len(data) // 2])  # decodes partly
    with caplog.at_level(logging.WARNING):
        preds = R.predict_folder(R.list_soundscapes(d), MEMBERS[:1], level_predictor, on_error="skip",
                                 file_seconds=None, on_truncated="raise")  # fmt: skip
    assert sorted(preds.failed) == ["b", "c"] and preds.n_windows == [12, 0, 0]
    assert preds.failed["c"].startswith("truncated: the last Ogg page is cut") and not caplog.records
    with caplog.at_level(logging.WARNING):
        R.predict_folder(R.list_soundscapes(d), MEMBERS[:1], level_predictor, on_error="fallback")
    [line] = [r.getMessage() for r in caplog.records if "b.ogg" in r.getMessage()]
    assert line.count("b.ogg") == 1 and "fallback" in line
    with pytest.raises(R.InferenceError) as err:
        R.predict_folder(R.list_soundscapes(d), MEMBERS[:1], level_predictor)
    assert str(err.value).count("b.ogg") == 1
