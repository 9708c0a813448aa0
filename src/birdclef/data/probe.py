"""Audio probing with soundfile: duration, sample rate, channels, and unreadable / empty / truncated detection."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

_BLOCK_FRAMES = 1 << 16
_OGG_MAX_PAGE_BYTES = 65_307  # 27-byte header + 255 lacing values + 255 * 255 body bytes
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


def _ogg_page_end(data: bytes, pos: int) -> int | None:
    """End offset of the Ogg page whose header starts at ``pos`` (may exceed ``len(data)``), None if no header."""
    if len(data) - pos < 27 or data[pos + 4] != 0:  # stream structure version is always 0
        return None
    n_segments = data[pos + 26]
    lacing = data[pos + 27 : pos + 27 + n_segments]
    if len(lacing) < n_segments:
        return len(data) + 1
    return pos + 27 + n_segments + sum(lacing)


def _ogg_tail_problem(path: Path, size: int) -> str:
    """Why the end of an Ogg file shows a cut ("" when it ends with a whole end-of-stream page).

    libsndfile reports the length of a cut Ogg file as what it can decode, so a frame-count comparison cannot see
    the cut. The pages of the last 64 KiB are walked; a candidate page counts only when the next page (or the end
    of the file) follows it exactly, so "OggS" bytes inside compressed data are not taken for a header.
    """
    with path.open("rb") as f:
        f.seek(max(0, size - _OGG_MAX_PAGE_BYTES))
        tail = f.read()
    pos, last_flags, cut = tail.find(b"OggS"), None, False
    while pos >= 0:
        end = _ogg_page_end(tail, pos)
        nxt = -1 if end is None else tail.find(b"OggS", min(end, len(tail)))
        # a real page is followed by the next page, the end of the file, or (appended tags) no page at all
        if end is not None and end <= len(tail) and (end == len(tail) or nxt in (end, -1)):
            last_flags, cut = tail[pos + 5], False
            pos = nxt
            continue
        cut = cut or (end is not None and end > len(tail))
        pos = tail.find(b"OggS", pos + 1)
    if last_flags is None or cut:
        return "the last Ogg page is cut"
    if not last_flags & 0x04:
        return "the last Ogg page lacks the end-of-stream flag"
    return ""


def _wav_declared_frames(path: Path, size: int) -> int | None:
    """Frames the RIFF header's data chunk declares, or None when the header cannot be read that way.

    libsndfile clamps a cut WAV's length to the bytes present, so the header is read here to see the cut.
    """
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = 0
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, csize = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"fmt ":
                fmt = f.read(csize + (csize & 1))
                if len(fmt) >= 14:
                    block_align = struct.unpack("<H", fmt[12:14])[0]
            elif cid == b"data":
                if not block_align or csize == 0xFFFFFFFF:  # streaming writers leave the size unset
                    return None
                return csize // block_align
            else:
                f.seek(csize + (csize & 1), 1)
            if f.tell() > size:
                return None


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
        return _bad("unreadable", f"soundfile cannot open it ({err})")
    declared, sr, ch = int(info.frames), int(info.samplerate), int(info.channels)
    fmt = info.format
    # the container checks come first: a cut file can also look empty
    if fmt == "WAV":
        header_frames = _wav_declared_frames(path, size)
        if header_frames is not None and header_frames > declared:
            return _bad("truncated", f"header declares {header_frames} frames, file holds {declared}", declared, sr, ch)
    if fmt == "OGG":  # cheap (reads the last 64 KiB), so done even without the full decode
        cut = _ogg_tail_problem(path, size)
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
