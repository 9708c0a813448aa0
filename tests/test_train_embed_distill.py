"""Tests for T1 embedding distillation: rows, dataset alignment, cosine loss values, and a student that learns."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from birdclef import SAMPLE_RATE
from birdclef.models import create_model, load_checkpoint, save_checkpoint
from birdclef.train.embed_distill import (
    CosineLoss,
    DistillParams,
    EmbeddingDataset,
    EmbeddingStudent,
    distill_member,
    embedding_rows,
    mean_cosine,
    run_distill,
)

from train_fixtures import MemoryCache

MEL = {"n_fft": 512, "hop_length": 320, "n_mels": 32, "fmin": 40, "fmax": 15000}
MODEL = {"head": "sed", "backbone": "test_efficientnet", "pretrained": False}
WIN = 5 * SAMPLE_RATE


def _task(n_files: int = 6, seed: int = 0):
    """Soundscapes of 5-s windows, each a low (600 Hz) or high (4 kHz) tone; the teacher embeds them as two
    orthogonal directions (plus noise), so a student that hears pitch can match the embeddings."""
    rng = np.random.default_rng(seed)
    t = np.arange(WIN) / SAMPLE_RATE
    waves, rows, embs = {}, [], []
    basis = rng.standard_normal((2, 16)).astype(np.float32)
    for f in range(n_files):
        parts = []
        for w in range(4):
            high = int(rng.integers(0, 2))
            freq = 4000.0 if high else 600.0
            parts.append((0.5 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(WIN)).astype(np.float32))
            rows.append({"soundscape_id": f"ss{f}", "start_s": 5.0 * w})
            embs.append(basis[high] + 0.05 * rng.standard_normal(16).astype(np.float32))
        waves[f"ss{f}"] = np.concatenate(parts)
    return pd.DataFrame(rows), np.stack(embs), MemoryCache(waves, {k: "train_soundscape" for k in waves})


def test_cosine_loss_values():
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    same = CosineLoss()({"clip": target * 3}, target)
    opposite = CosineLoss()({"clip": -target}, target)
    orthogonal = CosineLoss()({"clip": target.flip(1)}, target)
    assert float(same) == pytest.approx(0.0, abs=1e-6)
    assert float(opposite) == pytest.approx(2.0)
    assert float(orthogonal) == pytest.approx(1.0)
    weighted = CosineLoss()({"clip": torch.stack([target[0], -target[1]])}, target, weight=torch.tensor([3.0, 1.0]))
    assert float(weighted) == pytest.approx((3 * 0 + 1 * 2) / 4)


def test_dataset_crops_the_teachers_window_and_rows_drop_empty_embeddings():
    table, emb, cache = _task(n_files=2)
    emb[3] = 0.0  # a window the teacher gave nothing for
    rows = embedding_rows([table], [emb], ["soundscape_id"])
    assert len(rows.keys) == 7
    ds = EmbeddingDataset(rows, cache)
    for i in (0, 4, 6):
        start = int(rows.starts_s[i] * SAMPLE_RATE)
        np.testing.assert_array_equal(ds[(i, 123)]["wave"].numpy(), cache.waves[rows.keys[i]][start : start + WIN])
        np.testing.assert_array_equal(ds[i]["target"].numpy(), rows.embeddings[i])
    train, held = rows.split(0.5, seed=0)
    assert set(train.keys).isdisjoint(set(held.keys)) and len(train.keys) + len(held.keys) == 7


def test_distilled_student_matches_the_teacher_and_its_backbone_initialises_a_member(tmp_path):
    table, emb, cache = _task()
    rows = embedding_rows([table], [emb], ["soundscape_id"])
    torch.manual_seed(0)
    model = create_model(MODEL, 3, MEL)
    before = mean_cosine(EmbeddingStudent(model, 16), EmbeddingDataset(rows, cache))
    loop = {"epochs": 6, "batch_size": 8, "min_samples_per_epoch": 64, "progress": False,
            "optimizer": {"name": "adamw", "lr": 0.01},
            "scheduler": {"name": "cosine", "warmup_epochs": 0}}
    model, metrics = distill_member(model, rows, cache, loop, holdout=0.34, seed=0)
    assert metrics["val_cosine"] > before + 0.2 and metrics["val_cosine"] > 0.8
    assert model.classes is None
    save_checkpoint(tmp_path / "model.pt", model, {"distilled": True})
    donor, _ = load_checkpoint(tmp_path / "model.pt")
    fresh = create_model(MODEL, 5, MEL)
    donor.replace_head(5)
    fresh.load_state_dict(donor.state_dict(), strict=False)
    for name, value in model.backbone.state_dict().items():
        torch.testing.assert_close(fresh.backbone.state_dict()[name], value)


def _teacher_folder(tmp_path, table, emb, splits=("train_soundscape",)):
    folder = tmp_path / "teacher"
    for split in splits:
        (folder / split).mkdir(parents=True)
        t = table.assign(row_id=[f"{s}_{int(x) + 5}" for s, x in zip(table["soundscape_id"], table["start_s"],
                                                                        strict=True)], end_s=table["start_s"] + 5)
        t.assign(a=0.5).to_parquet(folder / split / "probs.parquet")
        np.save(folder / split / "embeddings.npy", emb.astype(np.float16))
    info = {"enabled": True, "splits": list(splits), "species": ["a"], "covered": ["a"]}
    (folder / "teacher.json").write_text(json.dumps(info))
    return folder


def test_run_distill_writes_a_checkpoint_per_member_and_refuses_missing_splits(tmp_path):
    table, emb, cache = _task(n_files=3)
    folder = _teacher_folder(tmp_path, table, emb)
    params = {
        "models": {"tiny": {**MODEL, "mel": "m"}}, "mels": {"m": MEL},
        "train": {"loop": {"epochs": 1, "batch_size": 4, "progress": False, "seed": 0}},
        "distill": {"enabled": True, "members": ["tiny"], "splits": ["train_soundscape"], "holdout": 0.34},
    }
    metrics = run_distill(params, folder, cache, tmp_path / "out", tmp_path / "resume")
    assert set(metrics) == {"tiny"} and metrics["tiny"]["rows"] == 12 and -1 <= metrics["tiny"]["val_cosine"] <= 1
    model, meta = load_checkpoint(tmp_path / "out" / "tiny" / "model.pt")
    assert model.classes is None and meta["rows"] == 12
    params["distill"]["splits"] = ["segment"]
    with pytest.raises(FileNotFoundError, match="teacher.splits"):
        run_distill(params, folder, cache, tmp_path / "out2", tmp_path / "resume")


def test_distill_params_are_strict():
    assert DistillParams.from_dict(None).enabled is False
    with pytest.raises(ValueError, match="unknown key distill.split;"):
        DistillParams.from_dict({"split": ["segment"]})
    with pytest.raises(ValueError, match="needs distill.members"):
        DistillParams.from_dict({"enabled": True})


def test_centred_targets_take_away_what_every_window_shares():
    """distill.target: centered: non-negative embeddings that share one direction give the mean predictor cosine
    ~0.9 on raw targets and ~0 once centred; the held-out rows are centred with the training mean only."""
    from birdclef.train.embed_distill import DistillParams, EmbeddingRows, centre_targets

    rng = np.random.default_rng(0)
    shared = rng.uniform(1.0, 2.0, 64)
    emb = (shared[None, :] + 0.3 * rng.random((40, 64))).astype(np.float32)  # non-negative, like BirdNET's
    rows = EmbeddingRows(np.array([f"f{i // 4}" for i in range(40)]), np.zeros(40), emb)
    train, held = rows.split(0.2, 0)
    mean = train.embeddings.mean(axis=0)

    def cos_to(x, v):
        return float(np.mean(x @ v / (np.linalg.norm(x, axis=1) * np.linalg.norm(v) + 1e-12)))

    assert cos_to(held.embeddings, mean) > 0.95
    ctrain, cheld, got = centre_targets(train, held)
    np.testing.assert_allclose(got, mean, rtol=1e-6)
    np.testing.assert_allclose(ctrain.embeddings.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(cheld.embeddings, held.embeddings - mean, rtol=1e-5, atol=1e-6)
    assert abs(cos_to(cheld.embeddings, ctrain.embeddings.mean(axis=0) + 1e-3)) < 0.2
    assert list(ctrain.keys) == list(train.keys) and cheld.starts_s.tolist() == held.starts_s.tolist()
    assert DistillParams.from_dict({"target": "centered"}).target == "centered"
    with pytest.raises(ValueError, match="distill.target must be one of raw, centered"):
        DistillParams.from_dict({"target": "whitened"})
