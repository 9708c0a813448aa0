"""The mel front end: waveform -> normalised log-mel image, one nn.Module for caches, models and ONNX export."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torchaudio
from torch import nn

from birdclef import SAMPLE_RATE


@dataclass(frozen=True)
class MelConfig:
    """One named mel configuration (TECHNIQUES.md F1, F2).

    Attributes:
        n_fft: FFT size in samples.
        hop_length: hop in samples (320 at 32 kHz = 100 frames per second).
        n_mels: number of mel bins.
        fmin: lowest mel frequency (Hz).
        fmax: highest mel frequency (Hz).
        top_db: dynamic range kept below each clip's maximum (dB).
        norm: ``ref_max`` (dB relative to the clip maximum, clamped at -top_db, scaled to [0, 1]),
            ``minmax`` (per clip min-max to [0, 1]) or ``db`` (raw dB, ref = 1.0).
        deltas: append delta and delta-delta channels (3 channels instead of 1).
        absmax: divide each waveform by its absolute maximum first (rank 1).
    """

    n_fft: int = 1024
    hop_length: int = 320
    n_mels: int = 128
    fmin: float = 40.0
    fmax: float = 15_000.0
    top_db: float = 80.0
    norm: str = "ref_max"
    deltas: bool = False
    absmax: bool = False

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> MelConfig:
        """Build from a params dict, rejecting unknown keys (a typo must not pass silently)."""
        known = {f.name for f in fields(cls)}
        unknown = set(cfg) - known - {"name"}
        if unknown:
            raise ValueError(f"unknown mel config key(s) {sorted(unknown)}; known: {sorted(known)}")
        cfg = {k: v for k, v in cfg.items() if k in known}
        if cfg.get("norm", "ref_max") not in ("ref_max", "minmax", "db"):
            raise ValueError(f"mel norm must be ref_max, minmax or db, not {cfg['norm']!r}")
        return cls(**cfg)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for checkpoints and params logging)."""
        return asdict(self)

    @property
    def channels(self) -> int:
        """Number of image channels the front end produces."""
        return 3 if self.deltas else 1

    def frames(self, samples: int) -> int:
        """Number of frames for a waveform of ``samples`` samples (centred STFT)."""
        return samples // self.hop_length + 1


class MelFrontEnd(nn.Module):
    """Waveform (batch, samples) at 32 kHz -> image (batch, channels, n_mels, frames).

    Each clip is normalised on its own, so the output never depends on what else is in the batch
    (cached features, batched training and single-file inference agree).
    """

    def __init__(self, cfg: MelConfig | dict[str, Any]) -> None:
        super().__init__()
        self.cfg = cfg if isinstance(cfg, MelConfig) else MelConfig.from_dict(cfg)
        c = self.cfg
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE,
            n_fft=c.n_fft,
            hop_length=c.hop_length,
            f_min=c.fmin,
            f_max=c.fmax,
            n_mels=c.n_mels,
            power=2.0,
            center=True,
            pad_mode="reflect",
            norm="slaney",
            mel_scale="slaney",
        )

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Args: wave (batch, samples) float. Returns: (batch, channels, n_mels, frames) float32."""
        if wave.dim() != 2:
            raise ValueError(f"front end expects (batch, samples), got shape {tuple(wave.shape)}")
        if torch.is_autocast_enabled(wave.device.type):
            # Under AMP the mel projection of a power spectrogram overflows float16 (max 65504) for loud input:
            # a 3 kHz tone at 0.9 gives mel power ~1e5. The front end always runs in float32; only the encoder
            # after it runs in reduced precision. (At export and on CPU inference autocast is off: no branch.)
            with torch.autocast(wave.device.type, enabled=False):
                return self._image(wave.float())
        return self._image(wave.float())

    def _image(self, wave: torch.Tensor) -> torch.Tensor:
        """The float32 body of :meth:`forward`."""
        c = self.cfg
        if c.absmax:
            wave = wave / wave.abs().amax(dim=1, keepdim=True).clamp_min(1e-8)
        power = self.mel(wave)  # (B, n_mels, frames)
        db = 10.0 * torch.log10(power.clamp_min(1e-10))
        peak = db.amax(dim=(1, 2), keepdim=True)
        if c.norm == "ref_max":
            x = (torch.maximum(db - peak, torch.full_like(db, -c.top_db)) + c.top_db) / c.top_db
        elif c.norm == "minmax":
            db = torch.maximum(db, peak - c.top_db)
            low = db.amin(dim=(1, 2), keepdim=True)
            x = (db - low) / (peak - low).clamp_min(1e-6)
        else:
            x = torch.maximum(db, peak - c.top_db)
        x = x.unsqueeze(1)
        if c.deltas:
            d1 = torchaudio.functional.compute_deltas(x)
            d2 = torchaudio.functional.compute_deltas(d1)
            x = torch.cat([x, d1, d2], dim=1)
        return x
