"""Audio probing with soundfile: duration, sample rate, channels, and unreadable / empty / truncated detection."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from birdclef.audio.container import id3_problem, ogg_tail_problem, wav_declared_frames

_BLOCK_FRAMES = 1 << 16
_MP3_SLACK = 0.01
"""MP3 lengths are estimated from headers (Xing/VBRI or bitrate); libmpg123 itself tolerates a 1% error."""


@dataclass(frozen=True)
class AudioInfo:
    """What probing one audio file found.

    Attributes:
        frames: frames per channel that decode (samples at ``sample_rate``); 0 when unusable.
        sample_rate: Hz as stored (no resampling).
        channels: channel count as stored.
        problem_kind: ``None`` for a good file, else ``"missing"``, ``"unreadable"``, ``"empty"`` or
            ``"truncated"``.
        problem: what is wrong, in words (``""`` for a good file).
    """

    frames: int
    sample_rate: int
    channels: int
    problem_kind: str | None = None
    problem: str = ""

    @property
    def duration_s(self) -> float:
        """Decodable duration in seconds."""
        return self.frames / self.sample_rate if self.sample_rate else 0.0

    @property
    def ok(self) -> bool:
        """True when the file is usable."""
        return self.problem_kind is None


def _bad(kind: str, problem: str, frames: int = 0, sample_rate: int = 0, channels: int = 0) -> AudioInfo:
    return AudioInfo(frames, sample_rate, channels, kind, problem)


def probe_audio(path: Path, decode: bool = True) -> AudioInfo:
    """Probe one audio file with soundfile.

    Args:
        path: the file.
        decode: decode every frame to prove the file is whole (cost: one full decode); False reads the header
            (and an Ogg file's last page) only.

    Returns:
        The file's AudioInfo; a bad file gets a problem instead of raising.
    """
    if not path.is_file():
        return _bad("missing", "file does not exist")
    size = path.stat().st_size
    if size == 0:
        return _bad("empty", "file has 0 bytes")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        # an mp3 whose ID3v2 tag size lies gets libsndfile's "possibly a pipe?": say what is wrong instead
        return _bad("unreadable", id3_problem(path) or f"soundfile cannot open it ({err})")
    declared, sr, ch = int(info.frames), int(info.samplerate), int(info.channels)
    fmt = info.format
    # the container checks come first: a cut file can also look empty
    if fmt == "WAV":
        header_frames = wav_declared_frames(path)
        if header_frames is not None and header_frames > declared:
            return _bad("truncated", f"header declares {header_frames} frames, file holds {declared}", declared, sr, ch)
    if fmt == "OGG":  # cheap (reads the last 64 KiB), so done even without the full decode
        cut = ogg_tail_problem(path)
        if cut:
            return _bad("truncated", f"{cut} ({declared} frames decodable)", declared, sr, ch)
    if declared <= 0 or sr <= 0 or ch <= 0:
        return _bad("empty", f"no audio ({declared} frames, {sr} Hz, {ch} channels)", 0, sr, ch)
    if not decode:
        return AudioInfo(declared, sr, ch)
    decoded = 0
    try:
        with sf.SoundFile(str(path)) as f:
            # read() until it returns nothing: SoundFile.blocks() trusts the declared length and can pad.
            while True:
                block = f.read(_BLOCK_FRAMES, dtype="float32")
                if len(block) == 0:
                    break
                decoded += len(block)
    except (sf.LibsndfileError, RuntimeError) as err:
        return _bad("truncated", f"decoding failed after {decoded} of {declared} frames ({err})", decoded, sr, ch)
    slack = int(declared * _MP3_SLACK) if fmt == "MP3" else 0
    if decoded < declared - slack:
        return _bad("truncated", f"only {decoded} of {declared} declared frames decode", decoded, sr, ch)
    if decoded == 0:
        return _bad("empty", "no frames decode", 0, sr, ch)
    return AudioInfo(decoded, sr, ch)


def probe_many(
    paths: Sequence[Path], decode: bool = True, workers: int = 2, progress: bool | None = None
) -> list[AudioInfo]:
    """Probe many files in a thread pool (soundfile releases the GIL while decoding).

    Args:
        paths: the files, in any order.
        decode: see ``probe_audio``.
        workers: threads; 1 probes in this thread.
        progress: show a tqdm bar; None shows it only on a terminal.

    Returns:
        One AudioInfo per path, in the order of ``paths``.
    """
    bar = tqdm(total=len(paths), desc="probing audio", unit="file", disable=None if progress is None else not progress)
    try:
        if workers <= 1:
            results = []
            for p in paths:
                results.append(probe_audio(p, decode))
                bar.update()
            return results
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = []
            for info in pool.map(lambda p: probe_audio(p, decode), paths):
                results.append(info)
                bar.update()
            return results
    finally:
        bar.close()
