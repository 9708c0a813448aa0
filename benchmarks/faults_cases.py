"""The bad-audio cases of ``benchmarks/faults.py`` (issue 16's set) and how they enter a dataset: each case is a
file in train_audio/ with its train.csv row and a copy in test_soundscapes/ (a file that acquire, clean and features
meet as a focal recording, and ensemble, infer and predict as a test soundscape)."""

from __future__ import annotations

import csv
import io
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

RATE = 32_000
_BLOCK = RATE  # Vorbis and MP3 are written a second at a time: one large write crashes libsndfile's encoder


@dataclass(frozen=True)
class Case:
    """One bad or odd input.

    Attributes:
        key: the case's name in the table.
        problem: what is wrong with it, in words.
        suffix: the file extension it carries (``.ogg`` for the wav and the text named .ogg).
        make: writes the file from the 60-s source soundscape (its Ogg bytes and its samples).
        needs_message: a stage that meets it must say so (False: unusual but usable audio, fine to use quietly).
        test_copy: also placed in test_soundscapes/ (not the escaping path, which only a CSV row can express).
        unicode: the file names carry non-ASCII letters and a space.
    """

    key: str
    problem: str
    suffix: str
    make: Callable[[Path, bytes, np.ndarray], None]
    needs_message: bool = True
    test_copy: bool = True
    unicode: bool = False

    @property
    def train_name(self) -> str:
        """The file name in train_audio/<label>/ (the escaping case: the name outside data/)."""
        return f"train fault ñandú çava{self.suffix}" if self.unicode else f"train_fault_{self.key}{self.suffix}"

    @property
    def test_name(self) -> str:
        """The file name in test_soundscapes/."""
        stem = f"soundscape_ñandú fault {self.key}" if self.unicode else f"soundscape_fault_{self.key}"
        return stem + self.suffix


def _pages(data: bytes) -> list[bytes]:
    """The Ogg pages of ``data``."""
    out, pos = [], 0
    while pos + 27 <= len(data):
        n = data[pos + 26]
        end = pos + 27 + n + sum(data[pos + 27 : pos + 27 + n])
        out.append(data[pos:end])
        pos = end
    return out


def _granule(page: bytes) -> int:
    return int.from_bytes(page[6:14], "little")


def _ogg_crc(page: bytes) -> int:
    # Ogg's CRC-32 (polynomial 0x04C11DB7, not reflected) through zlib's reflected one, as synth.oggio does
    table = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))
    raw = zlib.crc32(page.translate(table)) ^ zlib.crc32(bytes(len(page)))
    return int(f"{raw:032b}"[::-1], 2)


def long_ogg(path: Path, src: bytes, repeats: int) -> None:
    """An Ogg Vorbis file of ``repeats`` times the source's audio, built from its pages in well under a second.

    Encoding 3 hours of Vorbis takes minutes on two cores; the source's audio pages repeated, with granule
    positions, sequence numbers, flags and checksums rewritten, are a valid stream (a click at each seam).
    """
    pages = _pages(src)
    head = [p for p in pages if _granule(p) == 0]
    audio = [p for p in pages if _granule(p) != 0]
    length, seq = _granule(audio[-1]), len(head)
    with path.open("wb") as out:
        out.writelines(head)
        for r in range(repeats):
            for i, page in enumerate(audio):
                q = bytearray(page)
                q[5] = page[5] & ~0x04 | (0x04 if r == repeats - 1 and i == len(audio) - 1 else 0)
                q[6:14] = (_granule(page) + r * length).to_bytes(8, "little")
                q[18:22] = seq.to_bytes(4, "little")
                q[22:26] = b"\0\0\0\0"
                q[22:26] = _ogg_crc(bytes(q)).to_bytes(4, "little")
                out.write(q)
                seq += 1


def _write_blocks(target: Path | io.BytesIO, x: np.ndarray, rate: int, fmt: str, subtype: str) -> None:
    channels = 1 if x.ndim == 1 else x.shape[1]
    with sf.SoundFile(target, "w", rate, channels, format=fmt, subtype=subtype) as f:
        for i in range(0, len(x), _BLOCK):
            f.write(x[i : i + _BLOCK])


def _mp3(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    _write_blocks(buf, x, RATE, "MP3", "MPEG_LAYER_III")
    return buf.getvalue()


def _syncsafe(n: int) -> bytes:
    return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])


def _nan_wav(p: Path, src: bytes, x: np.ndarray) -> None:
    y = x[: 20 * RATE].copy()
    y[5 * RATE : 6 * RATE] = np.nan
    sf.write(p, y, RATE, format="WAV", subtype="FLOAT")


