"""Tests for the training loop: learning, determinism, resume after a kill, EMA and soup, the optimiser schedule."""

import numpy as np
import pytest
import torch
from torch import nn

from birdclef.train.datasets import FocalDataset
from birdclef.train.evaluate import Evaluator
from birdclef.train.fit import FitConfig, epoch_samples, fit
from birdclef.train.optim import lr_factor, soup

from train_fixtures import TinyModel, toy_segments

CLASSES = ["a", "b", "c"]


class BCE(nn.Module):
    def forward(self, out, target, mask=None, weight=None):
        loss = nn.functional.binary_cross_entropy_with_logits(out["clip"], target, reduction="none")
        return (loss * (mask if mask is not None else 1)).mean()


def _setup(**loop):
    segs, cache = toy_segments()
    ds = FocalDataset(segs, cache, CLASSES, crop_s=1.0, policy="random", secondary_value=0.5)
    cfg = FitConfig.from_dict({"epochs": 3, "batch_size": 4, "progress": False, "checkpoint_every": 2, **loop})
    torch.manual_seed(0)
    return ds, cfg, TinyModel(len(CLASSES)), cache, segs


def _flat(state):
    return torch.cat([v.float().flatten() for v in state.values()])


def test_fit_learns_the_toy_task():
    ds, cfg, model, cache, segs = _setup(epochs=6, optimizer={"name": "adamw", "lr": 0.05})
    ev = Evaluator(CLASSES, cache, segs, None, crop_s=1.0)
    result = fit(model, ds, cfg, BCE(), evaluate=ev)
    assert len(result.history) == 6
    assert result.history[-1]["val_auc"] > 0.9
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_fit_is_deterministic_on_cpu():
    ds, cfg, m1, *_ = _setup()
    r1 = fit(m1, ds, cfg, BCE())
    ds, cfg, m2, *_ = _setup()
    r2 = fit(m2, ds, cfg, BCE())
    assert torch.equal(_flat(r1.state_dict), _flat(r2.state_dict))


def test_resume_after_kill_reaches_the_same_weights(tmp_path):
    ds, cfg, model, *_ = _setup(ema={"enabled": True, "decay": 0.9}, soup={"enabled": True, "last_k": 2})
    reference = fit(model, ds, cfg, BCE()).state_dict

    class KilledError(Exception):
        pass

    def kill_at_step_5(step):
        if step == 5:  # mid-epoch 2 (3 steps per epoch); last checkpoint was at step 4
            raise KilledError

    ds, cfg, model, *_ = _setup(ema={"enabled": True, "decay": 0.9}, soup={"enabled": True, "last_k": 2})
    with pytest.raises(KilledError):
        fit(model, ds, cfg, BCE(), resume_dir=tmp_path, fingerprint="run", on_step=kill_at_step_5)
    assert (tmp_path / "state.pt").exists()
    ds, cfg, fresh, *_ = _setup(ema={"enabled": True, "decay": 0.9}, soup={"enabled": True, "last_k": 2})
    resumed = fit(fresh, ds, cfg, BCE(), resume_dir=tmp_path, fingerprint="run").state_dict
    assert torch.equal(_flat(reference), _flat(resumed))


def test_resume_mid_epoch_keeps_the_epoch_train_loss(tmp_path):
    # a killed epoch's train_loss must be the mean over all its batches, not only those after the resume
    # (benchmarks/faults.py found the history of a resumed run differing from an uninterrupted one)
    ds, cfg, model, *_ = _setup()
    reference = fit(model, ds, cfg, BCE()).history

    class KilledError(Exception):
        pass

    def kill_at_step_5(step):
        if step == 5:  # mid-epoch 2; the checkpoint of step 4 holds one of its batches
            raise KilledError

    ds, cfg, model, *_ = _setup()
    with pytest.raises(KilledError):
        fit(model, ds, cfg, BCE(), resume_dir=tmp_path, fingerprint="run", on_step=kill_at_step_5)
    ds, cfg, fresh, *_ = _setup()
    resumed = fit(fresh, ds, cfg, BCE(), resume_dir=tmp_path, fingerprint="run").history
    assert [row["train_loss"] for row in resumed] == [row["train_loss"] for row in reference]


def test_checkpoint_of_another_run_is_ignored(tmp_path):
    ds, cfg, model, *_ = _setup(epochs=1)
    fit(model, ds, cfg, BCE(), resume_dir=tmp_path, fingerprint="one")
    ds, cfg, model, *_ = _setup(epochs=2)
    result = fit(model, ds, cfg, BCE(), resume_dir=tmp_path, fingerprint="two")
    assert len(result.history) == 2


def test_grad_accumulation_and_transforms_run():
    calls = []

    def transform(batch, gen, rng):
        calls.append(batch["wave"].shape[0])
        return batch

    ds, cfg, model, *_ = _setup(grad_accum=2, epochs=1)
    fit(model, ds, cfg, BCE(), transforms=[transform])
    assert calls == [4, 4, 4]


