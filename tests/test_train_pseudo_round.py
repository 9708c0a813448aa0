"""Tests for one pseudo-labelling round: per-round transforms, P9 source, P5 1-s file average, unknown cells."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from birdclef import SAMPLE_RATE
from birdclef.train.pseudo import teacher_predictions
from birdclef.train.pseudo_round import build_round, clip_source, label_soundscapes, round_entry

from train_fixtures import MemoryCache

CLASSES = ["a", "b", "c"]


def _cache(n_files: int = 2, seconds: int = 20) -> MemoryCache:
    rng = np.random.default_rng(0)
    waves = {f"ss{i}": rng.uniform(-1, 1, seconds * SAMPLE_RATE).astype(np.float32) * (i + 1) / 4
             for i in range(n_files)}
    return MemoryCache(waves, {k: "train_soundscape" for k in waves})


def _loudness_teacher(wave: np.ndarray) -> dict[str, np.ndarray]:
    """clip = chunk loudness per class (scaled), frames = 4 frames of their own loudness, differing from the clip."""
    b, n = wave.shape
    frames = np.abs(wave).reshape(b, 4, n // 4).mean(axis=2)  # (B, 4)
    frame = np.stack([frames, frames * 0.5, np.full_like(frames, 0.1)], axis=-1)
    clip = np.stack([frames.mean(axis=1) * 0.3, frames.mean(axis=1) * 0.2, np.full(b, 0.9)], axis=-1)
    return {"clip": clip.astype(np.float32), "frame": frame.astype(np.float32)}


def _cfg(**over):
    cfg = {"chunk_s": 5, "stride_s": 5, "pool": "mean", "block": 1, "source": "frame", "transforms": {}}
    cfg.update(over)
    return cfg


def test_round_transforms_override_the_section():
    cfg = {"rounds": [{"k": 0, "tau": 1.0}, {"k": 1, "tau": 0.65, "transforms": {"low_threshold": 0.1}}],
           "transforms": {"low_threshold": 0.0, "drop_bottom": 0.2}}
    assert round_entry(cfg, 0)["transforms"] == {"low_threshold": 0.0, "drop_bottom": 0.2}
    assert round_entry(cfg, 1)["transforms"] == {"low_threshold": 0.1, "drop_bottom": 0.2}
    with pytest.raises(ValueError, match="k = 5"):
        round_entry(cfg, 5)


def test_source_frame_labels_from_frames_and_clip_from_clips(tmp_path):
    cache = _cache()
    frame, _, _ = label_soundscapes([_loudness_teacher], cache, ["ss0", "ss1"], _cfg(), tmp_path / "f", {})
    clip, _, _ = label_soundscapes([_loudness_teacher], cache, ["ss0", "ss1"], _cfg(source="clip"), tmp_path / "c",
                                   {})
    np.testing.assert_allclose(frame[..., 2], 0.1, rtol=1e-6)  # P9: the frames' value, not the clip's 0.9
    np.testing.assert_allclose(clip[..., 2], 0.9, rtol=1e-6)
    np.testing.assert_allclose(clip[..., 0] / 0.3, frame[..., 0], rtol=1e-5)


def test_clip_source_wrapper_repeats_the_clip_as_one_frame():
    out = clip_source(_loudness_teacher)(np.ones((2, 5 * SAMPLE_RATE), dtype=np.float32))
    assert out["frame"].shape == (2, 1, 3)
    np.testing.assert_array_equal(out["frame"][:, 0], out["clip"])


def test_p5_file_average_comes_from_the_one_second_stride(tmp_path):
    cache = _cache()
    cfg = _cfg(transforms={"file_blend": 0.3, "file_blend_stride_s": 1.0})
    windows, file_mean, _ = label_soundscapes([_loudness_teacher], cache, ["ss0", "ss1"], cfg, tmp_path / "s", {})
    fine, _ = teacher_predictions([_loudness_teacher], cache, ["ss0", "ss1"], 5.0, 1.0, progress=False)
    np.testing.assert_allclose(file_mean, fine.mean(axis=1), rtol=1e-6)
    entry = {"tau": 1.0, "transforms": cfg["transforms"]}
    out = build_round(windows, ["ss0", "ss1"], CLASSES, entry, file_mean)
    expected = 0.7 * windows + 0.3 * file_mean[:, None, :]
    np.testing.assert_allclose(out.labels.probs, expected, rtol=1e-5)
    without, _, _ = label_soundscapes([_loudness_teacher], cache, ["ss0", "ss1"], _cfg(), tmp_path / "n", {})
    assert not np.allclose(file_mean, without.mean(axis=1))  # the 1-s stride is not the 5-s windows' mean


def test_build_round_table_keeps_unknown_cells_and_scores_known_ones():
    rng = np.random.default_rng(0)
    windows = rng.uniform(0, 1, (2, 12, 3)).astype(np.float32)
    windows[:, :, 1] = np.nan  # a species no teacher covers
    entry = {"tau": 1.0, "transforms": {"high_threshold": 0.3}}
    truth_rows = []
    for s in ("ss0", "ss1"):
        for w in range(12):
            truth_rows.append({"row_id": f"{s}_{5 * (w + 1)}", "a": int(windows[int(s[-1]), w, 0] > 0.5), "b": 0,
                               "c": int(w % 2)})
    out = build_round(windows, ["ss0", "ss1"], CLASSES, entry, truth=pd.DataFrame(truth_rows))
    assert out.table["b"].isna().all() and not out.table["a"].isna().any()
    assert len(out.table) == int((np.nanmax(windows, axis=2) > 0.3).sum())
    assert out.metrics["share_cells_unknown"] == pytest.approx(1 / 3)
    # Species a's truth is its own probability thresholded: a perfect ranking for a, chance-level for c.
    assert out.metrics["auc_raw"] > 0.7
    for tag in ("raw", "labels"):  # 95% intervals over the two soundscapes, resampled
        assert out.metrics[f"auc_{tag}_ci_low"] <= out.metrics[f"auc_{tag}"] <= out.metrics[f"auc_{tag}_ci_high"]
    np.testing.assert_allclose(out.sampler["sampler_weight"], np.nanmax(np.where(
        (np.nanmax(windows, axis=2) > 0.3)[..., None], np.nan_to_num(windows), 0.0), axis=1).sum(axis=1), rtol=1e-6)


def _teacher_folder(tmp_path, ids, n_win, probs):
    """A teacher stage output folder in its documented layout (teachers/outputs.py), species b uncovered."""
    folder = tmp_path / "teacher"
    (folder / "train_soundscape").mkdir(parents=True)
    rows = [{"soundscape_id": s, "row_id": f"{s}_{5 * (w + 1)}", "start_s": 5.0 * w, "end_s": 5.0 * (w + 1)}
            for s in ids for w in range(n_win)]
    table = pd.DataFrame(rows)
    for c, name in enumerate(CLASSES):
        table[name] = probs[..., c].reshape(-1)
    table.to_parquet(folder / "train_soundscape" / "probs.parquet")
    np.save(folder / "train_soundscape" / "embeddings.npy", np.zeros((len(rows), 4), dtype=np.float32))
    info = {"enabled": True, "splits": ["train_soundscape"], "species": CLASSES, "covered": ["a", "c"]}
    (folder / "teacher.json").write_text(json.dumps(info))
    return folder


def test_foundation_teacher_joins_the_round_on_the_species_it_covers(tmp_path):
    """T3: (1 - w) students + w teacher on covered species; an uncovered species keeps the students' label."""
    from birdclef.train.pseudo_round import with_foundation

    students = np.full((2, 12, 3), 0.2, dtype=np.float32)
    teacher = np.full((2, 12, 3), 0.8, dtype=np.float32)
    teacher[..., 1] = np.nan
    folder = _teacher_folder(tmp_path, ["ss0", "ss1"], 12, teacher)
    out = with_foundation(students, ["ss0", "ss1"], folder, 0.25)
    np.testing.assert_allclose(out[..., 0], 0.75 * 0.2 + 0.25 * 0.8, rtol=1e-6)
    np.testing.assert_allclose(out[..., 1], 0.2)
    np.testing.assert_array_equal(with_foundation(students, ["ss0", "ss1"], None, 0.0), students)
    with pytest.raises(SystemExit, match="ss9"):
        with_foundation(students, ["ss0", "ss9"], folder, 0.25)
    (folder / "teacher.json").write_text('{"enabled": false}')
    with pytest.raises(SystemExit, match="teacher_weight"):
        with_foundation(students, ["ss0", "ss1"], folder, 0.25)


