"""Parameterised call families (birds, frogs, insects, mammals): draw a species' parameters, render one bout."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from birdclef.synth._dsp import (
    NYQUIST_GUARD,
    SR,
    assemble,
    band_noise,
    contour,
    fade,
    formant_amps,
    loguniform,
    pulse_train,
    repeat_count,
    samples,
    tone,
    vary,
)

Params = dict[str, Any]


@dataclass(frozen=True)
class Jitter:
    """Log-normal sigmas of the per-call variation within one species."""

    pitch: float = 0.03
    duration: float = 0.10
    rate: float = 0.08


@dataclass(frozen=True)
class Family:
    """A call family: how to draw a species' parameters and how to render one bout of calls.

    Attributes:
        name: family name, stored in synth_truth/species.json.
        class_name: the taxonomic class whose species use this family.
        sample: draws a species' parameter dict from a numpy Generator.
        render: renders one bout, (params, rng, jitter) -> float64 waveform at 32 kHz with peak about 1.
        freq_keys: parameters (Hz) shifted together when a confusable twin is made.
        time_keys: parameters (seconds or Hz rates) one of which is shifted for a twin.
    """

    name: str
    class_name: str
    sample: Callable[[np.random.Generator], Params]
    render: Callable[[Params, np.random.Generator, Jitter], np.ndarray]
    freq_keys: tuple[str, ...]
    time_keys: tuple[str, ...]


def render_bout(family: str, params: Params, rng: np.random.Generator, jitter: Jitter) -> np.ndarray:
    """Render one bout (a song, a call series or a buzz) of a species.

    Args:
        family: key of ``FAMILIES``.
        params: the species' parameters from ``Family.sample``.
        rng: generator for the per-call variation.
        jitter: the within-species variation.

    Returns:
        Waveform (samples,) at 32 kHz, float64, peak 1.
    """
    x = FAMILIES[family].render(params, rng, jitter)
    peak = float(np.max(np.abs(x)))
    return x / peak if peak > 0 else x


def make_twin(family: str, params: Params, rng: np.random.Generator, shift: tuple[float, float]) -> Params:
    """Return a confusable copy of ``params``: all frequencies and one timing shifted by a few percent.

    Args:
        family: key of ``FAMILIES``.
        params: the parameters of the original species.
        rng: generator for the direction and size of the shift.
        shift: (low, high) relative shift, e.g. (0.05, 0.10).
    """
    fam = FAMILIES[family]
    twin = dict(params)
    freq_factor = (1 + rng.uniform(*shift)) ** rng.choice([-1, 1])
    for key in fam.freq_keys:
        twin[key] = float(params[key] * freq_factor)
    key = fam.time_keys[int(rng.integers(len(fam.time_keys)))]
    twin[key] = float(params[key] * (1 + 2 * rng.uniform(*shift)) ** rng.choice([-1, 1]))
    return twin


# ---------------------------------------------------------------- birds


def _whistle_sample(rng: np.random.Generator) -> Params:
    f_lo = loguniform(rng, 1200, 6500)
    return {
        "f_lo": f_lo,
        "f_hi": f_lo * rng.uniform(1.08, 1.9),
        "contour": str(rng.choice(["up", "down", "arch", "dip", "flat"])),
        "note_s": rng.uniform(0.12, 0.6),
        "notes": int(rng.integers(1, 7)),
        "gap_s": rng.uniform(0.04, 0.3),
        "step": rng.uniform(0.86, 1.12),
        "h2": rng.uniform(0.0, 0.5),
        "h3": rng.uniform(0.0, 0.25),
        "vib_hz": rng.uniform(5, 40),
        "vib_depth": float(rng.choice([0.0, rng.uniform(0.01, 0.06)])),
    }


def _whistle(p: Params, rng: np.random.Generator, jit: Jitter) -> np.ndarray:
    pitch, parts, t = vary(rng, jit.pitch), [], 0.0
    for i in range(repeat_count(rng, p["notes"]) if p["notes"] > 1 else 1):
        k = pitch * p["step"] ** i * vary(rng, jit.pitch / 3)
        dur = p["note_s"] * vary(rng, jit.duration)
        f = contour(p["contour"], p["f_lo"] * k, p["f_hi"] * k, samples(dur), p["vib_hz"], p["vib_depth"])
        parts.append((t, fade(tone(f, (1.0, p["h2"], p["h3"]), rng), 0.2 * dur, 0.3 * dur)))
        t += dur + p["gap_s"] * vary(rng, jit.rate)
    return assemble(parts)


def _trill_sample(rng: np.random.Generator) -> Params:
    rate = rng.uniform(8, 35)
    return {
        "f_start": loguniform(rng, 1800, 8000),
        "sweep": float(rng.choice([rng.uniform(0.55, 0.9), rng.uniform(1.1, 1.5)])),
        "element_s": rng.uniform(0.3, 0.8) / rate,
        "rate_hz": rate,
        "trill_s": rng.uniform(0.5, 2.5),
        "drift": rng.uniform(0.85, 1.15),
        "h2": rng.uniform(0.0, 0.3),
    }


def _trill(p: Params, rng: np.random.Generator, jit: Jitter) -> np.ndarray:
    pitch, rate = vary(rng, jit.pitch), p["rate_hz"] * vary(rng, jit.rate)
    n_el = max(2, int(p["trill_s"] * vary(rng, jit.duration) * rate))
    el_s = min(p["element_s"], 0.85 / rate)
    parts = []
    for i in range(n_el):
        f0 = p["f_start"] * pitch * p["drift"] ** (i / (n_el - 1))
        f = f0 * p["sweep"] ** np.linspace(0, 1, samples(el_s))
        parts.append((i / rate, fade(tone(f, (1.0, p["h2"]), rng), 0.25 * el_s, 0.35 * el_s)))
    return assemble(parts)


def _chirps_sample(rng: np.random.Generator) -> Params:
    return {
        "f_start": loguniform(rng, 2500, 9500),
        "ratio": float(rng.choice([rng.uniform(0.4, 0.8), rng.uniform(1.2, 1.6)])),
        "chirp_s": rng.uniform(0.03, 0.12),
        "chirps": int(rng.integers(2, 9)),
        "interval_s": rng.uniform(0.08, 0.45),
        "alt": rng.uniform(0.82, 1.2),
        "h2": rng.uniform(0.0, 0.35),
    }


def _chirps(p: Params, rng: np.random.Generator, jit: Jitter) -> np.ndarray:
    pitch, parts, t = vary(rng, jit.pitch), [], 0.0
    for i in range(repeat_count(rng, p["chirps"])):
        f0 = p["f_start"] * pitch * (p["alt"] if i % 2 else 1.0) * vary(rng, jit.pitch / 3)
        dur = p["chirp_s"] * vary(rng, jit.duration)
        f = f0 * p["ratio"] ** np.linspace(0, 1, samples(dur))
        parts.append((t, fade(tone(f, (1.0, p["h2"]), rng), 0.15 * dur, 0.4 * dur)))
        t += dur + p["interval_s"] * vary(rng, jit.rate)
    return assemble(parts)


# ---------------------------------------------------------------- amphibians


def _frog_pulse_sample(rng: np.random.Generator) -> Params:
    rate = rng.uniform(15, 150)
    return {
        "f0": loguniform(rng, 110, 600),
        "f_dom": loguniform(rng, 450, 3500),
        "bw": rng.uniform(0.15, 0.45),
        "pulse_hz": rate,
        "pulse_s": rng.uniform(0.3, 0.8) / rate,
        "call_s": rng.uniform(0.08, 0.9),
        "calls": int(rng.integers(1, 7)),
        "interval_s": rng.uniform(0.15, 1.0),
    }


def _frog_pulse(p: Params, rng: np.random.Generator, jit: Jitter) -> np.ndarray:
    pitch, parts, t = vary(rng, jit.pitch), [], 0.0
    f0, f_dom = p["f0"] * pitch, p["f_dom"] * pitch
    ks = np.arange(1, int(NYQUIST_GUARD / f0) + 1)
    weights = np.exp(-0.5 * (np.log(ks * f0 / f_dom) / p["bw"]) ** 2)
    amps = np.where(weights > 0.02, weights, 0.0)
    for _ in range(repeat_count(rng, p["calls"])):
        dur = p["call_s"] * vary(rng, jit.duration)
        n = samples(dur)
        carrier = tone(np.full(n, f0), amps, rng)
        am = pulse_train(n, p["pulse_hz"] * vary(rng, jit.rate), p["pulse_s"])
        parts.append((t, fade(carrier * am, 0.01, 0.02)))
        t += dur + p["interval_s"] * vary(rng, jit.rate)
    return assemble(parts)


def _frog_peep_sample(rng: np.random.Generator) -> Params:
    return {
        "f1": loguniform(rng, 900, 3200),
        "rise": rng.uniform(1.0, 1.15),
        "note1_s": rng.uniform(0.05, 0.15),
        "ratio2": float(rng.choice([0.0, rng.uniform(1.15, 1.6)])),
        "note2_s": rng.uniform(0.08, 0.25),
        "calls": int(rng.integers(1, 6)),
        "interval_s": rng.uniform(0.3, 1.4),
        "h2": rng.uniform(0.0, 0.2),
    }


def _frog_peep(p: Params, rng: np.random.Generator, jit: Jitter) -> np.ndarray:
    pitch, parts, t = vary(rng, jit.pitch), [], 0.0
    for _ in range(repeat_count(rng, p["calls"])):
        f1 = p["f1"] * pitch * vary(rng, jit.pitch / 3)
        d1 = p["note1_s"] * vary(rng, jit.duration)
        f = f1 * p["rise"] ** np.linspace(0, 1, samples(d1))
        parts.append((t, fade(tone(f, (1.0, p["h2"]), rng), 0.01, 0.02)))
        if p["ratio2"] > 0:
            d2 = p["note2_s"] * vary(rng, jit.duration)
            f2 = f1 * p["ratio2"] * p["rise"] ** np.linspace(0, 1, samples(d2))
            parts.append((t + d1 + 0.03, fade(tone(f2, (1.0, p["h2"]), rng), 0.01, 0.03)))
            d1 += 0.03 + d2
        t += d1 + p["interval_s"] * vary(rng, jit.rate)
    return assemble(parts)


# ---------------------------------------------------------------- insects


def _cricket_sample(rng: np.random.Generator) -> Params:
    continuous = rng.random() < 0.35
    return {
        "f_c": loguniform(rng, 2500, 9000),
        "syllable_hz": rng.uniform(15, 80),
        "duty": rng.uniform(0.3, 0.7),
        "chirp_s": 60.0 if continuous else rng.uniform(0.1, 0.6),
        "chirp_period_s": rng.uniform(0.3, 1.2),
        "bout_s": rng.uniform(1.5, 7.0),
        "h2": rng.uniform(0.0, 0.15),
    }


def _cricket(p: Params, rng: np.random.Generator, jit: Jitter) -> np.ndarray:
    n = samples(p["bout_s"] * vary(rng, jit.duration))
    f = np.full(n, p["f_c"] * vary(rng, jit.pitch / 2))
    x = tone(f, (1.0, p["h2"]), rng)
    rate = p["syllable_hz"] * vary(rng, jit.rate)
    x *= pulse_train(n, rate, p["duty"] / rate)
    if p["chirp_s"] < p["chirp_period_s"]:
        x *= pulse_train(n, 1.0 / p["chirp_period_s"], p["chirp_s"]) > 0
    return fade(x, 0.05, 0.1)


def _cicada_sample(rng: np.random.Generator) -> Params:
    lo = loguniform(rng, 2500, 8000)
    return {
        "lo": lo,
        "hi": min(lo * rng.uniform(1.3, 2.4), 15000.0),
        "am_hz": rng.uniform(40, 250),
        "am_depth": rng.uniform(0.3, 1.0),
        "bout_s": rng.uniform(1.5, 8.0),
        "swell": rng.uniform(0.0, 0.5),
    }


def _cicada(p: Params, rng: np.random.Generator, jit: Jitter) -> np.ndarray:
    dur = p["bout_s"] * vary(rng, jit.duration)
    n = samples(dur)
    pitch = vary(rng, jit.pitch / 2)
    x = band_noise(n, p["lo"] * pitch, p["hi"] * pitch, rng)
    t = np.arange(n) / SR
    x *= 1 - p["am_depth"] * (0.5 - 0.5 * np.cos(2 * np.pi * p["am_hz"] * vary(rng, jit.rate) * t))
    return fade(x, 0.05 + p["swell"] * dur, 0.15)


# ---------------------------------------------------------------- mammals


def _howl_sample(rng: np.random.Generator) -> Params:
    return {
        "f0": loguniform(rng, 150, 600),
        "rise": rng.uniform(1.1, 1.6),
        "call_s": rng.uniform(0.6, 2.5),
        "calls": int(rng.integers(1, 4)),
        "interval_s": rng.uniform(0.3, 1.5),
        "formant1": rng.uniform(300, 900),
        "formant2": rng.uniform(900, 2200),
    }


def _howl(p: Params, rng: np.random.Generator, jit: Jitter) -> np.ndarray:
    pitch, parts, t = vary(rng, jit.pitch), [], 0.0
    for _ in range(repeat_count(rng, p["calls"])):
        dur, f0 = p["call_s"] * vary(rng, jit.duration), p["f0"] * pitch * vary(rng, jit.pitch / 3)
        f = contour("arch", f0, f0 * p["rise"], samples(dur), 4.0, 0.01)
        amps = formant_amps(f0, ((p["formant1"], 250.0), (p["formant2"], 400.0)), top_hz=6000)
        parts.append((t, fade(tone(f, amps, rng), 0.2 * dur, 0.3 * dur)))
        t += dur + p["interval_s"] * vary(rng, jit.rate)
    return assemble(parts)


def _bark_sample(rng: np.random.Generator) -> Params:
    return {
        "f0": loguniform(rng, 200, 700),
        "drop": rng.uniform(0.6, 0.95),
        "bark_s": rng.uniform(0.06, 0.25),
        "noise": rng.uniform(0.2, 0.6),
        "formant": rng.uniform(500, 1800),
        "barks": int(rng.integers(2, 7)),
        "interval_s": rng.uniform(0.2, 0.8),
    }


def _bark(p: Params, rng: np.random.Generator, jit: Jitter) -> np.ndarray:
    pitch, parts, t = vary(rng, jit.pitch), [], 0.0
    for _ in range(repeat_count(rng, p["barks"])):
        dur, f0 = p["bark_s"] * vary(rng, jit.duration), p["f0"] * pitch
        n = samples(dur)
        tonal = tone(f0 * p["drop"] ** np.linspace(0, 1, n), formant_amps(f0, ((p["formant"], 600.0),)), rng)
        tonal /= max(float(np.max(np.abs(tonal))), 1e-9)
        noisy = band_noise(n, 0.5 * p["formant"], 2 * p["formant"], rng) / 3
        x = (1 - p["noise"]) * tonal + p["noise"] * noisy
        parts.append((t, fade(x, 0.01, 0.5 * dur)))
        t += dur + p["interval_s"] * vary(rng, jit.rate)
    return assemble(parts)


def _grunt_sample(rng: np.random.Generator) -> Params:
    return {
        "f0": loguniform(rng, 70, 180),
        "pulse_hz": rng.uniform(8, 30),
        "call_s": rng.uniform(0.2, 0.8),
        "formant": rng.uniform(400, 1300),
        "calls": int(rng.integers(1, 6)),
        "interval_s": rng.uniform(0.3, 1.2),
    }


def _grunt(p: Params, rng: np.random.Generator, jit: Jitter) -> np.ndarray:
    pitch, parts, t = vary(rng, jit.pitch), [], 0.0
    for _ in range(repeat_count(rng, p["calls"])):
        dur, f0 = p["call_s"] * vary(rng, jit.duration), p["f0"] * pitch
        n = samples(dur)
        x = tone(np.full(n, f0), formant_amps(f0, ((p["formant"], 350.0),), top_hz=3500), rng)
        x *= 0.3 + 0.7 * pulse_train(n, p["pulse_hz"] * vary(rng, jit.rate), 0.6 / p["pulse_hz"])
        parts.append((t, fade(x, 0.03, 0.3 * dur)))
        t += dur + p["interval_s"] * vary(rng, jit.rate)
    return assemble(parts)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("whistle", "Aves", _whistle_sample, _whistle, ("f_lo", "f_hi"), ("note_s", "gap_s")),
        Family("trill", "Aves", _trill_sample, _trill, ("f_start",), ("rate_hz", "trill_s")),
        Family("chirps", "Aves", _chirps_sample, _chirps, ("f_start",), ("chirp_s", "interval_s")),
        Family("frog_pulse", "Amphibia", _frog_pulse_sample, _frog_pulse, ("f0", "f_dom"), ("pulse_hz", "call_s")),
        Family("frog_peep", "Amphibia", _frog_peep_sample, _frog_peep, ("f1",), ("note1_s", "interval_s")),
        Family("cricket", "Insecta", _cricket_sample, _cricket, ("f_c",), ("syllable_hz", "chirp_period_s")),
        Family("cicada", "Insecta", _cicada_sample, _cicada, ("lo", "hi"), ("am_hz", "bout_s")),
        Family("howl", "Mammalia", _howl_sample, _howl, ("f0", "formant1", "formant2"), ("call_s", "interval_s")),
        Family("bark", "Mammalia", _bark_sample, _bark, ("f0", "formant"), ("bark_s", "interval_s")),
        Family("grunt", "Mammalia", _grunt_sample, _grunt, ("f0", "formant"), ("pulse_hz", "call_s")),
    )
}
"""Every call family by name."""


def families_of(class_name: str) -> list[str]:
    """Names of the call families used by one taxonomic class."""
    return [name for name, fam in FAMILIES.items() if fam.class_name == class_name]
