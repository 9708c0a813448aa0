"""Byte-reproducible OGG Vorbis writing (libsndfile draws a random stream serial number; we pin it)."""

from __future__ import annotations

import io
import os
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf

_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def write_ogg(path: str | os.PathLike[str], audio: np.ndarray, sample_rate: int, compression_level: float) -> int:
    """Encode mono audio as OGG Vorbis with a serial number derived from the file name; return bytes written.

    libsndfile seeds the Ogg stream serial number from the clock, so two encodings of the same samples differ in
    a few header bytes. The serial is rewritten in every page (and each page checksum recomputed) so that the
    same samples and name always give the same bytes.

    Args:
        path: destination file.
        audio: samples (samples,), float in [-1, 1].
        sample_rate: Hz.
        compression_level: soundfile's Vorbis compression_level (0 = best quality, 1 = smallest file).
    """
    buf = io.BytesIO()
    sf.write(buf, np.asarray(audio, dtype=np.float32), sample_rate, format="OGG", subtype="VORBIS",
             compression_level=compression_level)
    data = pin_serial(buf.getvalue(), zlib.crc32(Path(path).name.encode()))
    Path(path).write_bytes(data)
    return len(data)


def pin_serial(data: bytes, serial: int) -> bytes:
    """Set the stream serial number of every page of a single-stream Ogg file and fix the page checksums.

    Raises:
        ValueError: when ``data`` is not a sequence of Ogg pages.
    """
    out = bytearray(data)
    pos = 0
    serial_bytes = (serial & 0xFFFFFFFF).to_bytes(4, "little")
    while pos < len(out):
        if out[pos : pos + 4] != b"OggS":
            raise ValueError(f"not an Ogg page at byte {pos}")
        n_segments = out[pos + 26]
        length = 27 + n_segments + sum(out[pos + 27 : pos + 27 + n_segments])
        out[pos + 14 : pos + 18] = serial_bytes
        out[pos + 22 : pos + 26] = b"\0\0\0\0"
        out[pos + 22 : pos + 26] = _ogg_crc(bytes(out[pos : pos + length])).to_bytes(4, "little")
        pos += length
    return bytes(out)


def _ogg_crc(page: bytes) -> int:
    """Ogg's CRC-32 (polynomial 0x04C11DB7, not reflected, zero init) computed with zlib's reflected CRC-32.

    Reflecting every input byte turns Ogg's CRC into the reflected one; zlib's init and final XOR are cancelled by
    XOR-ing the CRC of as many zero bytes; the result is reflected back.
    """
    mirrored = page.translate(_BIT_REVERSED)
    raw = zlib.crc32(mirrored) ^ zlib.crc32(bytes(len(page)))
    return int(f"{raw:032b}"[::-1], 2)
