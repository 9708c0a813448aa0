"""Model heads over a timm feature map: ``sed`` (attention pooling over time, N1) and ``cnn`` (global pooling, N2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from birdclef.models._registry import register_head
from birdclef.models.backbone import GeM, ModelConfig


class Head(nn.Module):
    """Base class of registered heads.

    A head sees the mel image twice: ``prepare(mel)`` runs before the encoder (input normalisation), and
    ``forward(features)`` turns the encoder's (B, D, F', T') map into logits.
    """

    def __init__(self, in_features: int, num_classes: int, n_mels: int, in_chans: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.in_features = in_features
        self.num_classes = num_classes

    def prepare(self, mel: torch.Tensor) -> torch.Tensor:
        """Normalise the (B, channels, n_mels, frames) input before the encoder; identity by default."""
        return mel

    def input_modules(self) -> list[nn.Module]:
        """Modules that belong with the backbone (frozen together with it)."""
        return []

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the class-specific layers by fresh ones for ``num_classes`` classes."""
        raise NotImplementedError


@register_head("sed")
class SEDHead(Head):
    """Sound event detection head (TECHNIQUES.md N1): frame-wise classes, attention-pooled to the clip.

    Outputs, for a feature map with T' time steps:
        clip: (B, C) logits of the clip probability sum_t w[t] * sigmoid(cla[t]), w = softmax_t(tanh(att)).
        frame: (B, T', C) frame logits ``cla``.
        att: (B, T', C) attention weights w (each column sums to 1 over time).
    """

    def __init__(self, in_features: int, num_classes: int, n_mels: int, in_chans: int, cfg: ModelConfig) -> None:
        super().__init__(in_features, num_classes, n_mels, in_chans, cfg)
        self.bn0 = nn.BatchNorm2d(n_mels)
        self.gem = GeM(dim=2) if cfg.freq_pool == "gem" else None
        self.dropout = nn.Dropout(cfg.drop_rate)
        self.fc1 = nn.Linear(in_features, in_features)
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        """New ``att`` and ``cla`` 1x1 convolutions; ``fc1`` stays (it is a feature projection)."""
        self.num_classes = num_classes
        self.att = nn.Conv1d(self.in_features, num_classes, kernel_size=1)
        self.cla = nn.Conv1d(self.in_features, num_classes, kernel_size=1)

    def prepare(self, mel: torch.Tensor) -> torch.Tensor:
        """BatchNorm per mel bin: statistics over batch, channels and frames."""
        return self.bn0(mel.transpose(1, 2)).transpose(1, 2)

    def input_modules(self) -> list[nn.Module]:
        """The mel-bin BatchNorm is part of the feature extractor."""
        return [self.bn0]

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Args: features (B, D, F', T'). Returns: {"clip": (B, C), "frame": (B, T', C), "att": (B, T', C)}."""
        x = self.gem(features) if self.gem is not None else features.mean(dim=2)  # (B, D, T')
        # Smooth over neighbouring frames: max keeps short calls, mean keeps long ones.
        x = F.max_pool1d(x, 3, stride=1, padding=1) + F.avg_pool1d(x, 3, stride=1, padding=1)
        x = self.dropout(x)
        x = F.relu(self.fc1(x.transpose(1, 2))).transpose(1, 2)
        x = self.dropout(x)
        log_w = torch.log_softmax(torch.tanh(self.att(x)), dim=-1)  # (B, C, T')
        cla = self.cla(x)  # (B, C, T')
        # logit(sum_t w sigmoid(cla)) in log space: p = sum w*sig(cla), 1 - p = sum w*sig(-cla) since sum w = 1.
        # Exact, finite for any cla, and its gradient never vanishes the way a clamped probability's does.
        clip = torch.logsumexp(log_w + F.logsigmoid(cla), dim=-1) - torch.logsumexp(log_w + F.logsigmoid(-cla), dim=-1)
        return {"clip": clip, "frame": cla.transpose(1, 2), "att": log_w.exp().transpose(1, 2)}


@register_head("cnn")
class CNNHead(Head):
    """Global pooling head (TECHNIQUES.md N2): mean (or GeM) over all positions -> dropout -> linear.

    ``frame`` is the clip logits as a single time step (B, 1, C), so SED-style code works on both heads.
    """

    def __init__(self, in_features: int, num_classes: int, n_mels: int, in_chans: int, cfg: ModelConfig) -> None:
        super().__init__(in_features, num_classes, n_mels, in_chans, cfg)
        self.gem = GeM(dim=2) if cfg.freq_pool == "gem" else None
        self.dropout = nn.Dropout(cfg.drop_rate)
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        """A new final linear layer."""
        self.num_classes = num_classes
        self.fc = nn.Linear(self.in_features, num_classes)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Args: features (B, D, F', T'). Returns: {"clip": (B, C), "frame": (B, 1, C)}."""
        x = features.flatten(2)
        x = self.gem(x) if self.gem is not None else x.mean(dim=2)
        clip = self.fc(self.dropout(x))
        return {"clip": clip, "frame": clip.unsqueeze(1)}
