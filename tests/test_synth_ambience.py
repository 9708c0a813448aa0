"""Tests of SynthCLEF backgrounds, distance effects and in-band SNR scaling."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from birdclef import SAMPLE_RATE
from birdclef.synth.ambience import NoiseProfile, distance, gain_for_snr, render_background

QUIET = NoiseProfile(redness=0.5, wind_db=None, rain_db=None, chorus_db=None, chorus_band=(4000, 6000),
                     stream_db=None, level_dbfs=-40.0)
BUSY = NoiseProfile(redness=0.2, wind_db=0.0, rain_db=-3.0, chorus_db=0.0, chorus_band=(4000, 6000),
                    stream_db=-3.0, level_dbfs=-30.0)


def _band_db(x: np.ndarray, lo: float, hi: float) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    return float(10 * np.log10(2 * power[(freqs >= lo) & (freqs <= hi)].sum() / len(x) ** 2))


@pytest.mark.parametrize("profile", [QUIET, BUSY], ids=["quiet", "busy"])
def test_background_has_the_asked_level_and_length(profile: NoiseProfile) -> None:
    bg = render_background(profile, 7 * SAMPLE_RATE + 13, np.random.default_rng(0))
    assert bg.wave.shape == (7 * SAMPLE_RATE + 13,)
    assert 20 * np.log10(np.sqrt(np.mean(bg.wave**2))) == pytest.approx(profile.level_dbfs, abs=0.01)
    again = render_background(profile, 7 * SAMPLE_RATE + 13, np.random.default_rng(0))
    assert np.array_equal(bg.wave, again.wave)


@pytest.mark.parametrize(("component", "band"), [("rain_db", (9000, 14000)), ("chorus_db", (4000, 6000)),
                                                  ("wind_db", (20, 300)), ("stream_db", (500, 2500))])
def test_each_component_raises_its_own_band(component: str, band: tuple[float, float]) -> None:
    n = 10 * SAMPLE_RATE
    without = render_background(replace(BUSY, **{component: None}), n, np.random.default_rng(1)).wave
    with_it = render_background(BUSY, n, np.random.default_rng(1)).wave
    # both have the same total level: the component's band takes a larger share of it
    share = [_band_db(x, *band) - 10 * np.log10(np.mean(x**2)) for x in (without, with_it)]
    assert share[1] > share[0] + 1.0, share


def test_known_band_power_matches_the_rendered_wave() -> None:
    bg = render_background(BUSY, 20 * SAMPLE_RATE, np.random.default_rng(2))
    for start_s, stop_s, lo, hi in ((1, 6, 4000, 6000), (10, 12, 200, 800), (3, 15, 9000, 12000)):
        start, stop = start_s * SAMPLE_RATE, stop_s * SAMPLE_RATE
        measured = _band_db(bg.wave[start:stop], lo, hi)
        assert 10 * np.log10(bg.band_power(start, stop, lo, hi)) == pytest.approx(measured, abs=1.5)


@pytest.mark.parametrize("snr_db", [-6.0, 0.0, 12.0])
def test_gain_for_snr_sets_the_in_band_snr(snr_db: float) -> None:
    bg = render_background(BUSY, 10 * SAMPLE_RATE, np.random.default_rng(3))
    t = np.arange(int(1.5 * SAMPLE_RATE)) / SAMPLE_RATE
    call = np.sin(2 * np.pi * (3000 + 400 * t) * t)  # a rising whistle near the chorus band
    start = 2 * SAMPLE_RATE
    gain = gain_for_snr(call, bg, start, snr_db)
    segment = bg.wave[start : start + len(call)]
    measured = _band_db(gain * call, 2900, 4300) - _band_db(segment, 2900, 4300)
    assert measured == pytest.approx(snr_db, abs=1.5)


def test_distance_dulls_and_smears_a_call() -> None:
    rng = np.random.default_rng(4)
    call = np.zeros(SAMPLE_RATE)
    call[: SAMPLE_RATE // 2] = rng.standard_normal(SAMPLE_RATE // 2)  # broadband burst, then silence
    far = distance(call, lowpass_hz=3000, rt60_s=0.8, wet=0.5, rng=rng)
    assert len(far) == len(call) + int(0.4 * SAMPLE_RATE)
    assert _band_db(far, 8000, 15000) < _band_db(call, 8000, 15000) - 15
    # reverb: energy after the burst ended (dry has none)
    tail = far[SAMPLE_RATE // 2 + 1600 : SAMPLE_RATE]
    assert np.sqrt(np.mean(tail**2)) > 0.01 * np.sqrt(np.mean(far[: SAMPLE_RATE // 2] ** 2))
    dry = distance(call, lowpass_hz=15000, rt60_s=0.8, wet=0.0, rng=rng)
    assert np.abs(dry[SAMPLE_RATE // 2 + 1600 :]).max() < 1e-3
