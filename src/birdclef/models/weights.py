"""Local pretrained weights: read a file, convert foreign key layouts to timm names, match it to a backbone."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from timm.models import adapt_input_conv
from torch import nn

# Wrappers that training scripts commonly put around a backbone's state dict.
STATE_KEYS = ("state_dict_ema", "state_dict", "model", "model_state_dict")
PREFIXES = ("module.", "backbone.", "model.", "encoder.")
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")
# A real pretrained file fills (nearly) all of a backbone; a file that fills less is the wrong file or the
# wrong backbone name, and random weights must not pass silently as pretrained ones.
MIN_LOADED_FRACTION = 0.9
# Nor may a file with many tensors the backbone has no place for (EfficientNet-B0's SE layers loaded into an
# EfficientNet-Lite0 fill all of it): the classifier aside, at most this share of the file may go unused.
MAX_UNUSED_FRACTION = 0.1


@dataclass
class LoadReport:
    """What a weights file gave a backbone.

    Attributes:
        layout: the key layout detected in the file (``timm``, ``efficientnet_pytorch``, ``torchvision_mobilenet_v2``).
        loaded: backbone keys filled from the file (``adapted`` included).
        adapted: stem convs whose input channels were adapted (e.g. RGB -> 1-channel mel).
        missing: backbone keys the file does not have (they keep their random init).
        mismatched: ``"key: file shape -> backbone shape"`` for tensors skipped for their shape.
        unexpected: file keys the backbone has no place for (typically the ImageNet classifier).
        total: backbone tensors counted for ``fraction`` (BatchNorm ``num_batches_tracked`` counters excluded).
        classifier: the backbone's classifier prefix (``classifier``, ``fc``): file tensors under it do not count
            as ``unused``.
        file_total: tensors in the file (counters excluded).
    """

    layout: str = "timm"
    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    total: int = 0
    classifier: str = "classifier"
    file_total: int = 0

    @property
    def fraction(self) -> float:
        """Share of the backbone's tensors that came from the file (0..1)."""
        return sum(1 for k in self.loaded if not _is_counter(k)) / max(self.total, 1)

    @property
    def unused_fraction(self) -> float:
        """Share of the file's tensors, its classifier aside, that found no place in the backbone (0..1)."""
        unused = [k for k in self.unexpected + self.mismatched if not _is_counter(k.split(":")[0])]
        unused = [k for k in unused if not k.startswith(f"{self.classifier}.")]
        return len(unused) / max(self.file_total, 1)

    def problem(self) -> str | None:
        """Why this file must not pass as the backbone's pretrained weights, or ``None`` when it may."""
        if self.fraction < MIN_LOADED_FRACTION:
            return f"it fills {self.fraction:.0%} of the backbone (at least {MIN_LOADED_FRACTION:.0%} needed)"
        if self.unused_fraction > MAX_UNUSED_FRACTION:
            return (
                f"{self.unused_fraction:.0%} of its tensors have no place in the backbone "
                f"(at most {MAX_UNUSED_FRACTION:.0%} allowed, the classifier aside)"
            )
        return None

    def summary(self) -> str:
        """One line: counts, with the first few keys of each problem list."""
        lists = {"missing": self.missing, "shape mismatches": self.mismatched, "unexpected": self.unexpected}
        parts = [f"{len(keys)} {what}{_preview(keys)}" for what, keys in lists.items()]
        return (
            f"layout {self.layout}: loaded {self.fraction:.0%} of the backbone's {self.total} tensors "
            f"({len(self.adapted)} stem adapted); " + "; ".join(parts)
        )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a torch file (``.pt/.pth/.bin/.ckpt/.tar``, weights only) or a ``.safetensors`` file.

    A training checkpoint wrapping the state dict under ``state_dict``/``model``/... is unwrapped.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is of another format or holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file {path} (a model's `pretrained` param) does not exist")
    suffix = path.suffix.lower()
    if suffix in (".onnx", ".h5", ".hdf5", ".keras", ".tflite", ".pb"):
        raise ValueError(
            f"{path}: {suffix} files are not read; give a PyTorch state dict ({', '.join(TORCH_SUFFIXES)}) "
            "or a .safetensors file"
        )
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a pickled nn.Module, a zip of something else, a text file...
            raise ValueError(
                f"{path}: not a weights-only torch file ({type(err).__name__}); save the model's state_dict() instead"
            ) from err
    for key in STATE_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not any(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return {str(k): v for k, v in state.items() if torch.is_tensor(v)}


def strip_prefixes(state: dict[str, torch.Tensor], own: set[str]) -> dict[str, torch.Tensor]:
    """Keep what sits under a wrapper prefix (``module.``, ``backbone.``, ...) when that makes more keys match ``own``.

    A prefix is only cut when it helps, so a real sub-module name is never cut; the keys outside it are its
    siblings (a birdclef checkpoint's ``head.`` and ``frontend.``), not the backbone's, and are dropped.
    """
    for prefix in PREFIXES:
        inner = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        if len(own & set(inner)) > len(own & set(state)):
            state = inner
    return state


# --- foreign layouts -> timm names ---------------------------------------------------------------------------------


def _timm_blocks(encoder: nn.Module, layout: str) -> list[str]:
    """Flat list of timm block names (``blocks.<stage>.<index>``) of an EfficientNet/MobileNet-style encoder."""
    blocks = getattr(encoder, "blocks", None)
    if not isinstance(blocks, nn.Sequential) or not all(isinstance(s, nn.Sequential) for s in blocks):
        raise ValueError(
            f"a {layout} weights file converts into timm EfficientNet/MobileNet-style backbones (stages of blocks); "
            f"{type(encoder).__name__} has no such .blocks"
        )
    return [f"blocks.{i}.{j}" for i, stage in enumerate(blocks) for j in range(len(stage))]


def _check_block_count(found: int, names: list[str], layout: str, encoder: nn.Module) -> None:
    if found != len(names):
        raise ValueError(
            f"the {layout} weights file has {found} blocks, backbone {type(encoder).__name__} has {len(names)} "
            "(a different architecture or width)"
        )


# efficientnet_pytorch (lukemelas) and the EfficientNet-Lite ports built on it: flat `_blocks.<n>`, TF-style names.
_EFFNET_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_EFFNET_EXPANDED = {  # an MBConv block with an expansion conv -> timm InvertedResidual
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_EFFNET_PLAIN = {  # expansion ratio 1 -> timm DepthwiseSeparableConv
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}


def _from_efficientnet_pytorch(state: dict[str, torch.Tensor], encoder: nn.Module) -> dict[str, torch.Tensor]:
    names = _timm_blocks(encoder, "efficientnet_pytorch")
    block_key = re.compile(r"_blocks\.(\d+)\.(\w+)\.(.+)")
    expanded = {int(m[1]) for k in state if (m := block_key.fullmatch(k)) and m[2] == "_expand_conv"}
    blocks = {int(m[1]) for k in state if (m := block_key.fullmatch(k))}
    _check_block_count(len(blocks), names, "efficientnet_pytorch", encoder)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if m := block_key.fullmatch(key):
            n, module, leaf = int(m[1]), m[2], m[3]
            table = _EFFNET_EXPANDED if n in expanded else _EFFNET_PLAIN
            out[f"{names[n]}.{table.get(module, module)}.{leaf}"] = value
        else:
            module, _, leaf = key.partition(".")
            out[f"{_EFFNET_TOP.get(module, module)}.{leaf}"] = value
    return out


# torchvision's MobileNetV2: `features.0` stem, `features.1..N-2` inverted residuals, `features.N-1` head conv.
_TV_MNV2_EXPANDED = {"conv.0.0": "conv_pw", "conv.0.1": "bn1", "conv.1.0": "conv_dw", "conv.1.1": "bn2",
                     "conv.2": "conv_pwl", "conv.3": "bn3"}  # fmt: skip
_TV_MNV2_PLAIN = {"conv.0.0": "conv_dw", "conv.0.1": "bn1", "conv.1": "conv_pw", "conv.2": "bn2"}


def _from_torchvision_mobilenet_v2(state: dict[str, torch.Tensor], encoder: nn.Module) -> dict[str, torch.Tensor]:
    names = _timm_blocks(encoder, "torchvision_mobilenet_v2")
    feature_key = re.compile(r"features\.(\d+)\.(.+)\.(\w+)")
    last = max(int(m[1]) for k in state if (m := feature_key.fullmatch(k)))
    _check_block_count(last - 1, names, "torchvision_mobilenet_v2", encoder)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = feature_key.fullmatch(key)
        if m is None:  # classifier.1 (Dropout is classifier.0)
            out[key.replace("classifier.1.", "classifier.")] = value
            continue
        n, module, leaf = int(m[1]), m[2], m[3]
        if n in (0, last):  # ConvBNActivation: .0 the conv, .1 the BatchNorm
            conv, bn = ("conv_stem", "bn1") if n == 0 else ("conv_head", "bn2")
            edge = {"0": conv, "1": bn}
            out[f"{edge.get(module, module)}.{leaf}"] = value
            continue
        table = _TV_MNV2_EXPANDED if f"features.{n}.conv.3.weight" in state else _TV_MNV2_PLAIN
        out[f"{names[n - 1]}.{table.get(module, module)}.{leaf}"] = value
    return out


Converter = Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]]
# name -> (detector over the file's keys, converter to timm names); tried in order, timm's own names otherwise.
LAYOUTS: dict[str, tuple[Callable[[set[str]], bool], Converter]] = {
    "efficientnet_pytorch": (lambda keys: "_conv_stem.weight" in keys, _from_efficientnet_pytorch),
    "torchvision_mobilenet_v2": (
        lambda keys: "features.0.0.weight" in keys and "features.1.conv.0.0.weight" in keys,
        _from_torchvision_mobilenet_v2,
    ),
}


def to_timm_names(state: dict[str, torch.Tensor], encoder: nn.Module) -> tuple[dict[str, torch.Tensor], str]:
    """Rename a foreign state dict's keys to ``encoder``'s timm names.

    Returns:
        (converted state dict, layout name); a state dict in no known foreign layout comes back as it is, with
        wrapper prefixes stripped, as layout ``timm``.
    """
    state = strip_prefixes(state, set(encoder.state_dict()))
    keys = set(state)
    for name, (detect, convert) in LAYOUTS.items():
        if detect(keys):
            return convert(state, encoder), name
    return state, "timm"


def match_state_dict(
    state: dict[str, torch.Tensor], encoder: nn.Module, layout: str = "timm"
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Pick the tensors of ``state`` (timm names) that fit ``encoder``; adapt a stem conv's input channels.

    The input conv (timm's ``first_conv``) saved for another channel count (RGB ImageNet weights into a
    1-channel mel model) goes through timm's ``adapt_input_conv`` (1 channel: the RGB kernels summed, so a grey
    image gives the activations the RGB image of that grey would); other shape mismatches are skipped.

    Returns:
        (tensors to load, report).
    """
    own = encoder.state_dict()
    cfg = getattr(encoder, "pretrained_cfg", None) or {}
    classifier = str(cfg.get("classifier") or "classifier")
    stem = f"{cfg.get('first_conv') or 'conv_stem'}.weight"  # only the input conv may change its channels
    report = LoadReport(
        layout=layout,
        total=sum(1 for k in own if not _is_counter(k)),
        classifier=classifier,
        file_total=sum(1 for k in state if not _is_counter(k)),
    )
    chosen: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        target = own.get(key)
        if target is None:
            report.unexpected.append(key)
        elif value.shape == target.shape:
            chosen[key] = value.to(target.dtype)
        elif key == stem and _same_but_input_channels(value, target):
            chosen[key] = adapt_input_conv(target.shape[1], value.float(), base_chans=value.shape[1]).to(target.dtype)
            report.adapted.append(key)
        else:
            report.mismatched.append(f"{key}: {tuple(value.shape)} -> {tuple(target.shape)}")
    report.loaded = list(chosen)
    skipped = {m.split(":")[0] for m in report.mismatched}
    report.missing = [k for k in own if k not in chosen and k not in skipped and not _is_counter(k)]
    return chosen, report


def _same_but_input_channels(value: torch.Tensor, target: torch.Tensor) -> bool:
    """Conv kernels (out, in, kh, kw) equal in all but ``in``."""
    return (
        value.dim() == 4 == target.dim() and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]
    )


def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def _preview(keys: list[str], n: int = 5) -> str:
    return (" " + str(keys[:n]) + (" ..." if len(keys) > n else "")) if keys else ""
