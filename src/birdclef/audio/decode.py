"""Decode any soundfile-readable file (ogg, flac, wav, mp3) to float32 mono at 32 kHz, with clear errors."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from birdclef import SAMPLE_RATE

MIN_SAMPLE_RATE = 16_000
"""Files stored below this rate (Hz) lack most of the bird band; they are rejected."""

REASONS = ("missing", "unreadable", "unsupported", "empty", "nonfinite", "low_sample_rate")
"""Machine-readable reasons an :class:`AudioError` carries (used as quarantine reasons)."""


class AudioError(Exception):
    """A file that cannot be turned into a usable waveform.

    Attributes:
        path: the offending file.
        reason: one of :data:`REASONS`.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str, detail: str) -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {reason}: {detail}")

    def __reduce__(self) -> tuple[type[AudioError], tuple[str, str, str]]:
        # Exceptions pickle through their args by default; this one is rebuilt from its three fields, so it can
        # cross a process pool.
        return (AudioError, (self.path, self.reason, self.detail))


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file (nothing decoded).

    Attributes:
        sample_rate: stored rate in Hz.
        frames: samples per channel at the stored rate.
        channels: number of channels.
        format: soundfile's container name (``OGG``, ``WAV``, ``MP3``, ...).
    """

    sample_rate: int
    frames: int
    channels: int
    format: str

    @property
    def duration_s(self) -> float:
        """Duration in seconds."""
        return self.frames / self.sample_rate

    def samples_at(self, sr: int = SAMPLE_RATE) -> int:
        """Number of samples the whole file has once resampled to ``sr`` Hz."""
        return _resampled_len(self.frames, self.sample_rate, sr)


def _resampled_len(frames: int, sr_in: int, sr_out: int) -> int:
    return frames if sr_in == sr_out else round(frames * sr_out / sr_in)


def _open_error(path: str | os.PathLike[str], err: Exception) -> AudioError:
    if not os.path.exists(path):
        return AudioError(path, "missing", "no such file")
    if os.path.getsize(path) == 0:
        return AudioError(path, "empty", "zero-byte file")
    msg = str(err)
    if "not recognised" in msg.lower() or "unsupported" in msg.lower():
        return AudioError(path, "unsupported", f"format not supported by libsndfile ({msg})")
    return AudioError(path, "unreadable", msg)


def audio_info(path: str | os.PathLike[str], min_sample_rate: int = MIN_SAMPLE_RATE) -> AudioInfo:
    """Read the header of ``path``.

    Raises:
        AudioError: missing, unreadable, unsupported, empty (zero frames) or below ``min_sample_rate``.
    """
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise _open_error(path, err) from err
    if info.samplerate < min_sample_rate:
        raise AudioError(path, "low_sample_rate", f"{info.samplerate} Hz < {min_sample_rate} Hz")
    if info.frames <= 0:
        raise AudioError(path, "empty", "no audio frames")
    return AudioInfo(int(info.samplerate), int(info.frames), int(info.channels), str(info.format))


def resample(wave: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a 1-D float32 waveform with soxr (HQ). Returns the input unchanged when the rates match."""
    if sr_in == sr_out:
        return wave
    return soxr.resample(wave, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def load_audio(
    path: str | os.PathLike[str],
    start_s: float = 0.0,
    stop_s: float | None = None,
    *,
    sr: int = SAMPLE_RATE,
    min_sample_rate: int = MIN_SAMPLE_RATE,
) -> np.ndarray:
    """Decode ``path`` (or the part between ``start_s`` and ``stop_s``) to float32 mono at ``sr`` Hz.

    Multi-channel audio is averaged to mono; other rates are resampled with soxr. Partial reads seek in the
    file, so only the requested part is decoded (libsndfile seeks in wav, flac, ogg and mp3). The output
    length is exactly ``round(stop_s * sr) - round(start_s * sr)`` samples (clipped to the file's length at
    ``sr``), so callers can size buffers from :func:`audio_info` without decoding.

    Args:
        path: audio file.
        start_s: first second to return.
        stop_s: second to stop at (exclusive); ``None`` = end of file.
        sr: output rate in Hz.
        min_sample_rate: files stored below this rate raise ``low_sample_rate``.

    Returns:
        (samples,) float32 array at ``sr`` Hz.

    Raises:
        AudioError: missing, unreadable, unsupported format, empty, NaN/inf samples, or rate below minimum.
    """
    if start_s < 0 or (stop_s is not None and stop_s < start_s):
        raise ValueError(f"{path}: bad span start_s={start_s}, stop_s={stop_s}")
    try:
        f = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise _open_error(path, err) from err
    with f:
        sr_in, frames = int(f.samplerate), int(f.frames)
        if sr_in < min_sample_rate:
            raise AudioError(path, "low_sample_rate", f"{sr_in} Hz < {min_sample_rate} Hz")
        if frames <= 0:
            raise AudioError(path, "empty", "no audio frames")
        total_out = _resampled_len(frames, sr_in, sr)
        out_start = min(round(start_s * sr), total_out)
        out_stop = total_out if stop_s is None else min(round(stop_s * sr), total_out)
        want = out_stop - out_start
        # Read a slightly wider native span so the resampler's edges fall outside the kept part.
        margin = 0 if sr_in == sr else 64
        in_start = max(0, math.floor(out_start * sr_in / sr) - margin)
        # Start on a sample shared by both rate grids so the partial read has the same phase as a full decode.
        grid = sr_in // math.gcd(sr_in, sr)
        in_start -= in_start % grid
        in_stop = min(frames, math.ceil(out_stop * sr_in / sr) + margin)
        try:
            if in_start and f.seekable():
                f.seek(in_start)
            elif in_start:
                f.read(in_start, dtype="float32")
            data = f.read(in_stop - in_start, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioError(path, "unreadable", f"decode failed: {err}") from err
    if data.shape[0] == 0 and want > 0:
        raise AudioError(path, "empty", f"no samples decoded in [{start_s}, {stop_s}] s")
    wave = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    if not np.isfinite(wave).all():
        bad = int((~np.isfinite(wave)).sum())
        raise AudioError(path, "nonfinite", f"{bad} NaN/inf samples")
    wave = resample(np.ascontiguousarray(wave, dtype=np.float32), sr_in, sr)
    skip = out_start - in_start * sr // sr_in
    wave = wave[max(skip, 0) : max(skip, 0) + want]
    if wave.shape[0] < want:
        # Headers can overstate frames by a few samples (mp3, resampler rounding): pad to the promised length.
        wave = np.pad(wave, (0, want - wave.shape[0]))
    return np.ascontiguousarray(wave, dtype=np.float32)
