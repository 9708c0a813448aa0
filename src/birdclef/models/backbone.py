"""Model config and timm backbones: creation by name, hub or local-file pretrained weights, frequency pooling."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import adapt_input_conv
from torch import nn

log = logging.getLogger(__name__)

# Wrappers that training scripts commonly put around a backbone's state dict.
_STATE_KEYS = ("state_dict_ema", "state_dict", "model", "model_state_dict")
_PREFIXES = ("module.", "backbone.", "model.", "encoder.")


@dataclass(frozen=True)
class ModelConfig:
    """One named model config of params.yaml ``models:`` (TECHNIQUES.md N1-N3).

    Attributes:
        head: registered head name (``sed`` or ``cnn``).
        backbone: any timm model name with a 4-D ``forward_features`` output (CNNs).
        pretrained: ``False``; ``True`` (timm hub, needs the network); or a path to a local weights file loaded
            into the backbone with ``strict=False``.
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


def load_backbone_weights(encoder: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load a local weights file into ``encoder`` with ``strict=False`` and report what did not match.

    Accepts a plain state dict or a training checkpoint wrapping one (``state_dict``, ``model``, ...), in
    ``.pt/.pth/.bin`` (torch) or ``.safetensors`` form. A stem conv saved for another channel count (e.g. RGB
    ImageNet weights into a 1-channel mel model) is adapted with timm's ``adapt_input_conv``; other tensors of
    the wrong shape (typically the ImageNet classifier) are skipped.

    Returns:
        ``{"missing": [...], "unexpected": [...], "skipped": [...], "adapted": [...]}`` key lists.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: no tensor of the file matches the backbone (wrong file or wrong backbone name).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in _STATE_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    own = encoder.state_dict()
    state = _strip_prefixes(state, set(own))
    filtered: dict[str, torch.Tensor] = {}
    skipped, adapted = [], []
    for key, value in state.items():
        if key not in own or not torch.is_tensor(value) or value.shape == own[key].shape:
            filtered[key] = value
        elif value.dim() == 4 and value.shape[0] == own[key].shape[0] and value.shape[2:] == own[key].shape[2:]:
            filtered[key] = adapt_input_conv(own[key].shape[1], value.float()).to(own[key].dtype)
            adapted.append(key)
        else:
            skipped.append(key)
    result = encoder.load_state_dict(filtered, strict=False)
    report = {
        "missing": list(result.missing_keys),
        "unexpected": list(result.unexpected_keys),
        "skipped": skipped,
        "adapted": adapted,
    }
    loaded = len(filtered) - len(report["unexpected"])
    if loaded == 0:
        raise ValueError(f"{path}: no tensor matches backbone {type(encoder).__name__} (wrong file?)")
    if report["missing"] or report["skipped"]:
        log.warning(
            "%s: loaded %d tensors; %d backbone keys missing from the file %s; %d skipped for shape %s; %d unexpected",
            path,
            loaded,
            len(report["missing"]),
            _preview(report["missing"]),
            len(skipped),
            _preview(skipped),
            len(report["unexpected"]),
        )
    else:
        log.info("%s: loaded all %d backbone tensors (%d adapted)", path, loaded, len(adapted))
    return report


def _strip_prefixes(state: dict[str, Any], own: set[str]) -> dict[str, Any]:
    # Strip a wrapper prefix only when it makes more keys match, so a real sub-module name is never cut.
    for prefix in _PREFIXES:
        stripped = {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}
        if len(own & set(stripped)) > len(own & set(state)):
            state = stripped
    return state


def _preview(keys: list[str], n: int = 8) -> str:
    return str(keys[:n]) + (" ..." if len(keys) > n else "")


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
