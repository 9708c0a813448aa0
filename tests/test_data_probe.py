"""Tests of birdclef.data.probe: good files of every format, and missing / unreadable / empty / truncated ones."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_data_fixture import truncate_file, write_audio

from birdclef.data.probe import probe_audio, probe_many

REAL_MP3 = Path("/work/shared/real-audio/hawkears_common_yellowthroat.mp3")


@pytest.mark.parametrize(("fmt", "sr", "channels"), [("OGG", 32000, 1), ("OGG", 44100, 2), ("WAV", 32000, 1),
                                                      ("FLAC", 22050, 1), ("MP3", 44100, 2)])
def test_good_files_report_their_stored_format(tmp_path, fmt, sr, channels):
    path = tmp_path / f"a.{fmt.lower()}"
    write_audio(path, seconds=1.5, sr=sr, channels=channels, fmt=fmt)
    info = probe_audio(path)
    assert info.ok, info.problem
    assert (info.sample_rate, info.channels) == (sr, channels)
    assert info.duration_s == pytest.approx(1.5, abs=1e-6)


@pytest.mark.parametrize("fmt", ["OGG", "WAV", "FLAC", "MP3"])
def test_cut_files_are_truncated(tmp_path, fmt):
    path = tmp_path / f"a.{fmt.lower()}"
    write_audio(path, seconds=3.0, sr=44100 if fmt == "MP3" else 32000, channels=2 if fmt == "MP3" else 1, fmt=fmt)
    truncate_file(path, 0.5)
    info = probe_audio(path)
    assert info.problem_kind == "truncated", info
    assert info.duration_s < 2.9  # what decodes (in whole blocks) is still measured


def test_ogg_cut_anywhere_is_caught(tmp_path):
    path = tmp_path / "a.ogg"
    write_audio(path, seconds=4.0)
    whole = path.read_bytes()
    for keep in range(len(whole) // 3, len(whole) - 1, max(1, len(whole) // 23)):
        path.write_bytes(whole[:keep])
        assert not probe_audio(path).ok, keep
    path.write_bytes(whole + b"ID3 tag appended by a tagger")  # junk after a complete stream is harmless
    assert probe_audio(path).ok


def test_missing_unreadable_and_empty(tmp_path):
    assert probe_audio(tmp_path / "nope.ogg").problem_kind == "missing"
    (tmp_path / "zero.ogg").write_bytes(b"")
    assert probe_audio(tmp_path / "zero.ogg").problem_kind == "empty"
    (tmp_path / "text.ogg").write_text("not audio at all")
    bad = probe_audio(tmp_path / "text.ogg")
    assert bad.problem_kind == "unreadable" and "soundfile cannot open it" in bad.problem
    sf.write(tmp_path / "silent.wav", np.zeros((0, 1), dtype=np.float32), 32000)
    assert probe_audio(tmp_path / "silent.wav").problem_kind == "empty"


def test_header_only_probe_misses_what_only_decoding_finds(tmp_path):
    path = tmp_path / "a.mp3"
    write_audio(path, seconds=3.0, sr=44100, channels=2, fmt="MP3")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    assert probe_audio(path, decode=False).ok
    assert probe_audio(path, decode=True).problem_kind == "truncated"
    cut = tmp_path / "b.ogg"
    write_audio(cut, seconds=3.0)
    truncate_file(cut, 0.6)
    assert probe_audio(cut, decode=False).problem_kind == "truncated"  # the Ogg tail check needs no decode


def test_probe_many_keeps_order_across_threads(tmp_path):
    paths = []
    for i in range(6):
        paths.append(tmp_path / f"{i}.ogg")
        write_audio(paths[-1], seconds=0.5 + 0.25 * i, seed=i)
    paths.insert(2, tmp_path / "missing.ogg")
    infos = probe_many(paths, workers=2, progress=False)
    assert [i.problem_kind for i in infos] == [None, None, "missing", None, None, None, None]
    assert [round(i.duration_s, 2) for i in infos if i.ok] == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]


@pytest.mark.skipif(not REAL_MP3.exists(), reason="shared real-audio folder absent")
def test_real_mp3_probes_whole():
    info = probe_audio(REAL_MP3)
    assert info.ok and info.sample_rate == 44100 and info.duration_s == pytest.approx(5.9, abs=0.05)


def test_an_mp3_whose_id3_header_lies_is_named_as_such(tmp_path):
    """The probe explains an open failure as the decoder does: the lying tag, not libsndfile's "possibly a pipe?"."""
    good = tmp_path / "good.mp3"
    write_audio(good, seconds=2.0, sr=32000, channels=1, fmt="MP3")
    size = 10**7  # a 10 MB tag in a 40 kB file: libmpg123 seeks past the end
    tag = bytes([(size >> s) & 0x7F for s in (21, 14, 7, 0)])
    bad = tmp_path / "lie.mp3"
    bad.write_bytes(b"ID3\x04\x00\x00" + tag + good.read_bytes())
    info = probe_audio(bad)
    assert info.problem_kind == "unreadable" and not info.ok
    assert "ID3v2 header claims" in info.problem and "possibly a pipe" not in info.problem
    assert "lie.mp3" not in info.problem  # the caller names the file (once)
