"""Tests for the byte-level container checks: cut Ogg streams, WAV frame counts, lying ID3v2 tags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from birdclef.audio.container import id3_problem, ogg_tail_problem, wav_declared_frames


def _ogg(tmp_path: Path, seconds: float = 3.0) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "a.ogg"
    sf.write(path, (0.1 * rng.standard_normal(int(32_000 * seconds))).astype(np.float32), 32_000)
    return path


def _syncsafe(n: int) -> bytes:
    return bytes((n >> (7 * (3 - i))) & 0x7F for i in range(4))


def test_a_whole_ogg_has_no_tail_problem(tmp_path: Path) -> None:
    assert ogg_tail_problem(_ogg(tmp_path)) == ""


def test_an_ogg_cut_inside_its_last_page_is_cut(tmp_path: Path) -> None:
    path = _ogg(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 200])
    assert ogg_tail_problem(path) == "the last Ogg page is cut"


def test_an_ogg_cut_at_a_page_boundary_lacks_the_end_of_stream_flag(tmp_path: Path) -> None:
    path = _ogg(tmp_path, seconds=20.0)
    data = path.read_bytes()
    last = data.rfind(b"OggS")
    path.write_bytes(data[:last])  # whole pages, but the final (end-of-stream) one is gone
    assert ogg_tail_problem(path) == "the last Ogg page lacks the end-of-stream flag"


def test_a_cleared_end_of_stream_flag_is_seen(tmp_path: Path) -> None:
    path = _ogg(tmp_path)
    data = bytearray(path.read_bytes())
    last = data.rfind(b"OggS")
    assert data[last + 5] & 0x04
    data[last + 5] &= ~0x04 & 0xFF
    path.write_bytes(bytes(data))
    assert ogg_tail_problem(path) == "the last Ogg page lacks the end-of-stream flag"


def test_wav_declared_frames_reads_the_data_chunk(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    sf.write(path, np.zeros((1234, 2), dtype=np.float32), 32_000, subtype="PCM_16")
    assert wav_declared_frames(path) == 1234
    # A streaming writer's unset size, and a file that is not RIFF/WAVE, give no count.
    data = bytearray(path.read_bytes())
    at = data.find(b"data")
    data[at + 4 : at + 8] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))
    assert wav_declared_frames(path) is None
    assert wav_declared_frames(_ogg(tmp_path)) is None


def test_wav_declared_frames_exceeds_a_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    sf.write(path, np.zeros(32_000, dtype=np.float32), 32_000, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:-10_000])
    assert wav_declared_frames(path) == 32_000
    assert sf.info(str(path)).frames < 32_000


def test_id3_tags_that_tell_the_truth_or_lie(tmp_path: Path) -> None:
    frame = b"\xff\xfb\x90\x00" + bytes(100)  # an MPEG-1 layer III frame header
    plain = tmp_path / "plain.mp3"
    plain.write_bytes(frame)
    assert id3_problem(plain) == ""
    good = tmp_path / "good.mp3"
    good.write_bytes(b"ID3\x04\x00\x00" + _syncsafe(20) + bytes(20) + frame)
    assert id3_problem(good) == ""
    past_end = tmp_path / "past_end.mp3"
    past_end.write_bytes(b"ID3\x04\x00\x00" + _syncsafe(10_000) + bytes(20) + frame)
    assert id3_problem(past_end) == "its ID3v2 header claims a 10010-byte tag in a 134-byte file: the tag header lies"
    off_frame = tmp_path / "off_frame.mp3"
    off_frame.write_bytes(b"ID3\x04\x00\x00" + _syncsafe(10) + bytes(20) + frame)
    assert id3_problem(off_frame) == (
        "its ID3v2 header puts the audio at byte 20, where no MPEG frame starts: the tag header lies"
    )
    assert id3_problem(tmp_path / "missing.mp3") == ""
