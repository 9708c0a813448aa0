"""Tests for birdclef.models: registry, heads, factory, pretrained loading, checkpoints."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import timm
import torch
import yaml

from birdclef.models import (
    BirdModel,
    GeM,
    InferenceWrapper,
    ModelConfig,
    create_model,
    list_heads,
    load_checkpoint,
    register_head,
    save_checkpoint,
)

MEL = {"n_fft": 512, "hop_length": 320, "n_mels": 32, "fmin": 40, "fmax": 15000}
TINY_BACKBONES = ["test_efficientnet", "test_resnet"]
SAMPLES = 32_000  # 1 s: enough frames for a few encoder time steps, fast on CPU


def _model(head: str = "sed", backbone: str = "test_efficientnet", classes: int = 5, **kw) -> BirdModel:
    torch.manual_seed(0)
    return create_model({"head": head, "backbone": backbone, "drop_rate": 0.3, **kw}, classes, MEL)


def _wave(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, SAMPLES, generator=torch.Generator().manual_seed(seed))


def test_registry_has_sed_and_cnn():
    assert {"sed", "cnn"} <= set(list_heads())


def test_register_head_rejects_duplicate_name():
    with pytest.raises(ValueError, match="already registered"):
        register_head("sed")(torch.nn.Module)


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
@pytest.mark.parametrize("head", sorted({"sed", "cnn"} | set(list_heads())))
def test_forward_shapes_and_backward(head, backbone):
    model = _model(head, backbone, classes=5).train()
    out = model(_wave(3))
    assert out["clip"].shape == (3, 5)
    assert out["frame"].dim() == 3 and out["frame"].shape[0] == 3 and out["frame"].shape[2] == 5
    assert torch.isfinite(out["clip"]).all() and torch.isfinite(out["frame"]).all()
    (out["clip"].sum() + out["frame"].sum()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)


def test_sed_clip_prob_equals_attention_weighted_frame_probs():
    model = _model("sed", freq_pool="gem").eval()
    seen = {}
    model.head.att.register_forward_hook(lambda m, i, o: seen.__setitem__("att", o))
    model.head.cla.register_forward_hook(lambda m, i, o: seen.__setitem__("cla", o))
    out = model(_wave(2))
    weights = torch.softmax(torch.tanh(seen["att"]), dim=-1)  # (B, C, T)
    clip_prob = (weights * torch.sigmoid(seen["cla"])).sum(dim=-1)
    assert out["frame"].shape[1] > 1
    torch.testing.assert_close(torch.sigmoid(out["clip"]), clip_prob, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out["frame"], seen["cla"].transpose(1, 2))


def test_sed_clip_logit_is_finite_for_saturated_frames():
    head = _model("sed").head.eval()
    features = torch.full((1, head.in_features, 2, 4), 1e4)
    out = head(features)
    assert torch.isfinite(out["clip"]).all()


def test_cnn_frame_is_clip_as_one_step():
    out = _model("cnn").eval()(_wave(2))
    assert out["frame"].shape == (2, 1, 5)
    torch.testing.assert_close(out["frame"][:, 0], out["clip"])


def test_forward_mel_matches_forward_and_spec_augment_is_applied():
    model = _model("sed").eval()
    wave = _wave(2)
    mel = model.frontend(wave)
    torch.testing.assert_close(model(wave)["clip"], model.forward_mel(mel)["clip"])
    zeroed = model(wave, spec_augment=torch.zeros_like)["clip"]
    torch.testing.assert_close(zeroed, model.forward_mel(torch.zeros_like(mel))["clip"])
    assert not torch.allclose(zeroed, model(wave)["clip"])


def test_forward_mel_rejects_wrong_mel_bins():
    with pytest.raises(ValueError, match="expected mel"):
        _model().forward_mel(torch.zeros(1, 1, 64, 100))


def test_in_chans_three_takes_one_channel_mel():
    model = _model("cnn", in_chans=3).eval()
    assert model.in_chans == 3
    assert model(_wave(1))["clip"].shape == (1, 5)


def test_inference_wrapper_returns_probabilities_in_eval_mode():
    model = _model("sed").train()
    wrapper = InferenceWrapper(model)
    assert not model.training
    clip, frame = wrapper(_wave(2))
    assert clip.shape == (2, 5) and frame.shape[0] == 2 and frame.shape[2] == 5
    assert ((clip >= 0) & (clip <= 1)).all() and ((frame >= 0) & (frame <= 1)).all()
    torch.testing.assert_close(wrapper(_wave(2))[0], clip)


@pytest.mark.parametrize("head", ["sed", "cnn"])
def test_checkpoint_round_trip_gives_equal_outputs(tmp_path, head):
    model = _model(head, freq_pool="gem")
    model.train()
    model(_wave(4, seed=3))  # move BatchNorm running stats off their defaults
    model.eval()
    path = tmp_path / "ckpt" / "model.pt"
    save_checkpoint(path, model, {"classes": list("abcde"), "epoch": 3, "metrics": {"auc": 0.5}})
    loaded, meta = load_checkpoint(path)
    assert meta == {"classes": list("abcde"), "epoch": 3, "metrics": {"auc": 0.5}}
    assert loaded.classes == list("abcde") and loaded.cfg == model.cfg and loaded.mel_cfg == model.mel_cfg
    wave = _wave(2, seed=4)
    for key in ("clip", "frame"):
        torch.testing.assert_close(loaded(wave)[key], model(wave)[key], rtol=0, atol=0)
    assert not list(path.parent.glob(".*tmp"))


def test_load_checkpoint_forces_pretrained_off(tmp_path):
    weights = tmp_path / "backbone.pt"
    torch.save(_model().backbone.state_dict(), weights)
    model = _model(pretrained=str(weights))
    save_checkpoint(tmp_path / "m.pt", model, {})
    weights.unlink()  # the weights file is gone: loading must not need it
    loaded, _ = load_checkpoint(tmp_path / "m.pt")
    assert loaded.cfg.pretrained is False


def test_save_checkpoint_rejects_wrong_class_count(tmp_path):
    with pytest.raises(ValueError, match="3 class names"):
        save_checkpoint(tmp_path / "m.pt", _model(classes=5), {"classes": ["a", "b", "c"]})


def test_load_checkpoint_rejects_other_files(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a birdclef model checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_replace_head_keeps_backbone_and_changes_classes():
    model = _model("sed", classes=5)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    fc1 = model.head.fc1.weight.clone()
    model.replace_head(9)
    assert model.num_classes == 9
    assert model.eval()(_wave(1))["clip"].shape == (1, 9)
    for k, v in model.backbone.state_dict().items():
        torch.testing.assert_close(v, before[k])
    torch.testing.assert_close(model.head.fc1.weight, fc1)


def test_freeze_backbone_trains_only_head_and_keeps_batchnorm_stats():
    model = _model("sed")
    model.freeze_backbone(True)
    model.train()
    assert not model.backbone.training and not model.head.bn0.training
    stats = model.head.bn0.running_mean.clone()
    out = model(_wave(2))
    out["clip"].sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.head.cla.weight.grad is not None
    torch.testing.assert_close(model.head.bn0.running_mean, stats)
    model.freeze_backbone(False)
    assert model.backbone.training and all(p.requires_grad for p in model.backbone.parameters())


def test_local_pretrained_file_is_loaded_with_stem_adapted_and_missing_keys_reported(tmp_path, caplog):
    torch.manual_seed(5)
    rgb = timm.create_model("test_efficientnet", in_chans=3, num_classes=10)
    state = {f"module.{k}": v for k, v in rgb.state_dict().items() if not k.startswith("bn2.")}
    path = tmp_path / "imagenet.pth"
    torch.save({"state_dict": state}, path)
    with caplog.at_level(logging.WARNING):
        model = _model("sed", pretrained=str(path))
    own = model.backbone.state_dict()
    torch.testing.assert_close(own["blocks.0.0.conv.weight"], rgb.state_dict()["blocks.0.0.conv.weight"])
    assert own["conv_stem.weight"].shape[1] == 1
    stem = rgb.state_dict()["conv_stem.weight"].sum(dim=1, keepdim=True)
    torch.testing.assert_close(own["conv_stem.weight"], stem)
    assert "missing" in caplog.text and "bn2.weight" in caplog.text


def test_local_pretrained_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        _model(pretrained=str(tmp_path / "nope.pt"))
    junk = tmp_path / "junk.pt"
    torch.save({"unrelated.weight": torch.zeros(3)}, junk)
    with pytest.raises(ValueError, match="junk.pt"):
        _model(pretrained=str(junk))


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"head": "sed", "backbone": "test_efficientnet", "dropout": 0.1}, "unknown model config key"),
        ({"head": "transformer", "backbone": "test_efficientnet"}, "unknown model head"),
        ({"head": "sed", "backbone": "no_such_net"}, "unknown timm backbone"),
        ({"head": "sed", "backbone": "test_efficientnet", "freq_pool": "max"}, "freq_pool"),
        ({"head": "sed", "backbone": "test_efficientnet", "drop_rate": 1.5}, "drop_rate"),
    ],
)
def test_bad_model_config_is_rejected_clearly(cfg, message):
    with pytest.raises((ValueError, KeyError), match=message):
        create_model(cfg, 3, MEL)


def test_gem_is_mean_at_p1_and_near_max_at_large_p():
    x = torch.rand(2, 3, 6) + 0.1
    gem = GeM(dim=2, p=1.0)
    torch.testing.assert_close(gem(x), x.mean(dim=2))
    gem_big = GeM(dim=2, p=60.0)
    assert (gem_big(x) <= x.amax(dim=2) + 1e-5).all() and (gem_big(x) > 0.95 * x.amax(dim=2)).all()


def test_params_model_configs_are_valid():
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    assert params["models"]
    for name, cfg in params["models"].items():
        parsed = ModelConfig.from_dict(cfg)
        assert parsed.head in list_heads(), name
        assert timm.is_model(parsed.backbone), name
        assert cfg["mel"] in params["mels"], name


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the block ends: a connect is refused at once


def test_hub_pretrained_offline_fails_fast_with_the_clear_message(tmp_path, monkeypatch):
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")  # an unreachable hub
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # nothing cached
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="could not fetch pretrained 'test_efficientnet' from the timm hub.*"
                                           "offline, set pretrained to a local weights file"):
        _model(pretrained=True)
    assert time.monotonic() - start < 5  # was ~48 s of retries per file
    assert constants.HF_HUB_OFFLINE is False  # the process's setting is restored


def test_hub_pretrained_weights_cached_earlier_load_while_the_hub_is_unreachable(tmp_path, monkeypatch):
    from huggingface_hub import constants
    from safetensors.torch import save_file

    torch.manual_seed(3)
    source = timm.create_model("test_efficientnet", num_classes=0)  # "downloaded" weights, 3-channel stem
    commit = "0" * 39 + "1"
    repo = tmp_path / "hub" / "models--timm--test_efficientnet.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(source.state_dict(), str(repo / "snapshots" / commit / "model.safetensors"))
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    own = _model(pretrained=True).backbone.state_dict()
    torch.testing.assert_close(own["blocks.0.0.conv.weight"], source.state_dict()["blocks.0.0.conv.weight"])
    torch.testing.assert_close(own["conv_stem.weight"], source.state_dict()["conv_stem.weight"].sum(1, keepdim=True))
