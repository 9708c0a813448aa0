"""Tests for birdclef.infer.members: the ensemble spec, a member's chunking and the predictor factories."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from birdclef.infer import members as M

CLASSES = ["a", "b", "c"]


def test_member_predict_overrides_and_typos():
    cfg = M.member_predict_cfg({"name": "cnn", "predict": {"chunk_s": 10}}, {"stride_s": 2.5})
    assert cfg["chunk_s"] == 10 and cfg["stride_s"] == 2.5 and cfg["pool"] == "mean"
    with pytest.raises(ValueError, match="'cnn'.*strid"):
        M.member_predict_cfg({"name": "cnn", "predict": {"strid": 1}})


def test_load_spec_checks_format_and_members(tmp_path: Path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not an ensemble spec"):
        M.load_spec(path)
    spec = {"format": M.SPEC_FORMAT, "classes": CLASSES, "combination": "mean", "postprocess": {}, "predict": {}}
    path.write_text(json.dumps({**spec, "members": [{"name": "m"}]}))
    with pytest.raises(ValueError, match="member 0 lacks"):
        M.load_spec(path)
    member = {"name": "m", "checkpoint": "x.pt", "weight": 1.0, "classes": None}
    path.write_text(json.dumps({**spec, "members": [member]}))
    assert M.load_spec(path)["members"][0]["name"] == "m"


def test_make_factory_picks_the_backend_and_refuses_what_cannot_apply(tmp_path: Path, caplog):
    with caplog.at_level(logging.WARNING):
        assert M.make_factory("auto", tmp_path) is M.torch_factory  # no export_spec.json: torch, with a warning
    assert "falling back to the torch backend" in caplog.text
    assert M.make_factory("torch", tmp_path) is M.torch_factory and M.make_factory("auto", None) is M.torch_factory
    with pytest.raises(FileNotFoundError, match="backend onnxruntime needs an export folder"):
        M.make_factory("onnxruntime", tmp_path)
    with pytest.raises(ValueError, match="infer backend must be auto, torch, onnxruntime or openvino, not 'tflite'"):
        M.make_factory("tflite", tmp_path)
    (tmp_path / "export_spec.json").write_text("{}")
    assert M.make_factory("auto", tmp_path) == M.ExportFactory(str(tmp_path), None)  # the export stage's choice
    assert M.make_factory("openvino", tmp_path) == M.ExportFactory(str(tmp_path), "openvino")


def test_a_factory_without_group_stacks_its_members_predictors():
    def factory(member, threads):
        return lambda wave: {"clip": wave[:, :1] * member["k"], "frame": wave[:, None, :1]}

    group = M.group_predictor(factory, [{"k": 1.0}, {"k": 3.0}], threads=1)
    out = group(np.full((2, 4), 0.5, np.float32))
    assert [o["clip"][0, 0] for o in out] == [0.5, 1.5]


def test_the_torch_factory_groups_members_behind_one_front_end_per_mel_config(tmp_path: Path):
    import pickle

    import torch

    from birdclef.infer.torch_backend import TorchGroup, TorchPredictor
    from birdclef.models import create_model, save_checkpoint

    mel = {"n_fft": 512, "hop_length": 320, "n_mels": 32, "fmin": 40, "fmax": 15000, "top_db": 80, "norm": "ref_max"}
    cfg = {"head": "sed", "backbone": "test_efficientnet", "pretrained": False, "mel": "m", "freq_pool": "mean",
           "drop_rate": 0.0, "drop_path_rate": 0.0}
    members = []
    for k in range(2):
        torch.manual_seed(k)
        save_checkpoint(tmp_path / f"m{k}.pt", create_model(cfg, 3, mel), {})
        members.append({"name": f"m{k}", "checkpoint": str(tmp_path / f"m{k}.pt")})
    factory = pickle.loads(pickle.dumps(M.torch_factory))  # runner workers receive it pickled
    group = M.group_predictor(factory, members, threads=1)
    assert isinstance(group, TorchGroup) and group.frontend_of == [0, 0]
    wave = np.random.default_rng(0).normal(0, 0.1, (2, 32000)).astype(np.float32)
    for got, member in zip(group(wave), members, strict=True):
        np.testing.assert_array_equal(got["clip"], TorchPredictor(member["checkpoint"])(wave)["clip"])
