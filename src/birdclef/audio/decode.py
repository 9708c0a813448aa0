"""Decode any soundfile-readable file (ogg, flac, wav, mp3) to float32 mono at 32 kHz, with clear errors.

``load_audio`` decodes a file or a part of it; ``stream_audio`` walks a file of any length in blocks, so memory
stays flat in the duration. Both notice a file that decodes only partly (``truncated``: an Ogg stream without its
end, fewer frames than the header declares) and either warn and return what decodes or raise, as the caller's
``on_truncated`` says.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from birdclef import SAMPLE_RATE
from birdclef.audio.container import id3_problem, ogg_tail_problem, wav_declared_frames

log = logging.getLogger(__name__)

MIN_SAMPLE_RATE = 16_000
"""Files stored below this rate (Hz) lack most of the bird band; they are rejected."""

REASONS = ("missing", "unreadable", "unsupported", "empty", "nonfinite", "low_sample_rate", "truncated")
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


ON_TRUNCATED = ("warn", "raise")
"""What ``load_audio`` / ``stream_audio`` do with a file that decodes only partly: log a warning and return what
decodes (zero-padded to the promised length), or raise ``AudioError(reason="truncated")``."""


def _open_error(path: str | os.PathLike[str], err: Exception) -> AudioError:
    if not os.path.exists(path):
        return AudioError(path, "missing", "no such file")
    if os.path.getsize(path) == 0:
        return AudioError(path, "empty", "zero-byte file")
    # libsndfile repeats the path ("Error opening 'x.ogg': ..."); AudioError names it already.
    msg = str(getattr(err, "error_string", "") or err).strip() or str(err)
    lie = id3_problem(path)
    if lie:  # libsndfile would say "possibly a pipe?" about an mp3 whose ID3 tag size is wrong
        return AudioError(path, "unreadable", lie)
    if "possibly a pipe" in msg and os.path.isfile(path):
        return AudioError(path, "unreadable", "libsndfile cannot parse it as audio (corrupt or not audio)")
    if "not recognised" in msg.lower() or "unsupported" in msg.lower():
        return AudioError(path, "unsupported", f"format not supported by libsndfile ({msg})")
    return AudioError(path, "unreadable", msg)


def _check_mode(on_truncated: str) -> None:
    if on_truncated not in ON_TRUNCATED:
        raise ValueError(f"on_truncated must be one of {', '.join(ON_TRUNCATED)}, not {on_truncated!r}")


def _truncation(path: str | os.PathLike[str], f: sf.SoundFile, wanted: int, got: int, at_end: bool) -> str:
    """Why a read of ``wanted`` native frames that gave ``got`` shows a cut file, or ``""``.

    libsndfile counts a cut Ogg file's frames as what decodes (so only its last page tells), clamps a cut WAV's
    to the bytes present, and estimates an MP3's from headers (decoders differ by priming, so 1% or two frames
    of slack, as ``data.probe`` allows).
    """
    fmt, frames, sr_in = str(f.format), int(f.frames), int(f.samplerate)
    slack = max(int(frames * 0.01), 2304) if fmt == "MP3" else 0
    if got < wanted - slack:
        lie = id3_problem(path) if fmt == "MP3" else ""
        return f"only {got} of {wanted} frames the header promises decode" + (f"; {lie}" if lie else "")
    if at_end and fmt == "OGG":
        cut = ogg_tail_problem(path)
        if cut:
            return f"{cut}: only {frames / sr_in:.2f} s decode"
    if at_end and fmt == "WAV":
        declared = wav_declared_frames(path)
        if declared is not None and declared > frames:
            return f"the RIFF header declares {declared} frames, the file holds {frames}"
    return ""


def _report_cut(path: str | os.PathLike[str], detail: str, on_truncated: str) -> None:
    if on_truncated == "raise":
        raise AudioError(path, "truncated", detail)
    log.warning("%s: truncated: %s; using what decodes", path, detail)


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


def _open(path: str | os.PathLike[str], min_sample_rate: int) -> sf.SoundFile:
    # The file opened for reading, after the checks every decode makes (rate, frames).
    try:
        f = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise _open_error(path, err) from err
    if f.samplerate < min_sample_rate:
        f.close()
        raise AudioError(path, "low_sample_rate", f"{f.samplerate} Hz < {min_sample_rate} Hz")
    if f.frames <= 0:
        f.close()
        raise AudioError(path, "empty", "no audio frames")
    return f


def _mono(path: str | os.PathLike[str], data: np.ndarray) -> np.ndarray:
    # (frames, channels) -> (frames,) float32, channels averaged; NaN/inf samples are an error.
    wave = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    if not np.isfinite(wave).all():
        bad = int((~np.isfinite(wave)).sum())
        raise AudioError(path, "nonfinite", f"{bad} NaN/inf samples")
    return np.ascontiguousarray(wave, dtype=np.float32)


def load_audio(
    path: str | os.PathLike[str],
    start_s: float = 0.0,
    stop_s: float | None = None,
    *,
    sr: int = SAMPLE_RATE,
    min_sample_rate: int = MIN_SAMPLE_RATE,
    on_truncated: str = "warn",
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
        on_truncated: a read that reaches a cut (see ``ON_TRUNCATED``): ``warn`` (the missing samples are
            zeros) or ``raise``.

    Returns:
        (samples,) float32 array at ``sr`` Hz.

    Raises:
        AudioError: missing, unreadable, unsupported format, empty, NaN/inf samples, rate below minimum, or
            (``on_truncated="raise"``) truncated.
    """
    _check_mode(on_truncated)
    if start_s < 0 or (stop_s is not None and stop_s < start_s):
        raise ValueError(f"{path}: bad span start_s={start_s}, stop_s={stop_s}")
    with _open(path, min_sample_rate) as f:
        sr_in, frames = int(f.samplerate), int(f.frames)
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
        cut = _truncation(path, f, in_stop - in_start, data.shape[0], in_stop == frames) if data.shape[0] else ""
    if data.shape[0] == 0 and want > 0:
        raise AudioError(path, "empty", f"no samples decoded in [{start_s}, {stop_s}] s")
    if cut:
        _report_cut(path, cut, on_truncated)
    wave = resample(_mono(path, data), sr_in, sr)
    skip = out_start - in_start * sr // sr_in
    wave = wave[max(skip, 0) : max(skip, 0) + want]
    if wave.shape[0] < want:
        # Headers can overstate frames by a few samples (mp3, resampler rounding): pad to the promised length.
        wave = np.pad(wave, (0, want - wave.shape[0]))
    return np.ascontiguousarray(wave, dtype=np.float32)


