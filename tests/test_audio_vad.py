"""Tests of birdclef.audio.vad: span logic, speech found in babble, animals (real recordings) not flagged."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from birdclef.audio import load_audio
from birdclef.audio.rules import overlap_s
from birdclef.audio.vad import FRAME, VAD_RATE, VadConfig, VoiceDetector, silero_model_path, spans_from_probs

from audio_fixtures import bird_calls, fake_speech

REAL = Path(__file__).resolve().parents[2] / "shared" / "real-audio"
HOP = FRAME / VAD_RATE


def test_spans_hysteresis_min_speech_and_padding() -> None:
    cfg = VadConfig(threshold=0.5, neg_threshold=0.35, min_speech_s=0.1, min_silence_s=0.1, pad_s=0.0)
    p = np.zeros(100)
    p[10:20] = 0.9  # speech
    p[20:22] = 0.4  # between the thresholds: speech goes on
    p[22:30] = 0.0  # silence long enough to end it
    p[50:52] = 0.9  # too short (64 ms < 100 ms)
    spans = spans_from_probs(p, 100 * HOP, cfg)
    assert spans == [pytest.approx((10 * HOP, 22 * HOP))]


def test_short_pause_does_not_split_but_long_one_does() -> None:
    cfg = VadConfig(threshold=0.5, min_speech_s=0.0, min_silence_s=0.3, pad_s=0.0)
    p = np.zeros(200)
    p[10:30] = p[33:50] = 0.9  # 3-frame (96 ms) pause: one span
    p[80:100] = 0.9  # 30-frame pause before it: a second span
    spans = spans_from_probs(p, 200 * HOP, cfg)
    assert spans == [pytest.approx((10 * HOP, 50 * HOP)), pytest.approx((80 * HOP, 100 * HOP))]


def test_padding_clips_to_file_and_merges() -> None:
    cfg = VadConfig(threshold=0.5, min_speech_s=0.0, min_silence_s=0.05, pad_s=0.5)
    p = np.zeros(100)
    p[0:5] = p[20:25] = 0.9  # 0.48 s apart: the 0.5 s pads overlap, so one span
    p[95:100] = 0.9  # runs to the end of the file
    dur = 100 * HOP
    spans = spans_from_probs(p, dur, cfg)
    assert spans == [pytest.approx((0.0, 25 * HOP + 0.5)), pytest.approx((95 * HOP - 0.5, dur))]


def test_unknown_vad_key_raises() -> None:
    with pytest.raises(ValueError, match="unknown VAD key"):
        VadConfig.from_dict({"treshold": 0.4})


def test_detects_babble_inside_bird_calls() -> None:
    speech = fake_speech(4.0, seed=3)
    wave = np.concatenate([bird_calls(6.0, seed=1), speech, bird_calls(5.0, seed=2)])
    wave[6 * 32_000 : 10 * 32_000] += 0.3 * bird_calls(4.0, seed=4)
    spans = VoiceDetector().detect(wave)
    assert spans, "no voice found"
    truth = [(6.0, 10.0)]
    detected = sum(e - s for s, e in spans)
    assert overlap_s(spans, truth) / 4.0 > 0.7
    assert overlap_s(spans, truth) / detected > 0.7


def test_probs_have_one_value_per_frame_and_detector_pickles() -> None:
    det = VoiceDetector({"threshold": 0.6})
    wave = bird_calls(1.0, seed=5)
    probs = det.speech_probs(wave)
    assert probs.shape == (int(np.ceil(16_000 / FRAME)),)
    assert ((probs >= 0) & (probs <= 1)).all()
    clone = pickle.loads(pickle.dumps(det))
    assert clone.cfg.threshold == 0.6
    np.testing.assert_array_equal(clone.speech_probs(wave), probs)


def test_model_loads_from_the_wheel_without_torch() -> None:
    assert silero_model_path().is_file()
    code = ("import sys, numpy as np; from birdclef.audio.vad import VoiceDetector; "
            "VoiceDetector().detect(np.zeros(32000, np.float32)); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(not REAL.is_dir(), reason="shared/real-audio is absent (only in the team checkout)")
@pytest.mark.parametrize("name", [
    "opensoundscape_ruffed_grouse_drum.wav",
    "opensoundscape_great_plains_toad.wav",
    "hawkears_common_yellowthroat.mp3",
    "maad_spinetail.wav",
    "maad_jura_000000.wav",
    "great_tit/2021-B32-0416_04-23.wav",
])
def test_real_animal_sounds_are_not_voice(name: str) -> None:
    assert VoiceDetector().detect(load_audio(REAL / name)) == []
