"""Tests for the training datasets: PseudoBank's crop/label alignment, P3 draw frequencies, unknown cells."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from birdclef import SAMPLE_RATE, WINDOW_SECONDS
from birdclef.train.datasets import PseudoBank

from train_fixtures import MemoryCache

WIN = WINDOW_SECONDS * SAMPLE_RATE
N_WIN = 12
CLASSES = [f"s{i}" for i in range(N_WIN)]


def _code(soundscape: int, window: int) -> float:
    """The constant sample value that window ``window`` of soundscape ``soundscape`` carries (audio says where)."""
    return (soundscape * 100 + window + 1) / 10_000


def _decode(value: float) -> tuple[int, int]:
    code = int(round(value * 10_000)) - 1
    return code // 100, code % 100


def _bank_inputs(n_files: int = 3, seed: int = 0):
    """Soundscapes whose audio encodes (file, window) and whose labels are one-hot in the window index.

    Window w of every file is labelled with class w at a probability that also depends on the file, so a label
    read from the wrong window or the wrong file is detectable.
    """
    rng = np.random.default_rng(seed)
    waves, rows = {}, []
    for f in range(n_files):
        key = f"ss{f}"
        waves[key] = np.concatenate([np.full(WIN, _code(f, w), dtype=np.float32) for w in range(N_WIN)])
        for w in range(N_WIN):
            probs = rng.random(N_WIN).astype(np.float32) * 0.3
            probs[w] = 0.5 + 0.04 * w + 0.01 * f
            window = {"soundscape_id": key, "start_s": float(w * WINDOW_SECONDS),
                      "end_s": float((w + 1) * WINDOW_SECONDS), "weight": 1.0}
            rows.append({**window, **dict(zip(CLASSES, probs, strict=True))})
    return pd.DataFrame(rows), MemoryCache(waves, {k: "train_soundscape" for k in waves})


def _window_label(table: pd.DataFrame, key: str, window: int) -> np.ndarray:
    row = table[(table["soundscape_id"] == key) & (table["start_s"] == window * WINDOW_SECONDS)]
    assert len(row) == 1, (key, window)
    return row[CLASSES].to_numpy(dtype=np.float32)[0]


@pytest.mark.parametrize("crop_s", [10, 20])
def test_long_crops_take_the_labels_of_the_windows_they_hear_after_filtering(crop_s):
    table, cache = _bank_inputs()
    # Windows removed as high_threshold / drop_bottom would: gaps inside every file, rows shuffled.
    dropped = {("ss0", 3), ("ss0", 4), ("ss1", 0), ("ss1", 6), ("ss2", 9), ("ss2", 2)}
    keep = [(r.soundscape_id, int(r.start_s // WINDOW_SECONDS)) not in dropped for r in table.itertuples()]
    filtered = table[keep].sample(frac=1.0, random_state=1).reset_index(drop=True)
    bank = PseudoBank(filtered, {"ss0": 1.0, "ss1": 1.0, "ss2": 1.0}, cache, CLASSES, crop_s)
    span = crop_s // WINDOW_SECONDS
    assert len(bank) > 0
    for c in range(len(bank)):
        wave, label, known, _ = bank._crop(c)
        assert wave.shape == (crop_s * SAMPLE_RATE,)
        heard = [_decode(float(wave[j * WIN + WIN // 2])) for j in range(span)]
        files = {f for f, _ in heard}
        assert len(files) == 1, f"crop {c} reads audio of several files: {heard}"
        windows = [w for _, w in heard]
        assert windows == list(range(windows[0], windows[0] + span)), f"crop {c} audio is not contiguous"
        key = f"ss{files.pop()}"
        assert not any((key, w) in dropped for w in windows), f"crop {c} hears a removed window"
        expected = np.max([_window_label(filtered, key, w) for w in windows], axis=0)
        np.testing.assert_array_equal(label, expected)
        assert known.all()


def test_crops_never_bridge_a_gap_and_count_matches_consecutive_runs():
    table, cache = _bank_inputs(n_files=1)
    filtered = table[~table["start_s"].isin([20.0, 45.0])]  # windows 4 and 9 removed: runs 0-3, 5-8, 10-11
    bank = PseudoBank(filtered, {"ss0": 1.0}, cache, CLASSES, 10)
    starts = sorted(int(bank.starts[i] // WIN) for i in bank.valid)
    assert starts == [0, 1, 2, 5, 6, 7, 10]


def test_crop_length_must_be_whole_windows():
    table, cache = _bank_inputs(n_files=1)
    with pytest.raises(ValueError, match="whole number"):
        PseudoBank(table, {}, cache, CLASSES, 7.5)


def test_p3_draw_frequency_is_per_soundscape_not_per_window():
    table, cache = _bank_inputs(n_files=3)
    # ss0 keeps 12 windows, ss1 keeps 3, ss2 keeps 6: per-window weights would favour ss0 4x over ss1.
    keep = (table["soundscape_id"] == "ss0") | ((table["soundscape_id"] == "ss1") & (table["start_s"] < 15)) | (
        (table["soundscape_id"] == "ss2") & (table["start_s"] >= 30)
    )
    weights = {"ss0": 1.0, "ss1": 2.0, "ss2": 1.0}
    bank = PseudoBank(table[keep], weights, cache, CLASSES, 5)
    n = 10_000
    rng = np.random.default_rng(0)
    picks = rng.choice(len(bank), size=n, p=bank.p)
    drawn = pd.Series(bank.ids[bank.valid[picks]]).value_counts()
    for key, w in weights.items():
        expected = w / sum(weights.values())
        sigma = np.sqrt(expected * (1 - expected) / n)
        assert abs(drawn[key] / n - expected) < 4 * sigma, (key, drawn[key] / n, expected)
    # The public draw goes through the same probabilities: every kept window of a file equally likely.
    # ... drawn in batches and reduced to one sample each: 10,000 whole 5-s crops at once held 19 GB.
    draw, middles = np.random.default_rng(1), []
    for _ in range(n // 500):
        middles += bank.sample(500, draw)[0][:, WIN // 2].tolist()
    files = pd.Series([_decode(float(v))[0] for v in middles]).value_counts()
    assert abs(files[1] / n - 0.5) < 4 * np.sqrt(0.25 / n)


def test_zero_sampler_weights_draw_every_soundscape_equally():
    table, cache = _bank_inputs(n_files=2)
    keep = (table["soundscape_id"] == "ss0") | (table["start_s"] < 10)  # 12 vs 2 windows
    bank = PseudoBank(table[keep], {}, cache, CLASSES, 5)
    per_file = pd.Series(bank.p).groupby(bank.ids[bank.valid]).sum()
    np.testing.assert_allclose(per_file.to_numpy(), [0.5, 0.5])


def test_unknown_cells_are_masked_unless_a_window_is_certain():
    table, cache = _bank_inputs(n_files=1)
    table.loc[table["start_s"] == 0.0, "s3"] = np.nan  # window 0 does not know species s3
    table.loc[table["start_s"] == 5.0, "s3"] = 0.2
    table.loc[table["start_s"] == 10.0, ["s3", "s5"]] = [0.1, np.nan]
    table.loc[table["start_s"] == 15.0, "s5"] = 1.0  # ... but window 3 is sure of s5
    bank = PseudoBank(table, {}, cache, CLASSES, 10)
    by_start = {int(bank.starts[i] // WIN): c for c, i in enumerate(bank.valid)}
    _, label, known, _ = bank._crop(by_start[0])  # windows 0-1
    assert known[3] == 0 and known.sum() == N_WIN - 1
    _, label, known, _ = bank._crop(by_start[1])  # windows 1-2: s3 known again (0.2), s5 unknown
    assert known[3] == 1 and label[3] == pytest.approx(0.2) and known[5] == 0
    _, label, known, _ = bank._crop(by_start[2])  # windows 2-3: s5 unknown in 2, but 1.0 in 3
    assert known[5] == 1 and label[5] == 1.0
