"""Tests of byte-reproducible OGG Vorbis writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from birdclef.synth.oggio import pin_serial, write_ogg


def _reference_ogg_crc(page: bytes) -> int:
    # the bitwise definition from the Ogg spec (poly 0x04C11DB7, MSB first, zero init, no final xor)
    crc = 0
    for byte in page:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def _pages(data: bytes) -> list[bytes]:
    pages, pos = [], 0
    while pos < len(data):
        n_seg = data[pos + 26]
        length = 27 + n_seg + sum(data[pos + 27 : pos + 27 + n_seg])
        pages.append(data[pos : pos + length])
        pos += length
    return pages


@pytest.fixture()
def audio() -> np.ndarray:
    return (0.1 * np.random.default_rng(0).standard_normal(32000)).astype(np.float32)


def test_same_samples_and_name_give_same_bytes(tmp_path: Path, audio: np.ndarray) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    size = write_ogg(tmp_path / "a" / "x.ogg", audio, 32000, 0.6)
    write_ogg(tmp_path / "b" / "x.ogg", audio, 32000, 0.6)
    first, second = (tmp_path / "a" / "x.ogg").read_bytes(), (tmp_path / "b" / "x.ogg").read_bytes()
    assert first == second and len(first) == size
    decoded, sr = sf.read(tmp_path / "a" / "x.ogg", dtype="float32")
    assert sr == 32000 and len(decoded) == len(audio)
    assert np.corrcoef(decoded, audio)[0, 1] > 0.9


def test_pinned_pages_carry_the_serial_and_valid_checksums(tmp_path: Path, audio: np.ndarray) -> None:
    write_ogg(tmp_path / "x.ogg", audio[:8000], 32000, 0.6)
    data = (tmp_path / "x.ogg").read_bytes()
    pinned = pin_serial(data, 0x12345678)
    pages = _pages(pinned)
    assert len(pages) >= 3
    for page in pages:
        assert page[14:18] == (0x12345678).to_bytes(4, "little")
        stored = int.from_bytes(page[22:26], "little")
        assert stored == _reference_ogg_crc(page[:22] + b"\0\0\0\0" + page[26:])
    (tmp_path / "y.ogg").write_bytes(pinned)
    assert np.array_equal(sf.read(tmp_path / "y.ogg")[0], sf.read(tmp_path / "x.ogg")[0])


def test_non_ogg_bytes_are_refused() -> None:
    with pytest.raises(ValueError, match="not an Ogg page at byte 0"):
        pin_serial(b"RIFF....WAVEfmt ", 1)
