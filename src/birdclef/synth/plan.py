"""Planning: every random decision about files, sites and soundscapes, made up front in one process."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np

from birdclef.synth.ambience import NoiseProfile
from birdclef.synth.config import FocalKnobs, SynthConfig
from birdclef.synth.scenes import Caller, Distance, FocalPlan, SoundscapePlan
from birdclef.synth.species import Species

_COLLECTIONS = ("XC", "iNat", "CSA")
_COLLECTION_PROBS = {"Aves": (0.85, 0.12, 0.03), "other": (0.40, 0.45, 0.15)}
_ID_RANGES = {"XC": (100_000, 999_999), "iNat": (100_000, 99_999_999), "CSA": (10_000, 99_999)}
_LICENSES = {
    "XC": ("cc-by-nc-sa 4.0", "cc-by-nc-nd 4.0", "cc-by-sa 4.0", "cc-by 4.0"),
    "iNat": ("cc-by-nc 4.0", "cc-by 4.0", "cc0 1.0"),
    "CSA": ("cc-by-nc-sa 4.0",),
}
_FIRST = ("Ana", "Luis", "Marta", "Jorge", "Paula", "Diego", "Sofia", "Andres", "Carla", "Peter", "Ines", "Tomas")
_LAST = ("Rojas", "Gomez", "Vargas", "Moreno", "Silva", "Herrera", "Castro", "Ortiz", "Lopez", "Boesman", "Reyes")
_NIGHT_CLASS_FACTOR = {"Aves": 0.3, "Amphibia": 2.5, "Insecta": 2.0, "Mammalia": 1.5}
_SITE_LETTERS = "HKLMPRSTU"


@dataclass(frozen=True)
class Recording:
    """One train_audio file: its render plan and its train.csv row (every column but the audio)."""

    plan: FocalPlan
    row: dict[str, Any]


@dataclass(frozen=True)
class Site:
    """A recording site: its background conditions and its own mix of calling species."""

    name: str
    split: str
    weights: dict[str, float]
    redness: float
    wind_db: float
    chorus_db: float
    chorus_band: tuple[float, float]
    rain_prob: float
    stream_db: float | None
    level_dbfs: float
    rt60_s: float
    activity: float


def file_counts(config: SynthConfig, species: list[Species], rng: np.random.Generator) -> dict[str, int]:
    """Number of train_audio files per species: long-tailed shares, some species forced down to 1-3 files."""
    n = len(species)
    counts = np.zeros(n, dtype=int)
    prefer = np.array([1.0 if s.class_name == "Aves" else 3.0 for s in species])  # the tail is mostly non-birds
    rare = rng.choice(n, size=min(config.rare_species, n - 1), replace=False, p=prefer / prefer.sum())
    counts[rare] = rng.integers(1, 4, len(rare))
    rest = np.array([i for i in range(n) if i not in set(rare.tolist())])
    weights = np.array([species[i].file_weight for i in rest])
    budget = max(config.focal_files - int(counts.sum()), len(rest))
    share = budget * weights / weights.sum()
    base = np.maximum(1, np.floor(share)).astype(int)
    left = budget - int(base.sum())
    if left > 0:  # largest remainder
        base[np.argsort(-(share - np.floor(share)), kind="stable")[:left]] += 1
    counts[rest] = base
    return {s.label: int(c) for s, c in zip(species, counts, strict=True)}


def plan_recordings(config: SynthConfig, species: list[Species], rng: np.random.Generator) -> list[Recording]:
    """Plan every train_audio file and its train.csv row, species in label order."""
    knobs = config.focal
    counts = file_counts(config, species, rng)
    scape_w = np.array([s.soundscape_weight for s in species])
    authors = [f"{rng.choice(_FIRST)} {rng.choice(_LAST)}" for _ in range(max(3, sum(counts.values()) // 6))]
    author_w = 1.0 / np.arange(1, len(authors) + 1)  # a few prolific recordists
    used_ids: set[str] = set()
    recordings = []
    for idx, sp in enumerate(species):
        for _ in range(counts[sp.label]):
            probs = _COLLECTION_PROBS["Aves" if sp.class_name == "Aves" else "other"]
            collection = str(rng.choice(_COLLECTIONS, p=probs))
            seconds = float(np.clip(rng.lognormal(np.log(knobs.duration_median_s), knobs.duration_sigma),
                                    *knobs.duration_range_s))
            seconds = round(seconds, 2)
            # skewed towards clean recordings, as uploads to sound archives are
            snr = knobs.snr_db[0] + (knobs.snr_db[1] - knobs.snr_db[0]) * float(rng.beta(1.8, 1.2))
            secondary, background = _other_species(knobs, species, idx, snr, scape_w, rng)
            voice = None
            if rng.random() < knobs.voice_prob.get(collection, 0.0):
                dur = min(float(rng.uniform(*knobs.voice_duration_s)), 0.45 * seconds)
                if dur >= 1.2:
                    at_start = rng.random() < knobs.voice_at_start_prob
                    start = float(rng.uniform(0, 0.3)) if at_start else seconds - dur - float(rng.uniform(0, 0.3))
                    voice = (round(start, 3), dur, float(rng.uniform(*knobs.voice_level_db)))
            far = None
            if rng.random() < knobs.far_prob:
                far = Distance(float(rng.uniform(3000, 8000)), float(rng.uniform(0.2, 0.6)),
                               float(rng.uniform(0.1, 0.35)))
            lowfi = float(rng.uniform(3500, 7000)) if rng.random() < knobs.lowfi_prob else None
            file_id = _unique_id(collection, rng, used_ids)
            plan = FocalPlan(
                path=f"train_audio/{sp.label}/{file_id}.ogg",
                seconds=seconds,
                primary=sp.label,
                secondary=tuple(secondary),
                background=background,
                snr_db=snr,
                snr_spread_db=knobs.snr_spread_db,
                # short files keep short gaps so that they still hold a few bouts
                gap_s=(knobs.bout_gap_s[0], max(2 * knobs.bout_gap_s[0], min(knobs.bout_gap_s[1], seconds / 6))),
                voice=voice,
                far=far,
                lowfi_hz=lowfi,
                noise=_focal_noise(config, rng),
                peak=float(rng.uniform(0.3, 0.95)),
            )
            rating = _rating(knobs.snr_db, snr, far is not None, lowfi is not None, bool(secondary),
                             background is not None, rng) if collection == "XC" else 0.0
            row = {
                "primary_label": sp.label,
                "secondary_labels": repr([lab for lab, _ in secondary]),
                "type": _call_type(sp, collection, rng),
                "filename": f"{sp.label}/{file_id}.ogg",
                "collection": collection,
                "rating": rating,
                "url": f"https://synthclef.invalid/{collection.lower()}/{file_id}",
                "latitude": round(sp.home[0] + float(rng.normal(0, 0.3)), 4),
                "longitude": round(sp.home[1] + float(rng.normal(0, 0.3)), 4),
                "scientific_name": sp.scientific_name,
                "common_name": sp.common_name,
                "author": str(rng.choice(authors, p=author_w / author_w.sum())),
                "license": str(rng.choice(_LICENSES[collection])),
            }
            recordings.append(Recording(plan, row))
    return recordings



def _other_species(knobs: FocalKnobs, species: list[Species], idx: int, snr: float, scape_w: np.ndarray,
                   rng: np.random.Generator) -> tuple[list[tuple[str, float]], tuple[str, float] | None]:
    """Labelled secondary species and an unlabelled background species of one focal file, with their SNRs."""
    others = np.array([i for i in range(len(species)) if i != idx])
    secondary: list[tuple[str, float]] = []
    if rng.random() < knobs.secondary_prob:
        # co-occurring species: the ones that are common in soundscapes
        picks = rng.choice(others, size=1 if rng.random() < 0.7 else 2, replace=False,
                           p=scape_w[others] / scape_w[others].sum())
        secondary = [(species[int(i)].label, snr + float(rng.uniform(*knobs.secondary_snr_offset_db))) for i in picks]
    background = None
    if rng.random() < knobs.background_species_prob:
        taken = {species[idx].label, *(lab for lab, _ in secondary)}
        free = [int(i) for i in others if species[int(i)].label not in taken]
        background = (species[int(rng.choice(free))].label, snr + float(rng.uniform(*knobs.background_snr_offset_db)))
    return secondary, background


def _rating(snr_range: tuple[float, float], snr: float, far: bool, lowfi: bool, secondary: bool, background: bool,
            rng: np.random.Generator) -> float:
    """Xeno-canto-style rating (0.5-5 in half steps) that tracks quality: SNR first, then distance, recorder,
    other species; plus rater noise."""
    quality = (snr - snr_range[0]) / (snr_range[1] - snr_range[0]) + rng.normal(0, 0.08)
    quality -= 0.15 * far + 0.2 * lowfi + 0.1 * secondary + 0.1 * background
    return float(np.clip(np.round(2 * (1.0 + 4.0 * quality)) / 2, 0.5, 5.0))


def plan_sites(config: SynthConfig, species: list[Species], rng: np.random.Generator,
               splits: tuple[tuple[str, int], ...] | None = None, first: int = 0) -> list[Site]:
    """Draw the sites of each split (train and test unless ``splits`` says otherwise): distinct draws from the
    same conditions. ``first`` numbers the sites after those of another call, so names never collide."""
    knobs = config.soundscape
    sites: list[Site] = []
    letters = rng.permutation(list(_SITE_LETTERS))
    splits = splits or (("train", config.train_sites), ("test", config.test_sites))
    for split, count in splits:
        for _ in range(count):
            mix = np.array([s.soundscape_weight for s in species]) * rng.gamma(knobs.site_concentration, 1.0,
                                                                               len(species))
            lo = float(np.exp(rng.uniform(np.log(3000), np.log(7000))))
            sites.append(Site(
                name=f"{letters[(first + len(sites)) % len(letters)]}{first + len(sites) + 1:02d}",
                split=split,
                weights={s.label: float(w) + 1e-6 for s, w in zip(species, mix, strict=True)},
                redness=float(rng.uniform(0.0, 1.0)),
                wind_db=float(rng.uniform(*knobs.wind_db)),
                chorus_db=float(rng.uniform(*knobs.chorus_db)),
                chorus_band=(lo, lo * float(rng.uniform(1.3, 2.0))),
                rain_prob=float(rng.uniform(*knobs.rain_prob)),
                stream_db=float(rng.uniform(-8, 2)) if rng.random() < knobs.stream_prob else None,
                level_dbfs=float(rng.uniform(*knobs.background_dbfs)),
                rt60_s=float(rng.uniform(*knobs.reverb_rt60_s)),
                activity=float(rng.uniform(0.6, 1.4)),
            ))
    return sites


def plan_soundscapes(config: SynthConfig, sites: list[Site], species: list[Species], distractors: list[Species],
                     rng: np.random.Generator, splits: tuple[tuple[str, int], ...] | None = None
                     ) -> list[SoundscapePlan]:
    """Plan the train soundscapes (site-named, like H02_20240315_053000) then the test ones (soundscape_NNNNNNN);
    ``splits`` plans others instead (``(("val", n),)``: site-named, like the labelled soundscapes of 2026)."""
    knobs = config.soundscape
    plans = []
    names: set[str] = set()
    splits = splits or (("train", config.train_soundscapes), ("test", config.test_soundscapes))
    for split, count in splits:
        split_sites = [s for s in sites if s.split == split]
        for k in range(count):
            site = split_sites[k % len(split_sites)]
            night = bool(rng.random() < knobs.night_prob)
            noise = NoiseProfile(
                redness=site.redness,
                wind_db=site.wind_db + float(rng.normal(0, 3)) if rng.random() < 0.7 else None,
                rain_db=float(rng.uniform(-6, 3)) if rng.random() < site.rain_prob else None,
                chorus_db=site.chorus_db + (6.0 if night else 0.0) + float(rng.normal(0, 2)),
                chorus_band=site.chorus_band,
                stream_db=site.stream_db,
                level_dbfs=site.level_dbfs + float(rng.normal(0, 2)),
            )
            callers = _callers(config, site, species, night, rng)
            if distractors and rng.random() < knobs.distractor_prob:
                callers.append(_caller(config, distractors[int(rng.integers(len(distractors)))], "distractor", rng))
            name = _soundscape_name(split, site, night, rng, names)
            plans.append(SoundscapePlan(f"{split}_soundscapes/{name}.ogg", float(knobs.seconds), site.name, night,
                                        noise, tuple(callers)))
    return plans


def _callers(config: SynthConfig, site: Site, species: list[Species], night: bool, rng: np.random.Generator
             ) -> list[Caller]:
    knobs = config.soundscape
    weights = np.array([site.weights[s.label] * (_NIGHT_CLASS_FACTOR[s.class_name] if night else 1.0)
                        for s in species])
    k = min(knobs.species_max, len(species), int(rng.poisson(knobs.species_mean * site.activity)))
    chosen = rng.choice(len(species), size=k, replace=False, p=weights / weights.sum()) if k else []
    callers = []
    for i in chosen:
        for _ in range(2 if rng.random() < knobs.second_individual_prob else 1):
            callers.append(_caller(config, species[int(i)], "soundscape", rng, site.rt60_s))
    return callers


def _caller(config: SynthConfig, sp: Species, kind: str, rng: np.random.Generator, rt60_s: float | None = None
            ) -> Caller:
    """One individual at a random distance d in [0, 1]: farther = quieter, duller, more reverberant."""
    knobs = config.soundscape
    d = float(rng.random())
    lp_lo, lp_hi = np.log(knobs.lowpass_hz[0]), np.log(knobs.lowpass_hz[1])
    where = Distance(
        lowpass_hz=float(np.exp(lp_hi - d * (lp_hi - lp_lo))),
        rt60_s=rt60_s if rt60_s is not None else float(rng.uniform(*knobs.reverb_rt60_s)),
        wet=knobs.reverb_wet[0] + d * (knobs.reverb_wet[1] - knobs.reverb_wet[0]),
    )
    rate = float(rng.uniform(*knobs.bouts_per_minute)) * (2.0 if sp.class_name == "Insecta" else 1.0)
    bouts = max(1, int(rng.poisson(rate * knobs.seconds / 60)))
    snr = knobs.snr_db[1] - d * (knobs.snr_db[1] - knobs.snr_db[0])
    return Caller(sp.label, kind, bouts, snr, where)


def _focal_noise(config: SynthConfig, rng: np.random.Generator) -> NoiseProfile:
    """A light background for a focal recording: mostly pink-ish noise, sometimes wind, chorus or stream."""
    lo = float(np.exp(rng.uniform(np.log(3000), np.log(7000))))
    return NoiseProfile(
        redness=float(rng.uniform(0.0, 0.6)),
        wind_db=float(rng.uniform(-12, 0)) if rng.random() < 0.3 else None,
        rain_db=float(rng.uniform(-10, -3)) if rng.random() < 0.05 else None,
        chorus_db=float(rng.uniform(-18, -6)) if rng.random() < 0.15 else None,
        chorus_band=(lo, lo * 1.5),
        stream_db=float(rng.uniform(-10, 0)) if rng.random() < 0.1 else None,
        level_dbfs=float(rng.uniform(*config.focal.background_dbfs)),
    )


def _unique_id(collection: str, rng: np.random.Generator, used: set[str]) -> str:
    prefix = {"XC": "XC", "iNat": "iNat", "CSA": "CSA"}[collection]
    while True:
        file_id = f"{prefix}{int(rng.integers(*_ID_RANGES[collection]))}"
        if file_id not in used:
            used.add(file_id)
            return file_id


def _call_type(sp: Species, collection: str, rng: np.random.Generator) -> str:
    """The train.csv ``type`` cell: Xeno-canto sound types; iNaturalist and CSA leave it empty."""
    if collection != "XC":
        return "['']"
    if sp.family in ("whistle", "trill"):
        return "['song']" if rng.random() < 0.7 else "['song', 'call']"
    return "['call']"


def _soundscape_name(split: str, site: Site, night: bool, rng: np.random.Generator, used: set[str]) -> str:
    while True:
        if split == "test":
            name = f"soundscape_{int(rng.integers(1_000_000, 9_999_999))}"
        else:
            day = date(2024, 1, 1) + timedelta(days=int(rng.integers(0, 366)))
            hour = int(rng.choice([19, 20, 21, 22, 23, 0, 1, 2, 3, 4])) if night else int(rng.integers(5, 19))
            name = f"{site.name}_{day:%Y%m%d}_{hour:02d}{int(rng.integers(0, 6)) * 10:02d}00"
        if name not in used:
            used.add(name)
            return name
