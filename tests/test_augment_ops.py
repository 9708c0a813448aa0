"""Tests for birdclef.train.augment_ops: mixing, masks, SNR noise, band filters, noise banks, options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from birdclef.train.augment_ops import (
    NoiseBank,
    add_at_snr,
    band_gain_db,
    mix,
    mix_masks,
    partners,
    random_filter,
    resolve_options,
    rms,
    section,
    time_cutmix,
)

YA = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.0]])
YB = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.8, 1.0]])


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mix_label_modes_and_waveforms():
    wa, wb = torch.ones(2, 4), torch.full((2, 4), 3.0)
    wave, y = mix(wa, YA, wb, YB, 0.25, "weighted")
    torch.testing.assert_close(wave, torch.full((2, 4), 2.5))
    torch.testing.assert_close(y, 0.25 * YA + 0.75 * YB)
    torch.testing.assert_close(mix(wa, YA, wb, YB, 0.5, "max")[1], torch.maximum(YA, YB))
    torch.testing.assert_close(mix(wa, YA, wb, YB, 0.5, "sum_clip")[1], torch.tensor([[1.0, 1.0, 0], [0, 1.0, 1.0]]))


def test_mix_per_sample_weights_and_weight_b():
    wa, wb = torch.ones(2, 3), torch.zeros(2, 3)
    wave, y = mix(wa, YA, wb, YB, torch.tensor([0.2, 0.9]), "weighted")
    torch.testing.assert_close(wave[:, 0], torch.tensor([0.2, 0.9]))
    torch.testing.assert_close(y[1], 0.9 * YA[1] + 0.1 * YB[1])
    wave, y = mix(wa, YA, torch.ones(2, 3), YB, 0.5, "weighted", weight_b=1.5)  # SuMix-style, not convex
    torch.testing.assert_close(wave, torch.full((2, 3), 2.0))
    torch.testing.assert_close(y, (0.5 * YA + 1.5 * YB) / 2.0)


def test_mix_rejects_bad_mode_and_shapes():
    with pytest.raises(ValueError, match="label_mode"):
        mix(torch.ones(2, 3), YA, torch.ones(2, 3), YB, 0.5, "mean")
    with pytest.raises(ValueError, match="cannot mix"):
        mix(torch.ones(2, 3), YA, torch.ones(2, 4), YB, 0.5)


def test_mix_masks_keeps_unknown_cells_unknown_unless_a_known_positive_arrives():
    mask_a = torch.tensor([[1.0, 0.0, 0.0]])  # classes 1 and 2 are masked secondaries of a
    y_a = torch.tensor([[1.0, 0.0, 0.0]])
    mask_b = torch.ones(1, 3)
    y_b = torch.tensor([[0.0, 1.0, 0.0]])  # b brings class 1 as a known positive
    torch.testing.assert_close(mix_masks(mask_a, y_a, mask_b, y_b), torch.tensor([[1.0, 1.0, 0.0]]))


def test_partners_is_a_derangement_and_seeded():
    for n in (2, 3, 7):
        p = partners(_gen(n), n, "cpu")
        assert sorted(p.tolist()) == list(range(n))
        assert (p != torch.arange(n)).all()
    torch.testing.assert_close(partners(_gen(1), 9, "cpu"), partners(_gen(1), 9, "cpu"))


def test_time_cutmix_replaces_exactly_the_span():
    a, b = torch.zeros(2, 10), torch.ones(2, 10)
    out = time_cutmix(a, b, torch.tensor([2, 7]), torch.tensor([3, 5]))
    torch.testing.assert_close(out[0], torch.tensor([0, 0, 1, 1, 1, 0, 0, 0, 0, 0.0]))
    torch.testing.assert_close(out[1], torch.tensor([0, 0, 0, 0, 0, 0, 0, 1, 1, 1.0]))


def test_add_at_snr_hits_the_snr_exactly():
    gen = _gen(3)
    wave = torch.randn(3, 4000, generator=gen)
    noise = torch.randn(3, 4000, generator=gen) * 7
    snr = torch.tensor([0.0, 10.0, 30.0])
    out = add_at_snr(wave, noise, snr)
    measured = 20 * torch.log10(rms(wave) / rms(out - wave)).squeeze(1)
    torch.testing.assert_close(measured, snr, atol=1e-3, rtol=0)


def test_band_gain_db_interpolates_linearly_and_handles_parked_edges():
    edges = torch.tensor([[0.0, 8000.0, 16000.0, 16000.0]])
    gains = torch.tensor([[0.0, 10.0, -10.0, -10.0]])
    torch.testing.assert_close(band_gain_db(edges, gains, 5), torch.tensor([[0.0, 5.0, 10.0, 0.0, -10.0]]))


def test_random_filter_changes_spectrum_within_the_gain_bounds():
    wave = torch.randn(4, 8000, generator=_gen(4))
    out = random_filter(wave, _gen(5), 2, 6, 20.0)
    assert out.shape == wave.shape and not torch.allclose(out, wave, atol=1e-3)
    ratio = (torch.fft.rfft(out).abs() + 1e-9) / (torch.fft.rfft(wave).abs() + 1e-9)
    db = 20 * torch.log10(ratio[:, 1:-1])
    assert db.abs().max() <= 20.0 + 1e-2
    flat = random_filter(wave, _gen(5), 2, 6, 0.0)
    torch.testing.assert_close(flat, wave, atol=1e-4, rtol=1e-4)


def test_noise_bank_crops_and_tiles():
    long_clip = np.arange(1000, dtype=np.float32)
    short_clip = np.arange(7, dtype=np.float32) + 5000
    bank = NoiseBank([long_clip, short_clip])
    crops = bank.sample(40, 20, _gen(6))
    assert crops.shape == (40, 20) and crops.dtype == torch.float32
    for row in crops:
        if row[0] < 5000:  # a contiguous slice of the long clip
            torch.testing.assert_close(row, row[0] + torch.arange(20.0))
        else:  # the short clip tiled: every value is the one 7 steps before
            torch.testing.assert_close(row[7:], row[:-7])
            assert set(row.tolist()) == set(short_clip.tolist())
    assert {float(r[0] < 5000) for r in crops} == {0.0, 1.0}
    torch.testing.assert_close(bank.sample(5, 20, _gen(1)), bank.sample(5, 20, _gen(1)))


@pytest.mark.parametrize(
    ("clips", "message"),
    [([], "at least one clip"), ([np.zeros((2, 5))], "clip 0"), ([np.ones(3), np.array([np.nan])], "clip 1")],
)
def test_noise_bank_rejects_bad_clips(clips, message):
    with pytest.raises(ValueError, match=message):
        NoiseBank(clips)


def test_resolve_options_defaults_switches_and_typos():
    defaults = {"gain": {"p": 0.5, "min_db": -6}, "noise": {"p": 0.3}}
    active = resolve_options({"gain": {"p": 1.0}, "noise": {"enabled": False}}, defaults, "augment.wave")
    assert active == {"gain": {"enabled": True, "p": 1.0, "min_db": -6}}
    assert resolve_options({"gain": {"p": 0}}, defaults, "w") == {}
    with pytest.raises(ValueError, match="unknown augmentation"):
        resolve_options({"gian": {}}, defaults, "augment.wave")
    with pytest.raises(ValueError, match=r"augment.wave.gain: unknown option"):
        resolve_options({"gain": {"max": 3}}, defaults, "augment.wave")
    with pytest.raises(ValueError, match=r"\.p must be"):
        resolve_options({"gain": {"p": 2}}, defaults, "augment.wave")


def test_section_accepts_whole_augment_params_or_a_part():
    assert section({"wave": {"gain": {}}, "spec": {}}, "wave") == {"gain": {}}
    assert section({"wave": {"gain": {}}}, "spec") == {}
    assert section({"gain": {}}, "wave") == {"gain": {}}
    assert section(None, "spec") == {}


def test_cache_noise_bank_draws_the_same_crops_as_the_clips_it_indexes():
    """A9's bank keeps (key, start, length) spans and reads crops when drawn: identical to holding the clips."""
    from birdclef.train.augment_ops import CacheNoiseBank, NoiseBank

    from train_fixtures import MemoryCache

    rng = np.random.default_rng(0)
    cache = MemoryCache({"a": rng.standard_normal(40_000).astype(np.float32),
                         "b": rng.standard_normal(9_000).astype(np.float32)})
    spans = [("a", 1_000, 20_000), ("b", 500, 3_000), ("a", 30_000, 8_000)]
    held = NoiseBank([cache.read(k, s, n) for k, s, n in spans])
    lazy = CacheNoiseBank(cache, spans)
    for length in (5_000, 16_000):  # shorter than some clips (crop) and longer than others (tiled)
        a = held.sample(6, length, torch.Generator().manual_seed(3))
        b = lazy.sample(6, length, torch.Generator().manual_seed(3))
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="positive length"):
        CacheNoiseBank(cache, [("a", 0, 0)])


def test_background_bank_memory_does_not_grow_with_the_soundscapes():
    """An index, not the audio: 40 one-minute soundscapes' quiet windows would be ~90 MB of float32."""
    import tracemalloc

    from birdclef.train.augment_ops import CacheNoiseBank
    from birdclef.train.member import quiet_soundscape_spans

    from train_fixtures import MemoryCache

    def bank_bytes(n_files: int) -> int:
        waves = {f"ss{i}": np.full(60 * 32_000, 0.01 * (i + 1), dtype=np.float32) for i in range(n_files)}
        cache = MemoryCache(waves, {k: "train_soundscape" for k in waves})
        tracemalloc.start()
        bank = CacheNoiseBank(cache, quiet_soundscape_spans(cache, sorted(waves)))
        size = tracemalloc.get_traced_memory()[0]  # what the bank keeps (the RMS scan is transient)
        tracemalloc.stop()
        assert len(bank) == int(n_files * 12 * 0.3)
        return size

    small, large = bank_bytes(4), bank_bytes(40)
    assert large < 200_000 and large - small < 150_000