def test_percentile_teacher_blend_keeps_the_students_scale_and_takes_the_teachers_ranking(tmp_path):
    """T3 ``teacher_blend: percentile``: with w = 1 a covered species' targets are the students' own values (the same
    multiset over all windows of the round) in the teacher's order; w = 0.5 is the mean of that and the students;
    an uncovered species keeps the students' values; the linear blend would instead shrink them to the teacher's
    small scale."""
    from birdclef.train.pseudo_round import with_foundation

    rng = np.random.default_rng(0)
    students = rng.uniform(0.3, 0.9, size=(2, 12, 3)).astype(np.float32)
    teacher = rng.uniform(0.0, 0.05, size=(2, 12, 3)).astype(np.float32)  # a foundation teacher's low sigmoid scale
    teacher[..., 1] = np.nan
    ids = ["ss0", "ss1"]
    folder = _teacher_folder(tmp_path, ids, 12, teacher)
    full = with_foundation(students, ids, folder, 1.0, "percentile")
    s, t, f = students[..., 0].ravel(), teacher[..., 0].ravel(), full[..., 0].ravel()
    np.testing.assert_allclose(np.sort(f), np.sort(s), rtol=1e-6)  # the students' scale
    np.testing.assert_array_equal(np.argsort(f), np.argsort(t))  # the teacher's ranking across files and windows
    np.testing.assert_allclose(full[..., 1], students[..., 1])  # uncovered: the students alone
    half = with_foundation(students, ids, folder, 0.5, "percentile")
    np.testing.assert_allclose(half[..., 0], 0.5 * students[..., 0] + 0.5 * full[..., 0], rtol=1e-5)
    linear = with_foundation(students, ids, folder, 1.0, "linear")
    np.testing.assert_allclose(linear[..., 0], teacher[..., 0], rtol=1e-6)
    assert full[..., 0].mean() > 10 * linear[..., 0].mean()
