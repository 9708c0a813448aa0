"""Tests for birdclef.infer.blockwise: block-by-block window scores equal a whole-file pass, in bounded memory."""

from __future__ import annotations

import numpy as np
import pytest

from birdclef.infer import blockwise, postprocess
from birdclef.infer.windows import predict_members

SR = 32_000


def sed_predictor(batch: np.ndarray) -> list[dict[str, np.ndarray]]:
    """A SED stand-in with 4 frames per chunk: frame scores follow the level of each quarter of the chunk."""
    quarters = np.abs(batch).reshape(batch.shape[0], 4, -1).mean(axis=2)
    frame = np.stack([np.clip(quarters, 0, 1), 1 - np.clip(quarters, 0, 1)], axis=-1)
    return [{"clip": frame.max(axis=1), "frame": frame}]


def pieces(wave: np.ndarray, size: int):
    for i in range(0, len(wave), size):
        yield wave[i : i + size]


@pytest.mark.parametrize(
    "chunking",
    [
        {"chunk_s": 5.0, "stride_s": 5.0, "pad": True},
        {"chunk_s": 10.0, "stride_s": 2.5, "pad": True},
        {"chunk_s": 20.0, "stride_s": 3.0, "pad": False},  # a stride that is no divisor of the window
    ],
)
def test_blocks_give_the_whole_file_scores(chunking):
    rng = np.random.default_rng(0)
    n = int(177.6 * SR)  # not a whole number of windows: the last one is padded
    wave = (rng.uniform(0, 0.8, 178).repeat(SR)[:n] * rng.choice([-1.0, 1.0], n)).astype(np.float32)
    delta = postprocess.frame_transform({"delta_shift": {"enabled": True, "frames": 2}})
    groups = [(sed_predictor, {**chunking, "batch_size": 7}, [0])]
    spans = []

    def span(sub: np.ndarray, n: int) -> list[np.ndarray]:
        spans.append(len(sub))
        return predict_members(groups, sub, n, delta)

    block, margin = blockwise.plan([chunking], block_s=20.0)
    assert block % (3 if chunking["stride_s"] == 3.0 else 1) == 0 and margin * 5 >= 2 * chunking["chunk_s"]
    [scores], total = blockwise.score_blocks(pieces(wave, 12_345), span, block, margin)
    n_windows = blockwise.n_windows_for(len(wave), 0.1)
    assert total == len(wave) and scores.shape == (n_windows, 2) and n_windows == 36
    [whole] = predict_members(groups, wave, n_windows, delta)
    np.testing.assert_allclose(scores, whole, atol=1e-6)
    assert len(spans) > 3 and max(spans) <= (block + 2 * margin) * 5 * SR  # never the whole file at once


def test_a_short_recording_is_one_span_as_before():
    wave = np.full(7 * SR, 0.25, np.float32)
    seen = []

    def span(sub, n):
        seen.append((len(sub), n))
        return [np.arange(n, dtype=np.float32)[:, None]]

    [rows], total = blockwise.score_blocks([wave], span, 12, 2)
    assert seen == [(7 * SR, 2)] and total == 7 * SR and rows[:, 0].tolist() == [0.0, 1.0]