def _mp3_junk(p: Path, src: bytes, x: np.ndarray) -> None:
    data = _mp3(x[: 20 * RATE])
    junk = np.random.default_rng(0).integers(0, 256, 16_384, dtype=np.uint8).tobytes()
    p.write_bytes(data[: len(data) // 2] + junk + data[len(data) // 2 :] + junk[:4096])


def _mp3_id3_lie(p: Path, src: bytes, x: np.ndarray) -> None:
    # an ID3v2.4 tag whose size field claims 256 MB: a reader that trusts it skips past the end of the file
    title = b"\x03" + "ñandú".encode()
    frame = b"TIT2" + _syncsafe(len(title)) + b"\0\0" + title
    p.write_bytes(b"ID3\x04\x00\x00" + _syncsafe(0x0FFFFFFF) + frame + _mp3(x[: 20 * RATE]))


def _six_channels(p: Path, src: bytes, x: np.ndarray) -> None:
    y = x[: 10 * RATE]
    sf.write(p, np.stack([y * (0.5 + 0.1 * c) for c in range(6)], axis=1), RATE, subtype="PCM_16")


def _ogg(p: Path, x: np.ndarray, rate: int = RATE) -> None:
    _write_blocks(p, x.astype(np.float32), rate, "OGG", "VORBIS")


CASES: tuple[Case, ...] = (
    Case("trunc_header", "truncated Ogg: the Vorbis headers only, no audio page", ".ogg",
         lambda p, s, x: p.write_bytes(b"".join(pg for pg in _pages(s) if _granule(pg) == 0))),
    Case("trunc_mid", "truncated Ogg: cut in the middle of the file", ".ogg",
         lambda p, s, x: p.write_bytes(s[: len(s) // 2])),
    Case("zero_bytes", "an empty file (0 bytes)", ".ogg", lambda p, s, x: p.write_bytes(b"")),
    Case("nan_wav", "float WAV with 1 s of NaN samples", ".wav", _nan_wav),
    Case("sr_8k", "8 kHz Ogg (below clean.min_sample_rate)", ".ogg",
         lambda p, s, x: _ogg(p, resample_poly(x[: 20 * RATE], 1, 4), 8000)),
    Case("sr_192k", "192 kHz WAV", ".wav",
         lambda p, s, x: sf.write(p, resample_poly(x[: 10 * RATE], 6, 1), 192_000, subtype="PCM_16"),
         needs_message=False),
    Case("six_channels", "6-channel WAV", ".wav", _six_channels, needs_message=False),
    Case("three_hours", "a 3-hour Ogg soundscape", ".ogg", lambda p, s, x: long_ogg(p, s, 180), needs_message=False),
    Case("mp3_junk", "MP3 with 16 KiB of junk inside and 4 KiB after", ".mp3", _mp3_junk, needs_message=False),
    Case("mp3_id3_lie", "MP3 whose ID3v2 header claims a 256 MB tag", ".mp3", _mp3_id3_lie),
    Case("wav_as_ogg", "a WAV file named .ogg", ".ogg",
         lambda p, s, x: sf.write(p, x[: 20 * RATE], RATE, format="WAV", subtype="PCM_16"), needs_message=False),
    Case("text_as_ogg", "a text file named .ogg", ".ogg", lambda p, s, x: p.write_text("not audio\n" * 200)),
    Case("short_clip", "a 0.5-s clip", ".ogg", lambda p, s, x: _ogg(p, x[: RATE // 2]), needs_message=False),
    Case("silence", "60 s of digital silence", ".ogg", lambda p, s, x: _ogg(p, np.zeros(60 * RATE))),
    Case("unicode", "non-ASCII letters and a space in the name", ".ogg", lambda p, s, x: p.write_bytes(s),
         needs_message=False, unicode=True),
    Case("escape", "train.csv row ../../<file>: a path out of the data folder", ".ogg",
         lambda p, s, x: p.write_bytes(s), test_copy=False),
)  # fmt: skip


def place(cases: list[Case], data: Path) -> dict[str, dict[str, str]]:
    """Write every case into the dataset at ``data``: its train_audio file and train.csv row, its test copy.

    The source is the first test soundscape. The escaping case's row names ``../../<file>`` (train.csv paths are
    relative to train_audio/) and the file is written there, beside data/, so only the path is wrong.

    Returns:
        Per case key: ``train`` (the path the row names, relative to data/) and ``test`` (relative to data/).
    """
    source = sorted((data / "test_soundscapes").glob("*.ogg"))[0]
    src = source.read_bytes()
    x, rate = sf.read(source, dtype="float32")
    assert rate == RATE, f"{source}: {rate} Hz"
    with (data / "train.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    template, label = rows[0], rows[0]["primary_label"]
    placed: dict[str, dict[str, str]] = {}
    for case in cases:
        rel = f"../../{case.train_name}" if case.key == "escape" else f"{label}/{case.train_name}"
        target = data / "train_audio" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        case.make(target, src, x)
        rows.append({**template, "filename": rel})
        placed[case.key] = {"train": f"train_audio/{rel}"}
        if case.test_copy:
            case.make(data / "test_soundscapes" / case.test_name, src, x)
            placed[case.key]["test"] = f"test_soundscapes/{case.test_name}"
    with (data / "train.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(template))
        writer.writeheader()
        writer.writerows(rows)
    return placed