@dataclass
class StreamStats:
    """What ``stream_audio`` found once the stream is used up.

    Attributes:
        info: the header facts.
        samples: samples yielded, at the output rate.
        silent: every sample yielded was exactly zero (digital silence).
        truncated: why the file looks cut (``""``: it is whole).
    """

    info: AudioInfo | None = None
    samples: int = 0
    silent: bool = True
    truncated: str = ""


def stream_audio(
    path: str | os.PathLike[str],
    block_s: float = 60.0,
    *,
    sr: int = SAMPLE_RATE,
    min_sample_rate: int = MIN_SAMPLE_RATE,
    on_truncated: str = "warn",
    stats: StreamStats | None = None,
) -> Iterator[np.ndarray]:
    """Decode ``path`` front to back in blocks: float32 mono at ``sr`` Hz, memory flat in the file's length.

    The file is read sequentially (no seeks: an Ogg seek decodes from a page boundary each time) and resampled
    with a streaming soxr resampler, so the blocks joined equal ``load_audio(path)`` (bit for bit at 32 kHz).

    Args:
        path: audio file.
        block_s: seconds of output per block (the last block is shorter; empty blocks are never yielded).
        sr, min_sample_rate, on_truncated: as ``load_audio``.
        stats: filled in as the blocks go (pass a ``StreamStats()`` and read it after the last block).

    Yields:
        (samples,) float32 blocks of about ``block_s * sr`` samples.

    Raises:
        AudioError: as ``load_audio``, raised when the stream reaches the fault.
    """
    _check_mode(on_truncated)
    with _open(path, min_sample_rate) as f:
        sr_in, frames, fmt = int(f.samplerate), int(f.frames), str(f.format)
        stats = stats if stats is not None else StreamStats()
        stats.info = AudioInfo(sr_in, frames, int(f.channels), fmt)
        step = max(1, round(block_s * sr_in))
        stream = None if sr_in == sr else soxr.ResampleStream(sr_in, sr, 1, dtype="float32", quality="HQ")
        read = 0
        while True:
            try:
                # read() until it returns nothing: the header's frame count can overstate what decodes.
                data = f.read(step, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as err:
                raise AudioError(path, "unreadable", f"decode failed after {read} frames: {err}") from err
            read += data.shape[0]
            last = data.shape[0] < step
            wave = _mono(path, data)
            if stream is not None:
                wave = stream.resample_chunk(wave, last=last)
            if wave.size:
                stats.samples += wave.shape[0]
                stats.silent = stats.silent and not np.any(wave)
                yield wave
            if last:
                break
        if read == 0:
            raise AudioError(path, "empty", "no samples decode")
        stats.truncated = _truncation(path, f, frames, read, True)
    if stats.truncated:
        _report_cut(path, stats.truncated, on_truncated)