def test_unknown_loop_key_is_rejected():
    with pytest.raises(ValueError, match="unknown train loop key"):
        FitConfig.from_dict({"epoch": 3})


def test_lr_schedule_warmup_cosine_and_restarts():
    assert lr_factor(0, 100, 10, 0, 0.0) == pytest.approx(0.1)
    assert lr_factor(10, 100, 10, 0, 0.0) == pytest.approx(1.0)
    assert lr_factor(100, 100, 10, 0, 0.0) == pytest.approx(0.0, abs=1e-9)
    assert lr_factor(20, 100, 0, 20, 0.0) == pytest.approx(1.0)  # warm restart
    assert lr_factor(10, 100, 0, 20, 0.0) == pytest.approx(0.5)


def test_soup_is_the_mean_of_states():
    states = [
        {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(1)},
        {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(2)},
    ]
    out = soup(states)
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0])) and int(out["n"]) == 2


def test_dataset_targets_and_crops():
    segs, cache = toy_segments()
    ds = FocalDataset(segs, cache, CLASSES, crop_s=3.0, policy="rms", secondary_value=0.5)
    item = ds[(0, 123)]
    assert item["wave"].shape == (96_000,)
    assert item["target"].tolist() == [1.0, 0.5, 0.0]
    masked = FocalDataset(segs, cache, CLASSES, crop_s=3.0, secondary_value="mask")[(0, 1)]
    assert masked["target"].tolist() == [1.0, 0.0, 0.0] and masked["mask"].tolist() == [1.0, 0.0, 1.0]
    assert torch.equal(ds[(5, 7)]["wave"], ds[(5, 7)]["wave"])
    np.testing.assert_array_equal(ds.primary, np.repeat([0, 1, 2], 4))


@pytest.mark.parametrize(
    "loop, one_pass, expected",
    [({}, 48, 48), ({"min_samples_per_epoch": 384}, 48, 384), ({"min_samples_per_epoch": 384}, 1000, 1000),
     ({"samples_per_epoch": 100, "min_samples_per_epoch": 384}, 48, 100)],
)
def test_epoch_length_has_a_floor(loop, one_pass, expected):
    assert epoch_samples(FitConfig.from_dict(loop), one_pass) == expected


def test_small_task_trains_min_samples_per_epoch():
    """12 toy segments, batch 4: one pass is 3 steps an epoch; the floor of 40 samples makes it 10."""
    steps: list[int] = []
    ds, cfg, model, *_ = _setup(epochs=2, min_samples_per_epoch=40)
    result = fit(model, ds, cfg, BCE(), on_step=steps.append)
    assert steps[-1] == 20 and result.samples_seen == 80


# Forked DataLoader workers are only safe in a process without foreign thread pools: in the full suite's process
# (onnxruntime, OpenVINO and TFLite loaded by earlier tests) the fork segfaulted pytest itself. The stages fork from
# a clean training process; run these alone: pytest -m slow tests/test_train_fit.py.
@pytest.mark.slow
def test_dataloader_workers_give_the_same_weights():
    """Items are addressed by (row, seed): worker processes reading the cache change nothing but speed."""
    ds, cfg, model, *_ = _setup(epochs=1)
    serial = fit(model, ds, cfg, BCE())
    ds, cfg, model, *_ = _setup(epochs=1, num_workers=2)
    workers = fit(model, ds, cfg, BCE())
    torch.testing.assert_close(_flat(serial.state_dict), _flat(workers.state_dict), rtol=0, atol=0)


@pytest.mark.slow
def test_workers_read_the_memory_mapped_cache_like_the_main_process(tmp_path):
    from torch.utils.data import DataLoader

    from birdclef.features.cache import CacheItem, WaveCache, WaveCacheWriter
    from birdclef.train.fit import _collate_items
    from birdclef.train.sampling import EpochSampler

    segs, cache = toy_segments()
    writer = WaveCacheWriter(tmp_path / "cache", [CacheItem(k, "segment", len(w)) for k, w in cache.waves.items()],
                             rms_hop=3200, full_scale=2.0)
    for k, w in cache.waves.items():
        writer.write(k, w)
    writer.close()
    ds = FocalDataset(segs, WaveCache(tmp_path / "cache"), CLASSES, crop_s=1.0, policy="rms")
    sampler = EpochSampler(np.full(len(segs), 1.0 / len(segs)), 8, seed=0, batch_size=4)
    batches = [list(DataLoader(ds, batch_size=4, sampler=sampler, num_workers=n, collate_fn=_collate_items))
               for n in (0, 2)]
    for a, b in zip(*batches, strict=True):
        torch.testing.assert_close(a["wave"], b["wave"], rtol=0, atol=0)
