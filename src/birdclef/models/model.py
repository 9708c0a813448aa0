"""BirdModel: mel front end + timm backbone + registered head, its factory and the inference wrapper."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from birdclef.features.frontend import MelConfig, MelFrontEnd
from birdclef.models._registry import get_head
from birdclef.models.backbone import ModelConfig, create_backbone


class BirdModel(nn.Module):
    """Waveform or mel in, clip and frame logits out.

    Attributes:
        frontend: the ``MelFrontEnd`` (waveform (B, samples) at 32 kHz -> (B, channels, n_mels, frames)).
        backbone: the timm encoder (``forward_features`` only).
        head: the registered head (``sed`` or ``cnn``).
        cfg, mel_cfg: the configs the model was built from (saved in checkpoints).
        classes: optional class names, in logit order (set by training, saved in checkpoints).
    """

    def __init__(self, cfg: ModelConfig, num_classes: int, mel_cfg: MelConfig) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.cfg = cfg
        self.mel_cfg = mel_cfg
        self.num_classes = num_classes
        self.classes: list[str] | None = None
        self.in_chans = int(cfg.in_chans or mel_cfg.channels)
        self.frontend = MelFrontEnd(mel_cfg)
        self.backbone, features = create_backbone(cfg, self.in_chans)
        self.head = get_head(cfg.head)(features, num_classes, mel_cfg.n_mels, self.in_chans, cfg)
        self._frozen = False

    def forward(
        self, wave: torch.Tensor, spec_augment: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """Args:
            wave: (B, samples) float waveform at 32 kHz.
            spec_augment: optional mel -> mel transform applied between front end and encoder (training
                only; e.g. ``lambda m: spec_aug(m, gen)``).

        Returns:
            ``{"clip": (B, C) logits, "frame": (B, T, C) logits}`` (SED also gives ``"att"`` weights).
        """
        mel = self.frontend(wave)
        if spec_augment is not None:
            mel = spec_augment(mel)
        return self.forward_mel(mel)

    def forward_mel(self, mel: torch.Tensor) -> dict[str, torch.Tensor]:
        """Same as ``forward`` from a (cached) mel image (B, channels, n_mels, frames)."""
        return self.head(self.forward_features(mel))

    def forward_features(self, mel: torch.Tensor) -> torch.Tensor:
        """The backbone's feature map (B, D, F', T') of a mel image, before the head (embedding distillation)."""
        if mel.dim() != 4 or mel.shape[2] != self.mel_cfg.n_mels:
            raise ValueError(f"expected mel (B, channels, {self.mel_cfg.n_mels}, frames), got shape {tuple(mel.shape)}")
        if mel.shape[1] != self.in_chans:
            if mel.shape[1] != 1:
                raise ValueError(f"mel has {mel.shape[1]} channels, the model takes {self.in_chans}")
            mel = mel.expand(-1, self.in_chans, -1, -1)  # a 1-channel mel into an RGB-style stem
        features = self.backbone.forward_features(self.head.prepare(mel))
        if features.dim() != 4:
            raise ValueError(
                f"backbone {self.cfg.backbone!r} returned a {features.dim()}-D feature tensor; "
                "the heads need a (B, D, F, T) map (use a convolutional backbone)"
            )
        return features

    def replace_head(self, num_classes: int) -> None:
        """Keep the backbone, give the head fresh class layers for a new class set (fine-tuning)."""
        device = next(self.backbone.parameters()).device
        self.head.reset_classifier(num_classes)
        self.head.to(device)
        self.num_classes = num_classes
        self.classes = None

    def freeze_backbone(self, flag: bool = True) -> None:
        """Freeze (``True``) or unfreeze the backbone and the head's input normalisation.

        Frozen modules get ``requires_grad=False`` and stay in eval mode (BatchNorm statistics fixed) even when
        ``train()`` is called, so only the head's class layers learn (rare-class fine-tuning, D3).
        """
        self._frozen = flag
        for module in self._backbone_modules():
            module.requires_grad_(not flag)
        self.train(self.training)

    def train(self, mode: bool = True) -> BirdModel:
        """As ``nn.Module.train``, but frozen backbone modules stay in eval mode."""
        super().train(mode)
        if self._frozen:
            for module in self._backbone_modules():
                module.eval()
        return self

    def _backbone_modules(self) -> list[nn.Module]:
        return [self.backbone, *self.head.input_modules()]


def create_model(cfg: dict[str, Any] | ModelConfig, num_classes: int, mel_cfg: dict[str, Any] | MelConfig) -> BirdModel:
    """Build a model from a params ``models.<name>`` dict and a ``mels.<name>`` dict.

    Args:
        cfg: head, backbone, pretrained, freq_pool, drop_rate, drop_path_rate, in_chans (see ``ModelConfig``).
        num_classes: number of output classes C.
        mel_cfg: the mel front-end config.
    """
    model_cfg = cfg if isinstance(cfg, ModelConfig) else ModelConfig.from_dict(cfg)
    mel = mel_cfg if isinstance(mel_cfg, MelConfig) else MelConfig.from_dict(mel_cfg)
    return BirdModel(model_cfg, int(num_classes), mel)


class InferenceWrapper(nn.Module):
    """Probabilities for prediction and ONNX export: forward(wave) -> (clip (B, C), frame (B, T, C)).

    Puts the wrapped model in eval mode.
    """

    def __init__(self, model: BirdModel) -> None:
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: wave (B, samples) at 32 kHz. Returns: (clip_probs (B, C), frame_probs (B, T, C)) in [0, 1]."""
        out = self.model(wave)
        return torch.sigmoid(out["clip"]), torch.sigmoid(out["frame"])
