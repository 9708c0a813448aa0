"""Human voice activity detection with Silero VAD, run offline from the model file inside the silero-vad wheel."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from birdclef import SAMPLE_RATE
from birdclef.audio.decode import resample

VAD_RATE = 16_000
"""Silero VAD's native rate (Hz); waveforms are resampled to it first."""
FRAME = 512
"""Samples per Silero frame at 16 kHz (32 ms): the time resolution of the speech probabilities."""
_CONTEXT = 64  # samples of the previous frame the model sees in front of each frame
_BLOCK = 1024  # frames per ONNX call (~33 s): few Python round trips, small transient memory
_MODEL_FILE = "silero_vad_16k_sequence.onnx"


@dataclass(frozen=True)
class VadConfig:
    """Thresholds that turn Silero's per-frame speech probabilities into voiced spans.

    Attributes:
        threshold: a frame with speech probability >= this starts (or continues) speech.
        neg_threshold: speech may end only where the probability falls below this (``None`` = threshold - 0.15).
        min_speech_s: voiced spans shorter than this are ignored (a bird call can fool a few frames).
        min_silence_s: a pause must last this long to end a span (words are separated by short pauses).
        pad_s: seconds added on each side of a span (onsets and word endings score low).
    """

    threshold: float = 0.5
    neg_threshold: float | None = None
    min_speech_s: float = 0.25
    min_silence_s: float = 0.3
    pad_s: float = 0.05

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> VadConfig:
        """Build from a params dict; unknown keys raise (a typo must not pass silently)."""
        known = {f.name for f in fields(cls)}
        unknown = set(cfg) - known
        if unknown:
            raise ValueError(f"unknown VAD key(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**cfg)


def silero_model_path() -> Path:
    """The block ("sequence") Silero ONNX model shipped in the silero-vad wheel.

    Found without importing the ``silero_vad`` package, whose ``__init__`` imports torch (seconds per
    worker process) only to offer helpers this module does not need.
    """
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("silero-vad is not installed (pip install silero-vad)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / _MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: the installed silero-vad has no {_MODEL_FILE} (need silero-vad >= 6.2)")
    return path


def spans_from_probs(probs: np.ndarray, duration_s: float, cfg: VadConfig) -> list[tuple[float, float]]:
    """Hysteresis over frame probabilities -> voiced spans in seconds.

    Speech starts at a frame >= ``threshold`` and ends at the first frame of a run of frames below
    ``neg_threshold`` lasting ``min_silence_s``; spans shorter than ``min_speech_s`` are dropped, the rest
    padded by ``pad_s`` each side, clipped to [0, duration_s] and merged where they overlap.

    Args:
        probs: (frames,) speech probability per 32 ms frame.
        duration_s: length of the audio (s).
        cfg: thresholds.
    """
    hop = FRAME / VAD_RATE
    neg = cfg.neg_threshold if cfg.neg_threshold is not None else max(cfg.threshold - 0.15, 0.01)
    min_sil = max(1, int(round(cfg.min_silence_s / hop)))
    raw: list[tuple[int, int]] = []
    start = quiet_from = -1
    for i, p in enumerate(probs):
        if start < 0:
            if p >= cfg.threshold:
                start, quiet_from = i, -1
            continue
        if p >= cfg.threshold:
            quiet_from = -1
        elif p < neg and quiet_from < 0:
            quiet_from = i
        if quiet_from >= 0 and i - quiet_from + 1 >= min_sil:
            raw.append((start, quiet_from))
            start = quiet_from = -1
    if start >= 0:
        raw.append((start, len(probs) if quiet_from < 0 else quiet_from))
    spans: list[tuple[float, float]] = []
    for a, b in raw:
        if (b - a) * hop < cfg.min_speech_s:
            continue
        s, e = max(0.0, a * hop - cfg.pad_s), min(duration_s, b * hop + cfg.pad_s)
        if spans and s <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], e))
        else:
            spans.append((s, e))
    return spans


class VoiceDetector:
    """Finds spans of human speech in a waveform.

    The ONNX session is created lazily in each process (a session must not cross a fork), so one instance
    can be built in a parent and used by workers. onnxruntime is pinned to one thread: the clean stage already
    runs one worker per core, and oversubscribing the cores only slows everything down.
    """

    def __init__(self, cfg: VadConfig | dict[str, Any] | None = None) -> None:
        self.cfg = cfg if isinstance(cfg, VadConfig) else VadConfig.from_dict(cfg or {})
        self._session: Any = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        return {"cfg": self.cfg, "_session": None, "_pid": -1}

    def _load(self) -> Any:
        if self._session is None or self._pid != os.getpid():
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            self._session = ort.InferenceSession(
                str(silero_model_path()), sess_options=opts, providers=["CPUExecutionProvider"]
            )
            self._pid = os.getpid()
        return self._session

    def speech_probs(self, wave: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
        """Per-frame speech probability.

        Args:
            wave: (samples,) float mono at ``sr`` Hz.
            sr: rate of ``wave`` in Hz.

        Returns:
            (ceil(samples_at_16k / 512),) float32, one probability per 32 ms frame.
        """
        x = resample(np.ascontiguousarray(wave, dtype=np.float32), sr, VAD_RATE)
        n_frames = -(-x.size // FRAME)
        if n_frames == 0:
            return np.zeros(0, dtype=np.float32)
        frames = np.zeros((n_frames, FRAME), dtype=np.float32)
        frames.reshape(-1)[: x.size] = x
        # Each model input row is the frame preceded by the last 64 samples of the previous frame.
        context = np.zeros((n_frames, _CONTEXT), dtype=np.float32)
        context[1:] = frames[:-1, -_CONTEXT:]
        rows = np.concatenate([context, frames], axis=1)
        session = self._load()
        h = np.zeros((1, 1, 128), dtype=np.float32)
        c = np.zeros((1, 1, 128), dtype=np.float32)
        out = []
        for i in range(0, n_frames, _BLOCK):
            p, h, c = session.run(["speech_probs", "hn", "cn"], {"input": rows[i : i + _BLOCK], "h": h, "c": c})
            out.append(p)
        return np.concatenate(out).astype(np.float32).reshape(-1)

    def detect(self, wave: np.ndarray, sr: int = SAMPLE_RATE) -> list[tuple[float, float]]:
        """Voiced spans of ``wave`` as sorted, non-overlapping (start_s, end_s) pairs in seconds."""
        return spans_from_probs(self.speech_probs(wave, sr), wave.shape[0] / sr, self.cfg)
