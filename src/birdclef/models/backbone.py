"""Model config and timm backbones: creation by name, hub or local-file pretrained weights, frequency pooling."""

from __future__ import annotations

import contextlib
import logging
import socket
import urllib.parse
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from birdclef.models.weights import LoadReport, match_state_dict, read_state_dict, to_timm_names

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelConfig:
    """One named model config of params.yaml ``models:`` (TECHNIQUES.md N1-N3).

    Attributes:
        head: registered head name (``sed`` or ``cnn``).
        backbone: any timm model name with a 4-D ``forward_features`` output (CNNs).
        pretrained: ``False``; ``True`` (timm hub; offline, what it cached); or a path to a weights file loaded
            into the backbone by ``load_backbone_weights`` (timm or a converted foreign layout; README
            "Pretrained weights offline").
        freq_pool: how the SED head collapses frequency: ``mean`` or ``gem`` (learnable GeM power).
        drop_rate: dropout of the head (probability).
        drop_path_rate: stochastic depth of the backbone (probability).
        in_chans: input channels; ``None`` takes the mel config's channels (1, or 3 with deltas).
        mel: name of the mel config in params.yaml (bookkeeping only; the mel config itself is passed in).
    """

    head: str = "sed"
    backbone: str = "mobilenetv3_large_100"
    pretrained: bool | str = False
    freq_pool: str = "mean"
    drop_rate: float = 0.5
    drop_path_rate: float = 0.0
    in_chans: int | None = None
    mel: str | None = None

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> ModelConfig:
        """Build from a params dict, rejecting unknown keys and bad values with a message naming them."""
        known = {f.name for f in fields(cls)}
        unknown = set(cfg) - known - {"name"}
        if unknown:
            raise ValueError(f"unknown model config key(s) {sorted(unknown)}; known: {sorted(known)}")
        out = cls(**{k: v for k, v in cfg.items() if k in known})
        if out.freq_pool not in ("mean", "gem"):
            raise ValueError(f"model freq_pool must be mean or gem, not {out.freq_pool!r}")
        for key in ("drop_rate", "drop_path_rate"):
            if not 0.0 <= float(getattr(out, key)) < 1.0:
                raise ValueError(f"model {key} must be in [0, 1), not {getattr(out, key)!r}")
        if not isinstance(out.pretrained, bool | str):
            raise ValueError(f"model pretrained must be false, true or a path, not {out.pretrained!r}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for checkpoints and params logging)."""
        return asdict(self)

    def offline(self) -> ModelConfig:
        """The same config with pretrained weights off (checkpoint weights replace them anyway)."""
        return replace(self, pretrained=False)


def create_backbone(cfg: ModelConfig, in_chans: int) -> tuple[nn.Module, int]:
    """Create the timm encoder without its classifier.

    Args:
        cfg: the model config.
        in_chans: image channels of the mel input.

    Returns:
        (encoder, channels of its ``forward_features`` map).
    """
    kwargs: dict[str, Any] = {"in_chans": in_chans, "num_classes": 0, "global_pool": ""}
    if cfg.drop_path_rate > 0:
        kwargs["drop_path_rate"] = cfg.drop_path_rate
    if not timm.is_model(cfg.backbone):
        raise ValueError(f"unknown timm backbone {cfg.backbone!r} (see timm.list_models())")
    hub = cfg.pretrained is True
    try:
        with _cache_only_unless_hub_reachable() if hub else contextlib.nullcontext():
            encoder = timm.create_model(cfg.backbone, pretrained=hub, **kwargs)
    except Exception as err:
        if not hub:
            raise
        raise RuntimeError(
            f"could not fetch pretrained {cfg.backbone!r} from the timm hub ({type(err).__name__}: {err}); "
            "offline, set pretrained to a local weights file instead"
        ) from err
    if isinstance(cfg.pretrained, str):
        load_backbone_weights(encoder, cfg.pretrained)
    return encoder, int(encoder.num_features)


@contextlib.contextmanager
def _cache_only_unless_hub_reachable(timeout_s: float = 1.0) -> Iterator[None]:
    """Hugging Face hub offline mode (the local cache only) when the hub does not answer a TCP connect in 1 s.

    Offline, the hub client retries each file for ~48 s before it gives up; weights cached earlier still load.
    """
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE  # HF_HUB_OFFLINE=1: cache only already
    if not before:
        url = urllib.parse.urlsplit(constants.ENDPOINT)
        try:
            socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout_s).close()
        except OSError:
            constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def load_backbone_weights(encoder: nn.Module, path: str | Path) -> LoadReport:
    """Load a local weights file into ``encoder`` and report what matched.

    Accepts a plain state dict or a training checkpoint wrapping one (``state_dict``, ``model``, ...), in
    ``.pt/.pth/.bin/.ckpt`` (torch, weights only) or ``.safetensors`` form, with timm's key names or in a foreign
    layout that ``weights.LAYOUTS`` converts (efficientnet_pytorch / EfficientNet-Lite ports, torchvision
    MobileNetV2). A stem conv saved for another channel count (RGB ImageNet weights into a 1-channel mel model)
    is adapted with timm's ``adapt_input_conv``; tensors of another shape (the ImageNet classifier) are skipped.

    Returns:
        the ``LoadReport`` (layout, loaded / adapted / missing / mismatched / unexpected keys).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is unreadable, fills less than ``weights.MIN_LOADED_FRACTION`` of the backbone's
            tensors, or has over ``weights.MAX_UNUSED_FRACTION`` of its own with no place in the backbone (wrong
            file or wrong backbone name: random weights must not pass as pretrained ones).
    """
    state, layout = to_timm_names(read_state_dict(path), encoder)
    chosen, report = match_state_dict(state, encoder, layout)
    if (problem := report.problem()) is not None:
        raise ValueError(
            f"{path}: does not fit backbone {type(encoder).__name__}: {problem}; is it the weights of this "
            f"backbone name? ({report.summary()})"
        )
    encoder.load_state_dict(chosen, strict=False)
    if report.missing or report.mismatched:
        log.warning("%s: %s", path, report.summary())
    else:
        log.info("%s: %s", path, report.summary())
    return report


class GeM(nn.Module):
    """Generalised mean over one dimension with a learnable power p (p=1: mean, p->inf: max)."""

    def __init__(self, dim: int, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.dim = dim
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reduce ``dim`` of ``x``: (mean(clamp(x, eps) ** p)) ** (1 / p)."""
        return x.clamp_min(self.eps).pow(self.p).mean(dim=self.dim).pow(1.0 / self.p)
