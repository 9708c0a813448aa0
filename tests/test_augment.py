"""Tests for birdclef.train.augment.WaveAugment: each technique on/off, labels, masks, seeding, batch dicts."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from birdclef.io import load_params
from birdclef.train.augment import WAVE_DEFAULTS, NoiseBank, SpecAugment, WaveAugment, mix
from birdclef.train.augment_ops import rms

N = 4000  # samples per clip: tiny, the techniques do not care about length
MIXING = ("mixup", "hard_mixup", "sumix", "cutmix")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(b: int = 4, c: int = 5, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = _gen(seed)
    wave = torch.randn(b, N, generator=gen) * torch.linspace(0.1, 1.0, b)[:, None]
    target = torch.zeros(b, c)
    target[torch.arange(b), torch.arange(b) % c] = 1.0
    return wave, target


def _banks() -> dict[str, NoiseBank]:
    rng = np.random.default_rng(0)
    return {"noise_bank": NoiseBank([rng.normal(size=9000)]), "voice_bank": NoiseBank([rng.normal(size=1500)])}


def _aug(name: str, **opts) -> WaveAugment:
    return WaveAugment({"wave": {name: {"p": 1.0} | opts}}, **_banks())


@pytest.mark.parametrize("name", list(WAVE_DEFAULTS))
def test_each_technique_changes_the_batch_at_p1_and_nothing_at_p0(name):
    wave, target = _batch()
    out_w, out_y = _aug(name)(wave, target, _gen())
    assert out_w.shape == wave.shape and out_y.shape == target.shape
    assert not torch.allclose(out_w, wave)
    assert ((out_y >= 0) & (out_y <= 1)).all()
    for off in ({"p": 0.0}, {"p": 1.0, "enabled": False}):
        same_w, same_y = WaveAugment({"wave": {name: off}}, **_banks())(wave, target, _gen())
        assert torch.equal(same_w, wave) and torch.equal(same_y, target)


@pytest.mark.parametrize("name", list(WAVE_DEFAULTS))
def test_same_seed_same_output_and_inputs_untouched(name):
    wave, target = _batch(b=8)
    keep_w, keep_y = wave.clone(), target.clone()
    first = _aug(name, p=0.5)(wave, target, _gen(7))
    second = _aug(name, p=0.5)(wave, target, _gen(7))
    other = _aug(name, p=0.5)(wave, target, _gen(8))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], other[0])
    assert torch.equal(wave, keep_w) and torch.equal(target, keep_y)


def test_all_techniques_together_keep_shapes_and_label_range():
    cfg = {"wave": {name: {"p": 1.0} for name in WAVE_DEFAULTS}}
    wave, target = _batch(b=6)
    out_w, out_y = WaveAugment(cfg, **_banks())(wave, target, _gen())
    assert out_w.shape == wave.shape and torch.isfinite(out_w).all()
    assert ((out_y >= 0) & (out_y <= 1)).all()
    assert (out_y.sum(dim=1) >= 1).all()  # mixing only ever adds labels here


def test_mixup_with_two_clips_mixes_them_with_weighted_labels():
    wave, target = _batch(b=2)
    out_w, out_y = _aug("mixup", label="weighted")(wave, target, _gen(2))
    # with two clips the partner is the other one: out = lam * a + (1 - lam) * b
    for i, j in ((0, 1), (1, 0)):
        lam = torch.linalg.lstsq(torch.stack([wave[i] - wave[j]], 1), (out_w[i] - wave[j])[:, None]).solution.item()
        torch.testing.assert_close(out_w[i], lam * wave[i] + (1 - lam) * wave[j], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out_y[i], lam * target[i] + (1 - lam) * target[j], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("name", "opts"), [("mixup", {"label": "max"}), ("hard_mixup", {}), ("sumix", {})])
def test_max_and_hard_mixing_label_both_clips_fully(name, opts):
    wave, target = _batch(b=2)
    _, out_y = _aug(name, **opts)(wave, target, _gen(3))
    expected = torch.maximum(target[0], target[1])
    torch.testing.assert_close(out_y, torch.stack([expected, expected]))


def test_sumix_weights_lie_in_range():
    wave, target = _batch(b=2)
    out_w, _ = _aug("sumix", min_weight=0.3, max_weight=1.0)(wave, target, _gen(4))
    coeffs = torch.linalg.lstsq(torch.stack([wave[0], wave[1]], 1), out_w[0][:, None]).solution.squeeze(1)
    assert ((coeffs > 0.3 - 1e-4) & (coeffs < 1.0 + 1e-4)).all()


def test_cutmix_pastes_one_span_of_the_partner_and_weights_labels_by_length():
    wave, target = _batch(b=2)
    out_w, out_y = _aug("cutmix", min_frac=0.25, max_frac=0.25, label="weighted")(wave, target, _gen(5))
    from_b = torch.isclose(out_w[0], wave[1]) & ~torch.isclose(out_w[0], wave[0])
    span = from_b.nonzero().squeeze(1)
    assert len(span) == N // 4 and span[-1] - span[0] == len(span) - 1
    torch.testing.assert_close(out_y[0], 0.75 * target[0] + 0.25 * target[1])


def test_time_flip_reverses_time():
    wave, target = _batch()
    out_w, _ = _aug("time_flip")(wave, target, _gen())
    torch.testing.assert_close(out_w, wave.flip(1))


def test_gain_is_a_constant_factor_within_bounds():
    wave, target = _batch()
    out_w, out_y = _aug("gain", min_db=-6.0, max_db=6.0)(wave, target, _gen())
    factor = out_w / wave
    torch.testing.assert_close(factor, factor[:, :1].expand_as(factor))
    db = 20 * torch.log10(factor[:, 0])
    assert ((db >= -6.0 - 1e-4) & (db <= 6.0 + 1e-4)).all() and torch.equal(out_y, target)


@pytest.mark.parametrize("name", ["noise", "background", "voice"])
def test_additive_noise_is_at_the_drawn_snr(name):
    wave, target = _batch()
    out_w, out_y = _aug(name, min_snr_db=12.0, max_snr_db=12.0)(wave, target, _gen())
    snr = 20 * torch.log10(rms(wave) / rms(out_w - wave))
    torch.testing.assert_close(snr.squeeze(1), torch.full((4,), 12.0), atol=1e-3, rtol=0)
    assert torch.equal(out_y, target)


def test_missing_bank_switches_the_technique_off_with_a_warning(caplog):
    wave, target = _batch()
    with caplog.at_level(logging.WARNING):
        aug = WaveAugment({"wave": {"background": {"p": 1.0}, "voice": {"p": 1.0}}})
    assert aug.options == {} and "background" in caplog.text
    assert torch.equal(aug(wave, target, _gen())[0], wave)


def test_batch_dict_form_updates_wave_target_and_mask_only():
    wave, target = _batch(b=2)
    mask = torch.ones(2, 5)
    mask[0, 4] = 0.0  # a masked secondary of clip 0
    batch = {"wave": wave, "target": target, "mask": mask, "weight": torch.tensor([1.0, 0.5])}
    out = _aug("mixup", label="max")(batch, _gen(), np.random.default_rng(0))
    assert set(out) == set(batch) and out["weight"] is batch["weight"]
    assert not torch.equal(out["wave"], wave)
    torch.testing.assert_close(out["target"][0], torch.maximum(target[0], target[1]))
    assert out["mask"][0, 4] == 0.0 and out["mask"][0, 1] == 1.0
    assert torch.equal(batch["mask"], mask)


def test_single_clip_batch_skips_mixing():
    wave, target = _batch(b=1)
    for name in MIXING:
        assert torch.equal(_aug(name)(wave, target, _gen())[0], wave)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"mixup": {"label": "mean"}}, "augment.wave.mixup.label"),
        ({"gain": {"min_db": 3, "max_db": -3}}, "min_db 3 > max_db -3"),
        ({"mixup": {"alpha": 0}}, "alpha"),
        ({"cutmix": {"max_frac": 1.5}}, "fractions"),
        ({"mixpu": {}}, "unknown augmentation"),
    ],
)
def test_bad_options_are_rejected_naming_the_key(cfg, message):
    with pytest.raises(ValueError, match=message):
        WaveAugment({"wave": cfg})


def test_public_names_are_importable_from_augment():
    assert callable(mix) and callable(SpecAugment({}))


def test_params_augment_section_builds():
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    cfg = params["augment"] if "augment" in params else params["train"]["augment"]
    aug = WaveAugment(cfg, **_banks())
    assert set(aug.options) <= set(WAVE_DEFAULTS) and aug.options
    assert SpecAugment(cfg).options
