"""Tests of SynthCLEF planning: long-tailed file counts, sites, soundscape plans, priors."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.stats import spearmanr

from birdclef.synth.config import preset_config
from birdclef.synth.plan import file_counts, plan_recordings, plan_sites, plan_soundscapes
from birdclef.synth.species import make_taxonomy


@pytest.fixture(scope="module")
def demo():
    config = preset_config("demo")
    species, distractors = make_taxonomy(config, np.random.default_rng(0))
    return config, species, distractors


@pytest.mark.parametrize("preset", ["demo", "full"])
def test_file_counts_are_long_tailed(preset: str) -> None:
    config = preset_config(preset)
    species, _ = make_taxonomy(config, np.random.default_rng(0))
    counts = np.array(list(file_counts(config, species, np.random.default_rng(1)).values()))
    assert counts.min() >= 1
    assert (counts <= 3).sum() >= config.rare_species
    assert abs(counts.sum() - config.focal_files) <= len(species)
    assert counts.max() >= 5 * np.median(counts) / 2  # a head well above the median
    by_class = {c: [] for c in config.classes}
    for sp, n in zip(species, counts, strict=True):
        by_class[sp.class_name].append(n)
    assert np.mean(by_class["Aves"]) > np.mean(by_class["Insecta"])


def test_recordings_plan_voice_secondaries_and_names(demo) -> None:
    config, species, _ = demo
    recordings = plan_recordings(config, species, np.random.default_rng(2))
    labels = {s.label for s in species}
    assert len({r.row["filename"] for r in recordings}) == len(recordings)
    for r in recordings:
        assert re.fullmatch(r"[a-z0-9]+/(XC\d{6}|iNat\d+|CSA\d{5})\.ogg", r.row["filename"]), r.row["filename"]
        assert r.plan.path == f"train_audio/{r.row['filename']}"
        lo, hi = config.focal.duration_range_s
        assert lo <= r.plan.seconds <= hi
        assert {lab for lab, _ in r.plan.secondary} <= labels - {r.plan.primary}
        if r.plan.voice is not None:
            start, dur, _ = r.plan.voice
            assert start >= 0 and start + dur <= r.plan.seconds and dur <= 0.45 * r.plan.seconds
    voiced = np.mean([r.plan.voice is not None for r in recordings])
    with_secondary = np.mean([bool(r.plan.secondary) for r in recordings])
    assert 0.1 < voiced < 0.45 and 0.05 < with_secondary < 0.3
    lengths = np.array([r.plan.seconds for r in recordings])
    assert lengths.mean() > np.median(lengths)  # right-skewed lengths


def test_train_and_test_soundscapes_come_from_different_sites(demo) -> None:
    config, species, distractors = demo
    rng = np.random.default_rng(3)
    sites = plan_sites(config, species, rng)
    plans = plan_soundscapes(config, sites, species, distractors, rng)
    train = [p for p in plans if p.path.startswith("train_soundscapes/")]
    test = [p for p in plans if p.path.startswith("test_soundscapes/")]
    assert len(train) == config.train_soundscapes and len(test) == config.test_soundscapes
    assert not {p.site for p in train} & {p.site for p in test}
    assert all(re.fullmatch(r"train_soundscapes/[A-Z]\d{2}_\d{8}_\d{6}\.ogg", p.path) for p in train)
    assert all(re.fullmatch(r"test_soundscapes/soundscape_\d{7}\.ogg", p.path) for p in test)
    assert len({p.path for p in plans}) == len(plans)
    assert any(not p.callers for p in plans) or any(len(p.callers) <= 1 for p in plans)
    assert any(c.kind == "distractor" for p in plans for c in p.callers)
    lo, hi = config.soundscape.snr_db
    assert all(lo <= c.snr_db <= hi for p in plans for c in p.callers)


def test_soundscape_prior_differs_from_the_train_audio_prior(demo) -> None:
    config, species, distractors = demo
    rng = np.random.default_rng(4)
    counts = file_counts(config, species, rng)
    sites = plan_sites(config, species, rng)
    plans = plan_soundscapes(config, sites, species, distractors, rng)
    calls = {s.label: 0 for s in species}
    for p in plans:
        for c in p.callers:
            if c.kind == "soundscape":
                calls[c.label] += c.bouts
    rho = spearmanr([counts[k] for k in calls], [calls[k] for k in calls]).statistic
    assert rho < 0.6


def test_bench_preset_is_the_demo_with_more_and_denser_scored_soundscapes() -> None:
    """The ablation benchmark keeps the demo's species and recordings; it multiplies what is scored (test 32x over
    16 sites, val 2x), puts more species in each soundscape and mixes each site's species more evenly."""
    import dataclasses

    demo, bench = preset_config("demo"), preset_config("bench")
    differ = {f.name for f in dataclasses.fields(demo) if getattr(demo, f.name) != getattr(bench, f.name)}
    assert differ == {"name", "test_soundscapes", "test_sites", "val_soundscapes", "val_sites", "soundscape"}
    knobs = {"site_concentration": 4.0, "species_mean": 8.0, "species_max": 14}
    assert dataclasses.replace(demo.soundscape, **knobs) == bench.soundscape
    assert (bench.test_soundscapes, bench.val_soundscapes) == (32 * demo.test_soundscapes, 2 * demo.val_soundscapes)
    species, distractors = make_taxonomy(bench, np.random.default_rng(0))
    assert species == make_taxonomy(demo, np.random.default_rng(0))[0]  # the same task
    sites = plan_sites(bench, species, np.random.default_rng(1))
    plans = plan_soundscapes(bench, sites, species, distractors, np.random.default_rng(2))
    test = [p for p in plans if p.path.startswith("test_soundscapes/")]
    assert len(test) == 768 and len(plans) - len(test) == demo.train_soundscapes

    def species_per_soundscape(config):
        found = plan_soundscapes(config, plan_sites(config, species, np.random.default_rng(1)), species,
                                 distractors, np.random.default_rng(2))
        return np.mean([len({c.label for c in p.callers if c.kind == "soundscape"}) for p in found
                        if p.path.startswith("test_soundscapes/")])

    # what shrinks the bootstrap: ~2.5x the soundscapes that hold each species (the Poisson mean times the site's
    # activity, capped by species_max)
    assert species_per_soundscape(bench) > 2.2 * species_per_soundscape(demo)
    assert len({p.site for p in test}) == bench.test_sites  # every test site is used
