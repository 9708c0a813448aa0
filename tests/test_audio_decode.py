"""Tests of birdclef.audio.decode: formats, channels, resampling, partial reads and the errors for bad audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from birdclef.audio import AudioError, audio_info, load_audio, resample
from birdclef.audio.vad import VoiceDetector

from audio_fixtures import bird_calls, write_audio

REAL = Path(__file__).resolve().parents[2] / "shared" / "real-audio"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="shared/real-audio is absent (only in the team checkout)")


def _peak_hz(wave: np.ndarray, sr: int = 32_000) -> float:
    spec = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / sr)[spec.argmax()])


@pytest.mark.parametrize("suffix", [".ogg", ".flac", ".wav"])
def test_load_audio_decodes_formats_at_32k(tmp_path: Path, suffix: str) -> None:
    wave = bird_calls(3.0, seed=1)
    path = write_audio(tmp_path / f"a{suffix}", wave)
    out = load_audio(path)
    assert out.dtype == np.float32 and out.shape == wave.shape
    tol = 0.05 if suffix == ".ogg" else 1e-3  # vorbis is lossy
    assert np.sqrt(np.mean((out - wave) ** 2)) < tol


@pytest.mark.parametrize("sr_in", [22_050, 44_100, 48_000, 16_000])
def test_load_audio_resamples_keeping_pitch_and_length(tmp_path: Path, sr_in: int) -> None:
    t = np.arange(int(2.0 * sr_in)) / sr_in
    path = write_audio(tmp_path / "tone.wav", (0.5 * np.sin(2 * np.pi * 1234.0 * t)).astype(np.float32), sr=sr_in)
    out = load_audio(path)
    assert out.shape == (64_000,)
    assert abs(_peak_hz(out) - 1234.0) < 2.0
    assert audio_info(path).samples_at() == out.shape[0]


def test_stereo_is_averaged_to_mono(tmp_path: Path) -> None:
    left, right = bird_calls(2.0, seed=2), bird_calls(2.0, seed=3)
    path = write_audio(tmp_path / "st.wav", np.stack([left, right], axis=1), fmt="WAV")
    sf.write(path, np.stack([left, right], axis=1), 32_000, subtype="FLOAT")
    assert audio_info(path).channels == 2
    np.testing.assert_allclose(load_audio(path), (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("sr_in", [32_000, 44_100, 22_050])
def test_partial_read_matches_slice_of_full_decode(tmp_path: Path, sr_in: int) -> None:
    path = write_audio(tmp_path / "p.flac", bird_calls(6.0, seed=4, sr=sr_in), sr=sr_in)
    full = load_audio(path)
    for start, stop in [(1.0, 3.5), (0.013, 1.7), (2.25, None), (0.0, 0.5)]:
        part = load_audio(path, start, stop)
        ref = full[round(start * 32_000) : None if stop is None else round(stop * 32_000)]
        assert part.shape == ref.shape
        assert np.abs(part - ref).max() < 2e-3


def test_partial_read_past_the_end_is_clipped(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "s.wav", bird_calls(2.0, seed=5))
    assert load_audio(path, 1.5, 9.0).shape == (16_000,)


def test_errors_name_the_file_and_reason(tmp_path: Path) -> None:
    cases = {}
    cases["missing"] = tmp_path / "nope.ogg"
    (tmp_path / "zero.ogg").write_bytes(b"")
    cases["empty"] = tmp_path / "zero.ogg"
    (tmp_path / "text.ogg").write_bytes(b"this is not audio" * 20)
    cases["unsupported"] = tmp_path / "text.ogg"
    cases["low_sample_rate"] = write_audio(tmp_path / "low.wav", bird_calls(1.0, sr=8000), sr=8000)
    nan = bird_calls(1.0)
    nan[10] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 32_000, subtype="FLOAT")
    cases["nonfinite"] = tmp_path / "nan.wav"
    sf.write(tmp_path / "noframes.wav", np.zeros(0, np.float32), 32_000)
    cases["empty_frames"] = tmp_path / "noframes.wav"
    for reason, path in cases.items():
        with pytest.raises(AudioError) as err:
            load_audio(path)
        assert err.value.reason == reason.removesuffix("_frames")
        assert str(path) in str(err.value)
    with pytest.raises(AudioError, match="low_sample_rate"):
        audio_info(cases["low_sample_rate"])


def test_bad_span_raises(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "s.wav", bird_calls(1.0))
    with pytest.raises(ValueError, match="bad span"):
        load_audio(path, 0.8, 0.2)


def test_resample_is_identity_at_same_rate() -> None:
    x = bird_calls(0.5)
    assert resample(x, 32_000, 32_000) is x


@needs_real
@pytest.mark.parametrize("name, rate", [
    ("maad_jura_000000.wav", 22_000),
    ("great_tit/2021-B32-0415_05-3.wav", 22_050),
    ("opensoundscape_great_plains_toad.wav", 44_100),
    ("maad_spinetail.wav", 44_100),
    ("hawkears_common_yellowthroat.mp3", 44_100),
    ("opensoundscape_ruffed_grouse_drum.wav", 32_000),
])
def test_real_recordings_decode_and_resample(name: str, rate: int) -> None:
    info = audio_info(REAL / name)
    assert info.sample_rate == rate
    wave = load_audio(REAL / name)
    assert wave.shape == (info.samples_at(),)
    assert np.isfinite(wave).all() and 1e-4 < np.abs(wave).max() < 2.0
    mid = info.duration_s / 2
    part = load_audio(REAL / name, mid, mid + 1.0)
    ref = wave[round(mid * 32_000) : round(mid * 32_000) + 32_000]
    # mp3 seeking is exact only to a decoder frame's priming, so allow a looser match there.
    assert np.abs(part - ref).max() < (0.05 if name.endswith(".mp3") else 2e-3)


@needs_real
def test_stereo_mp3_of_real_audio_decodes_to_mono(tmp_path: Path) -> None:
    mono = load_audio(REAL / "maad_spinetail.wav")[: 5 * 32_000]
    path = tmp_path / "st.mp3"
    sf.write(path, np.stack([mono, 0.5 * mono], axis=1), 32_000, format="MP3")
    assert audio_info(path).channels == 2
    out = load_audio(path)
    assert abs(out.shape[0] - mono.shape[0]) < 2_000  # encoder priming / padding
    level = 20 * np.log10(np.sqrt(np.mean(out**2)) / np.sqrt(np.mean((0.75 * mono) ** 2)))
    assert abs(level) < 1.0
    assert VoiceDetector().detect(out) == []  # a bird song, decoded from stereo mp3, is not voice


def test_audio_error_survives_pickling() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(AudioError("x/a.ogg", "empty", "no frames")))
    assert (err.path, err.reason, err.detail) == ("x/a.ogg", "empty", "no frames")
    assert str(err) == "x/a.ogg: empty: no frames"


# ---------------------------------------------------------------- partly decodable files, lying headers, streams


def _syncsafe(n: int) -> bytes:
    return bytes((n >> s) & 0x7F for s in (21, 14, 7, 0))


def test_a_cut_ogg_is_reported_once_per_message_or_raises(tmp_path: Path, caplog) -> None:
    whole = write_audio(tmp_path / "whole.ogg", bird_calls(20.0, seed=6))
    data = whole.read_bytes()
    cut = tmp_path / "cut.ogg"
    cut.write_bytes(data[: len(data) // 2])
    assert load_audio(whole).shape == (640_000,) and not caplog.records  # a whole file: no word
    wave = load_audio(cut)
    assert 0 < wave.shape[0] < 640_000  # what decodes is returned ...
    [record] = caplog.records  # ... with one warning that names the file once
    assert "truncated" in record.getMessage() and record.getMessage().count(str(cut)) == 1
    with pytest.raises(AudioError) as err:
        load_audio(cut, on_truncated="raise")
    assert err.value.reason == "truncated" and "last Ogg page" in err.value.detail
    assert load_audio(cut, 0.0, 1.0, on_truncated="raise").shape == (32_000,)  # a part before the cut is fine


def test_a_cut_wav_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    sf.write(path, bird_calls(4.0, seed=7), 32_000, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:-64_000])  # the RIFF header still declares 4 s
    with pytest.raises(AudioError, match="RIFF header declares 128000 frames, the file holds 96000"):
        load_audio(path, on_truncated="raise")


def test_an_mp3_whose_id3_header_lies_says_so(tmp_path: Path) -> None:
    good = tmp_path / "good.mp3"
    sf.write(good, bird_calls(3.0, seed=8), 32_000, format="MP3")
    past_end = tmp_path / "past_end.mp3"
    past_end.write_bytes(b"ID3\x04\x00\x00" + _syncsafe(10**7) + good.read_bytes())
    with pytest.raises(AudioError) as err:
        load_audio(past_end)
    message = str(err.value)
    assert "ID3v2 header claims" in message and "the tag header lies" in message
    assert "possibly a pipe" not in message and message.count("past_end.mp3") == 1


def test_open_errors_name_the_file_once(tmp_path: Path) -> None:
    (tmp_path / "junk.mp3").write_bytes(b"\x00\x11junk" * 500)
    with pytest.raises(AudioError) as err:
        load_audio(tmp_path / "junk.mp3")
    assert str(err.value).count("junk.mp3") == 1 and "possibly a pipe" not in str(err.value)


@pytest.mark.parametrize("sr_in", [32_000, 44_100])
def test_stream_audio_joins_to_the_whole_decode(tmp_path: Path, sr_in: int) -> None:
    from birdclef.audio.decode import StreamStats, stream_audio

    path = write_audio(tmp_path / "s.flac", bird_calls(7.3, seed=9, sr=sr_in), sr=sr_in)
    stats = StreamStats()
    blocks = list(stream_audio(path, 2.0, stats=stats))
    sizes = [b.shape[0] for b in blocks[:3]]
    assert sizes == [64_000] * 3 if sr_in == 32_000 else all(abs(n - 64_000) < 1_000 for n in sizes)  # soxr latency
    joined = np.concatenate(blocks)
    np.testing.assert_allclose(joined, load_audio(path), atol=0 if sr_in == 32_000 else 1e-6)
    assert stats.samples == joined.shape[0] == round(7.3 * 32_000) and not stats.silent and not stats.truncated
    silent = write_audio(tmp_path / "z.wav", np.zeros(32_000, np.float32))
    stats = StreamStats()
    list(stream_audio(silent, 0.3, stats=stats))
    assert stats.silent and stats.samples == 32_000
