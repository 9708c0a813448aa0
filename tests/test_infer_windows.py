"""Tests for birdclef.infer.windows: chunk placement, frame-timeline averaging, window pooling."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import birdclef
from birdclef.infer import windows as W

SR = 32_000


def level_wave(levels: list[float], window_s: float = 5.0) -> np.ndarray:
    """A wave that holds a constant level for each 5-s window."""
    return np.repeat(np.asarray(levels, dtype=np.float32), int(window_s * SR))


def sed_fake(n_frames: int, bias: float = 0.0):
    """Framewise 'probability' = mean level of each frame's samples (+bias in the chunk's first half)."""

    def predict(wave: np.ndarray) -> dict[str, np.ndarray]:
        b, n = wave.shape
        level = np.abs(wave).reshape(b, n_frames, n // n_frames).mean(-1)
        level = level + np.where(np.arange(n_frames) < n_frames // 2, bias, -bias)[None, :]
        frame = np.stack([level, 1 - level], axis=-1)
        return {"clip": frame.max(axis=1), "frame": frame}

    return predict


def cnn_fake(wave: np.ndarray) -> dict[str, np.ndarray]:
    level = np.abs(wave).mean(-1)
    clip = np.stack([level, 1 - level], axis=-1)
    return {"clip": clip, "frame": clip[:, None, :]}


def test_sample_rate_mirrors_package_constant():
    assert W.SAMPLE_RATE == birdclef.SAMPLE_RATE


@pytest.mark.parametrize(
    ("seconds", "expected"), [(1.0, 1), (4.9, 1), (57.4, 11), (57.5, 12), (60.0, 12), (61.0, 12), (63.0, 13)]
)
def test_n_windows_rounds_half_up_with_at_least_one(seconds, expected):
    assert W.n_windows_for(int(seconds * SR)) == expected


def test_chunk_starts_padded_centres_first_and_last_window():
    starts = W.chunk_starts(60 * SR, chunk_s=20, stride_s=5, pad=True)
    assert starts[0] == -7.5 * SR  # chunk [-7.5, 12.5) is centred on window [0, 5)
    assert starts[-1] + 10 * SR == 57.5 * SR  # last chunk centred on window [55, 60)
    assert len(starts) == 12 and np.all(np.diff(starts) == 5 * SR)


def test_chunk_starts_unaligned_stride_still_reaches_the_end():
    starts = W.chunk_starts(60 * SR, chunk_s=10, stride_s=4, pad=False)
    assert starts[0] == 0 and starts[-1] == 50 * SR
    assert np.all(np.diff(starts) > 0) and np.all(np.diff(starts) <= 4 * SR)


def test_chunk_starts_rejects_chunk_shorter_than_window():
    with pytest.raises(ValueError, match="at least window_s"):
        W.chunk_starts(60 * SR, chunk_s=2.5, stride_s=2.5)


@pytest.mark.parametrize(("chunk_s", "stride_s", "n_frames"), [(5, 5, 16), (5, 2.5, 16), (10, 2.5, 32), (20, 5, 64)])
def test_sed_windows_recover_local_levels_for_any_chunking(chunk_s, stride_s, n_frames):
    levels = np.random.default_rng(0).uniform(0.1, 0.9, 12)
    windows, frames = W.predict_file(sed_fake(n_frames), level_wave(levels), chunk_s, stride_s)
    assert windows.shape == (12, 2) and frames.shape == (12 * 16, 2)
    np.testing.assert_allclose(windows[:, 0], levels, atol=1e-5)
    np.testing.assert_allclose(windows[:, 1], 1 - levels, atol=1e-5)


def test_overlapping_chunks_average_position_bias_away():
    levels = np.full(12, 0.5)
    _, frames = W.predict_file(sed_fake(32, bias=0.1), level_wave(levels), chunk_s=10, stride_s=5)
    # Inside the file every bin is seen once in a chunk's first half and once in its second half.
    np.testing.assert_allclose(frames[16:-16, 0], 0.5, atol=1e-6)
    _, single = W.predict_file(sed_fake(16, bias=0.1), level_wave(levels), chunk_s=5, stride_s=5)
    np.testing.assert_allclose(single[:8, 0], 0.6, atol=1e-6)  # the bias shows without overlap
    np.testing.assert_allclose(single[8:16, 0], 0.4, atol=1e-6)


def test_cnn_members_take_clip_scores_of_window_centred_chunks():
    levels = np.zeros(12)
    levels[5] = 1.0
    aligned, frames = W.predict_file(cnn_fake, level_wave(levels), chunk_s=5, stride_s=5)
    assert frames.shape == (12, 2)
    np.testing.assert_allclose(aligned[:, 0], levels, atol=1e-6)
    half, _ = W.predict_file(cnn_fake, level_wave(levels), chunk_s=5, stride_s=2.5)
    # window 5: chunk at 25 s (full overlap, 1.0) + chunks at 22.5 and 27.5 s (half overlap, 0.5 each)
    assert half[5, 0] == pytest.approx((5 * 1.0 + 2.5 * 0.5 + 2.5 * 0.5) / 10)
    assert half[4, 0] == pytest.approx(2.5 * 0.5 / 10)
    assert half[6, 0] == pytest.approx(2.5 * 0.5 / 10)
    assert half[0, 0] == 0.0


def test_context_chunks_for_cnn_are_centred_on_windows():
    seen = []

    def spy(wave):
        seen.append(wave.shape)
        return cnn_fake(wave)

    levels = np.arange(12) / 12
    windows, _ = W.predict_file(spy, level_wave(levels), chunk_s=10, stride_s=5)
    assert seen == [(12, 10 * SR)]
    # A 10-s chunk centred on window w sees half of each neighbour (zeros beyond the ends).
    padded = np.concatenate([[0], levels, [0]])
    expected = padded[:-2] * 0.25 + padded[1:-1] * 0.5 + padded[2:] * 0.25
    np.testing.assert_allclose(windows[:, 0], expected, atol=1e-6)


def test_batch_size_does_not_change_results():
    wave = np.random.default_rng(1).normal(size=60 * SR).astype(np.float32)
    a = W.predict_file(sed_fake(32), wave, chunk_s=10, stride_s=2.5, batch_size=3)
    b = W.predict_file(sed_fake(32), wave, chunk_s=10, stride_s=2.5, batch_size=64)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-6)


def test_short_and_long_files_are_padded_or_cut_to_whole_windows():
    short, _ = W.predict_file(cnn_fake, np.ones(3 * SR, dtype=np.float32))
    assert short.shape == (1, 2) and short[0, 0] == pytest.approx(3 / 5)
    long, _ = W.predict_file(cnn_fake, np.ones(61 * SR, dtype=np.float32))
    assert long.shape == (12, 2)
    forced, _ = W.predict_file(cnn_fake, np.ones(40 * SR, dtype=np.float32), n_windows=12)
    np.testing.assert_allclose(forced[:, 0], [1.0] * 8 + [0.0] * 4)


def test_max_pool_and_frame_transform():
    levels = np.linspace(0.1, 0.9, 12)
    wave = level_wave(levels) * np.tile(np.linspace(0, 2, 5 * SR, dtype=np.float32), 12)
    mean, frames = W.predict_file(sed_fake(16), wave, pool="mean")
    peak, _ = W.predict_file(sed_fake(16), wave, pool="max")
    assert np.all(peak[:, 0] > mean[:, 0])
    np.testing.assert_allclose(peak, frames.reshape(12, 16, 2).max(axis=1), rtol=1e-6)
    doubled, _ = W.predict_file(sed_fake(16), wave, frame_transform=lambda f: 2 * f)
    np.testing.assert_allclose(doubled, 2 * mean, rtol=1e-6)


def test_gaps_in_coverage_are_an_error():
    with pytest.raises(ValueError, match="uncovered"):
        W.predict_file(cnn_fake, np.ones(60 * SR, dtype=np.float32), chunk_s=5, stride_s=10)


def test_bad_predictor_output_is_an_error():
    def wrong_rows(wave):
        return {"clip": np.zeros((1, 2)), "frame": np.zeros((1, 1, 2))}

    with pytest.raises(ValueError, match="rows for a batch"):
        W.predict_file(wrong_rows, np.ones(20 * SR, dtype=np.float32))

    def nan_out(wave):
        return {"clip": np.full((len(wave), 2), np.nan), "frame": np.full((len(wave), 1, 2), np.nan)}

    with pytest.raises(ValueError, match="non-finite"):
        W.predict_file(nan_out, np.ones(20 * SR, dtype=np.float32))


def test_group_pass_equals_one_pass_per_member_and_stacks_chunks_once():
    wave = np.random.default_rng(2).normal(size=37 * SR).astype(np.float32)
    members = [sed_fake(32), cnn_fake, sed_fake(8, bias=0.1)]
    batches = []

    def group(batch):
        batches.append(batch.shape)
        return W.stack_predictors(members)(batch)

    got = W.predict_file_group(group, wave, chunk_s=10, stride_s=2.5, batch_size=4)
    assert len(got) == 3 and len(batches) == len(W.chunk_starts(7 * 5 * SR, 10, 2.5)) // 4 + 1
    for member, (windows, frames) in zip(members, got, strict=True):
        want = W.predict_file(member, wave, chunk_s=10, stride_s=2.5, batch_size=4)
        np.testing.assert_array_equal(windows, want[0])
        np.testing.assert_array_equal(frames, want[1])


def test_group_by_chunking_keeps_member_order_within_and_across_groups():
    a, b = {"chunk_s": 5, "stride_s": 5}, {"chunk_s": 10, "stride_s": 5}
    assert W.group_by_chunking([a, b, dict(a), b]) == [(a, [0, 2]), (b, [1, 3])]
    assert W.group_by_chunking([]) == []


def test_predict_members_places_each_group_output_at_its_member_position():
    wave = np.random.default_rng(3).normal(size=60 * SR).astype(np.float32)
    members = [sed_fake(16), cnn_fake, sed_fake(16, bias=0.2)]
    chunkings = [{"chunk_s": 5, "stride_s": 5}, {"chunk_s": 10, "stride_s": 5}, {"chunk_s": 5, "stride_s": 5}]
    groups = [
        (W.stack_predictors([members[i] for i in positions]), chunking, positions)
        for chunking, positions in W.group_by_chunking(chunkings)
    ]
    got = W.predict_members(groups, wave, n_windows=12, frame_transform=lambda f: f**2)
    for member, chunking, windows in zip(members, chunkings, got, strict=True):
        want, _ = W.predict_file(member, wave, n_windows=12, frame_transform=lambda f: f**2, **chunking)
        np.testing.assert_array_equal(windows, want)
    with pytest.raises(ValueError, match="2 outputs for 1 members"):
        W.predict_members([(W.stack_predictors(members[:2]), chunkings[0], [0])], wave)
    with pytest.raises(ValueError, match=r"positions \[1\] belong to no group"):
        W.predict_members([(W.stack_predictors(members[:1]), chunkings[0], [0]), (cnn_fake_group, {}, [2])], wave)


def cnn_fake_group(wave: np.ndarray) -> list[dict[str, np.ndarray]]:
    return [cnn_fake(wave)]


def test_module_runs_without_torch_or_birdclef(tmp_path: Path):
    path = Path(W.__file__)
    code = (
        "import sys, importlib.util\n"
        "sys.modules['torch'] = None; sys.modules['birdclef'] = None; sys.modules['pandas'] = None\n"
        f"spec = importlib.util.spec_from_file_location('windows', {str(path)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "import numpy as np\n"
        "f = lambda w: {'clip': np.ones((len(w), 3)), 'frame': np.ones((len(w), 1, 3))}\n"
        "print(m.predict_file(f, np.zeros(60 * 32000, dtype=np.float32))[0].shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert out.stdout.strip() == "(12, 3)"
