"""Tests of the SynthCLEF call families: rendering, parameter control, within-species variation, twins."""

from __future__ import annotations

import numpy as np
import pytest

from birdclef import SAMPLE_RATE
from birdclef.synth.calls import FAMILIES, Jitter, families_of, make_twin, render_bout
from birdclef.synth.config import CLASS_NAMES


def _centroid_hz(x: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    return float((power * freqs).sum() / power.sum())


def test_every_class_has_several_families() -> None:
    for class_name in CLASS_NAMES:
        assert len(families_of(class_name)) >= 2, class_name
    assert sorted(name for c in CLASS_NAMES for name in families_of(c)) == sorted(FAMILIES)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_bouts_are_finite_normalised_and_of_plausible_length(family: str) -> None:
    rng = np.random.default_rng(7)
    for _ in range(5):
        params = FAMILIES[family].sample(rng)
        x = render_bout(family, params, rng, Jitter())
        assert np.isfinite(x).all()
        assert np.max(np.abs(x)) == pytest.approx(1.0)
        assert 0.02 * SAMPLE_RATE < len(x) < 15 * SAMPLE_RATE


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_frequency_parameters_move_the_spectrum(family: str) -> None:
    rng = np.random.default_rng(3)
    params = FAMILIES[family].sample(rng)
    higher = {**params, **{k: params[k] * 1.3 for k in FAMILIES[family].freq_keys}}
    still = Jitter(0.0, 0.0, 0.0)
    low = _centroid_hz(render_bout(family, params, np.random.default_rng(0), still))
    high = _centroid_hz(render_bout(family, higher, np.random.default_rng(0), still))
    assert 1.15 < high / low < 1.45, (family, low, high)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_calls_vary_within_a_species_but_are_reproducible(family: str) -> None:
    params = FAMILIES[family].sample(np.random.default_rng(11))
    a = render_bout(family, params, np.random.default_rng(1), Jitter())
    b = render_bout(family, params, np.random.default_rng(1), Jitter())
    c = render_bout(family, params, np.random.default_rng(2), Jitter())
    assert np.array_equal(a, b)
    assert len(a) != len(c) or not np.allclose(a, c)


def test_class_frequency_ranges_differ() -> None:
    """Insects and most birds sit high, mammals low: the classes are acoustically distinct on average."""
    rng = np.random.default_rng(5)
    centroids = {}
    for class_name in CLASS_NAMES:
        values = []
        for family in families_of(class_name):
            for _ in range(6):
                values.append(_centroid_hz(render_bout(family, FAMILIES[family].sample(rng), rng, Jitter())))
        centroids[class_name] = float(np.median(values))
    assert centroids["Mammalia"] < centroids["Amphibia"] < centroids["Aves"]
    assert centroids["Mammalia"] < 2000 < centroids["Insecta"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_twin_is_a_small_shift_of_its_original(family: str) -> None:
    rng = np.random.default_rng(13)
    params = FAMILIES[family].sample(rng)
    twin = make_twin(family, params, rng, (0.05, 0.10))
    assert twin.keys() == params.keys()
    ratios = [twin[k] / params[k] for k in FAMILIES[family].freq_keys]
    assert np.allclose(ratios, ratios[0])  # the whole call moves together
    assert np.log(1.05) - 1e-9 <= abs(np.log(ratios[0])) <= np.log(1.1) + 1e-9
    changed = [k for k in params if k not in FAMILIES[family].freq_keys and twin[k] != params[k]]
    assert len(changed) == 1 and changed[0] in FAMILIES[family].time_keys
