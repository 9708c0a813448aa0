"""Scenes: render one focal recording or one soundscape from its plan, returning audio and what was planted."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from birdclef import SAMPLE_RATE
from birdclef.synth._dsp import lowpass
from birdclef.synth.ambience import Background, NoiseProfile, distance, gain_for_snr, render_background
from birdclef.synth.calls import Jitter, render_bout
from birdclef.synth.species import Species
from birdclef.synth.voice import render_speech

SR = SAMPLE_RATE


@dataclass(frozen=True)
class Event:
    """A planted sound in a file (one bout of calls).

    Attributes:
        start_s: onset in seconds from the start of the file.
        end_s: offset in seconds (cropped to the file).
        label: species label (a distractor's own code for kind "distractor").
        kind: focal | secondary | background (unlabelled in train.csv) | soundscape | distractor (not in taxonomy).
        snr_db: in-band SNR of the bout over the background.
    """

    start_s: float
    end_s: float
    label: str
    kind: str
    snr_db: float


@dataclass(frozen=True)
class Distance:
    """How far a caller is: the distance filter applied to its calls."""

    lowpass_hz: float
    rt60_s: float
    wet: float


@dataclass(frozen=True)
class FocalPlan:
    """Everything decided up front about one train_audio file.

    Attributes:
        path: file path relative to the dataset root.
        seconds: file length in seconds.
        primary: primary label.
        secondary: (label, in-band SNR dB) of each labelled secondary species.
        background: (label, SNR dB) of an unlabelled faint species, or None.
        snr_db: mean in-band SNR of the primary's bouts.
        snr_spread_db: standard deviation of one bout's SNR around ``snr_db``.
        gap_s: (low, high) silence between two bouts of the primary, in seconds.
        voice: (start_s, duration_s, dB over the background RMS) of a spoken announcement, or None.
        far: distance applied to the primary's calls, or None.
        lowfi_hz: low-pass of a band-limited recorder, or None.
        noise: the file background.
        peak: peak level of the written file.
    """

    path: str
    seconds: float
    primary: str
    secondary: tuple[tuple[str, float], ...]
    background: tuple[str, float] | None
    snr_db: float
    snr_spread_db: float
    gap_s: tuple[float, float]
    voice: tuple[float, float, float] | None
    far: Distance | None
    lowfi_hz: float | None
    noise: NoiseProfile
    peak: float


@dataclass(frozen=True)
class Caller:
    """One calling individual of a soundscape.

    Attributes:
        label: species label.
        kind: "soundscape" (a taxonomy species) or "distractor".
        bouts: number of bouts in the soundscape.
        snr_db: mean in-band SNR of its bouts.
        where: its distance filter.
    """

    label: str
    kind: str
    bouts: int
    snr_db: float
    where: Distance


@dataclass(frozen=True)
class SoundscapePlan:
    """Everything decided up front about one soundscape.

    Attributes:
        path: file path relative to the dataset root.
        seconds: length in seconds.
        site: recording site name.
        night: recorded at night.
        noise: the background.
        callers: the calling individuals.
    """

    path: str
    seconds: float
    site: str
    night: bool
    noise: NoiseProfile
    callers: tuple[Caller, ...]


def render_focal(plan: FocalPlan, species: dict[str, Species], jitter: Jitter, rng: np.random.Generator
                 ) -> tuple[np.ndarray, list[Event], list[tuple[float, float]]]:
    """Render a focal recording.

    Args:
        plan: the file's plan.
        species: every species (and distractor) by label.
        jitter: within-species variation.
        rng: this file's generator.

    Returns:
        (audio (samples,) float32 at 32 kHz, planted call events, planted voice (start_s, end_s) segments).
    """
    n = int(round(plan.seconds * SR))
    background = render_background(plan.noise, n, rng)
    mix = background.wave.copy()
    lo, hi = 0.0, plan.seconds
    voice_segments: list[tuple[float, float]] = []
    if plan.voice is not None:
        start, dur, level_db = plan.voice
        speech, phrases = render_speech(dur, rng)
        level = np.sqrt(np.mean(background.wave**2)) * 10 ** (level_db / 20)
        i = int(start * SR)
        speech = speech[: n - i] * level / max(float(np.sqrt(np.mean(speech**2))), 1e-12)
        mix[i : i + len(speech)] += speech
        voice_segments = [(start + a, min(start + b, plan.seconds)) for a, b in phrases]
        spoken_end = start + len(speech) / SR
        lo, hi = (spoken_end + 0.2, plan.seconds) if start < plan.seconds / 2 else (0.0, start - 0.2)

    events: list[Event] = []
    t = lo + rng.uniform(0, min(1.0, 0.2 * (hi - lo)))
    while t < hi - 0.3:
        bout = render_bout(species[plan.primary].family, species[plan.primary].params, rng, jitter)
        if plan.far is not None:
            bout = distance(bout, plan.far.lowpass_hz, plan.far.rt60_s, plan.far.wet, rng)
        fits = int((hi - t) * SR)
        if len(bout) > fits and events:
            break
        bout = bout[:fits]
        events.append(_add(mix, background, bout, t, plan.snr_db + rng.normal(0, plan.snr_spread_db), plan.primary,
                           "focal"))
        t += len(bout) / SR + rng.uniform(*plan.gap_s)
    for label, snr in plan.secondary:
        for _ in range(int(rng.integers(1, 4))):
            events.append(_add_somewhere(mix, background, species[label], jitter, rng, lo, hi, snr, "secondary"))
    if plan.background is not None:
        label, snr = plan.background
        events.append(_add_somewhere(mix, background, species[label], jitter, rng, 0.0, plan.seconds, snr,
                                     "background"))
    if plan.lowfi_hz is not None:
        mix = lowpass(mix, plan.lowfi_hz, order=4)
    mix *= plan.peak / max(float(np.max(np.abs(mix))), 1e-12)
    return mix.astype(np.float32), sorted(events, key=lambda e: (e.start_s, e.label)), voice_segments


def render_soundscape(plan: SoundscapePlan, species: dict[str, Species], jitter: Jitter,
                      snr_spread_db: float, rng: np.random.Generator) -> tuple[np.ndarray, list[Event]]:
    """Render a soundscape: background plus every caller's bouts at random times, distance-filtered.

    Args:
        plan: the soundscape's plan.
        species: every species (and distractor) by label.
        jitter: within-species variation.
        snr_spread_db: standard deviation of a bout's SNR around its caller's SNR.
        rng: this file's generator.

    Returns:
        (audio (samples,) float32 at 32 kHz clipped to [-1, 1], planted call events).
    """
    n = int(round(plan.seconds * SR))
    background = render_background(plan.noise, n, rng)
    mix = background.wave.copy()
    events = []
    for caller in plan.callers:
        sp = species[caller.label]
        for _ in range(caller.bouts):
            bout = render_bout(sp.family, sp.params, rng, jitter)
            bout = distance(bout, caller.where.lowpass_hz, caller.where.rt60_s, caller.where.wet, rng)
            start = rng.uniform(-0.3 * len(bout) / SR, plan.seconds - 0.3)
            if start < 0:  # the bout began before the recording started
                bout, start = bout[int(-start * SR) :], 0.0
            bout = bout[: n - int(start * SR)]
            snr = caller.snr_db + rng.normal(0, snr_spread_db)
            events.append(_add(mix, background, bout, start, snr, caller.label, caller.kind))
    return np.clip(mix, -1, 1).astype(np.float32), sorted(events, key=lambda e: (e.start_s, e.label))


def _add(mix: np.ndarray, background: Background, bout: np.ndarray, start_s: float, snr_db: float, label: str,
         kind: str) -> Event:
    """Add ``bout`` at ``start_s`` scaled to ``snr_db`` over the local background; return its event."""
    i = int(round(start_s * SR))
    bout = bout[: len(mix) - i]
    gain = gain_for_snr(bout, background, i, snr_db)
    mix[i : i + len(bout)] += gain * bout
    return Event(round(i / SR, 3), round((i + len(bout)) / SR, 3), label, kind, round(float(snr_db), 2))


def _add_somewhere(mix: np.ndarray, background: Background, sp: Species, jitter: Jitter, rng: np.random.Generator,
                   lo: float, hi: float, snr_db: float, kind: str) -> Event:
    """Add one bout of ``sp`` at a random time within [lo, hi] seconds (cropped to fit)."""
    bout = render_bout(sp.family, sp.params, rng, jitter)
    start = rng.uniform(lo, max(lo, hi - min(len(bout) / SR, 0.5 * (hi - lo))))
    bout = bout[: max(1, int((hi - start) * SR))]
    return _add(mix, background, bout, start, snr_db, sp.label, kind)
