"""Synthetic taxonomy: species with eBird-style / iNat-style labels, names, call families and priors."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from birdclef.synth.calls import FAMILIES, families_of, make_twin
from birdclef.synth.config import CLASS_NAMES, SynthConfig

_ONSETS = ("b", "c", "d", "g", "l", "m", "n", "p", "r", "s", "t", "v", "ch", "ph", "th", "tr", "pl", "cr", "st")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "io", "y")
_GENUS_ENDS = ("us", "a", "ops", "ornis", "ius", "ella", "yx", "ura", "ix", "on")
_EPITHET_ENDS = ("us", "a", "um", "is", "ensis", "ii", "ata", "icus", "oides", "ae")
_ADJECTIVES = (
    "Rufous", "Olive", "Streaked", "Spotted", "Pale", "Dusky", "Crested", "Golden", "Scaly", "Barred",
    "Plain", "Tawny", "Ashy", "Sooty", "Chestnut", "Slaty", "Dwarf", "Greater", "Little", "Masked",
    "Striped", "Buff", "Cinereous", "Speckled", "Montane", "Andean", "Lowland", "Marsh", "Forest", "Pied",
)  # fmt: skip
_TWIN_PREFIXES = (("Northern", "Southern"), ("Eastern", "Western"), ("Highland", "Lowland"), ("Common", "Lesser"))
_NOUNS = {
    "whistle": ("Tanager", "Thrush", "Solitaire", "Tinamou", "Pewee", "Oriole"),
    "trill": ("Wren", "Warbler", "Spinetail", "Woodcreeper", "Seedeater", "Greenlet"),
    "chirps": ("Flycatcher", "Antbird", "Tyrannulet", "Sparrow", "Euphonia", "Finch"),
    "frog_pulse": ("Toad", "Tree Frog", "Chorus Frog", "Leaf Frog"),
    "frog_peep": ("Rain Frog", "Robber Frog", "Glass Frog", "Poison Frog"),
    "cricket": ("Cricket", "Bush Cricket", "Tree Cricket"),
    "cicada": ("Cicada", "Katydid", "Conehead"),
    "howl": ("Howler Monkey", "Night Monkey", "Fox"),
    "bark": ("Deer", "Peccary", "Titi Monkey"),
    "grunt": ("Agouti", "Tapir", "Capybara"),
}


@dataclass(frozen=True)
class Species:
    """One species of the synthetic taxonomy (or a distractor outside it).

    Attributes:
        label: primary_label (eBird-style code for birds, numeric iNat id string for the other classes).
        inat_taxon_id: numeric iNaturalist-style taxon id.
        scientific_name: binomial name.
        common_name: English name.
        class_name: Aves, Amphibia, Insecta or Mammalia.
        family: call family (a key of calls.FAMILIES).
        params: the species' call parameters.
        twin_of: label of the species this one is a confusable near copy of, if any.
        file_weight: relative share of train_audio files (long-tailed).
        soundscape_weight: relative chance to call in a soundscape (a different prior).
        home: (latitude, longitude) centre of the species' recordings.
    """

    label: str
    inat_taxon_id: int
    scientific_name: str
    common_name: str
    class_name: str
    family: str
    params: dict[str, Any]
    twin_of: str | None = None
    file_weight: float = 1.0
    soundscape_weight: float = 1.0
    home: tuple[float, float] = field(default=(6.76, -74.21))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict for synth_truth/species.json."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def make_taxonomy(config: SynthConfig, rng: np.random.Generator) -> tuple[list[Species], list[Species]]:
    """Draw the species of a preset and the out-of-taxonomy distractor species.

    Args:
        config: the preset (class counts, twins, priors).
        rng: generator for everything drawn here.

    Returns:
        (species sorted by label, as in taxonomy.csv; distractors).
    """
    knobs = config.species
    names = _NameBook(rng)
    plan = [c for c in CLASS_NAMES for _ in range(config.classes.get(c, 0))]
    missing = [c for c in CLASS_NAMES if config.classes.get(c, 0) < 1]
    if missing:
        raise ValueError(f"SynthCLEF preset {config.name!r} has no species of class(es) {', '.join(missing)}")
    species = [
        _new_species(c, names, rng, knobs.class_file_weight, knobs.class_soundscape_weight, knobs.file_popularity_sigma)
        for c in plan
    ]
    # a twin takes the slot (and the priors) of another species of the same class
    used: set[int] = set()
    order = [int(i) for i in rng.permutation(len(species))]
    pairs = 0
    for i in order:
        if pairs == knobs.confusable_pairs:
            break
        j = next((j for j in order if j != i and {i, j}.isdisjoint(used)
                  and species[j].class_name == species[i].class_name), None)
        if j is None:
            continue
        used |= {i, j}
        north, south = _TWIN_PREFIXES[int(rng.integers(len(_TWIN_PREFIXES)))]
        species[j] = _twin(species[i], f"{south} {species[i].common_name}", names, rng, knobs.twin_shift, species[j])
        species[i] = replace(species[i], common_name=f"{north} {species[i].common_name}")
        pairs += 1
    distractors = [
        _new_species(str(rng.choice(CLASS_NAMES[:3])), names, rng, knobs.class_file_weight,
                     knobs.class_soundscape_weight, knobs.file_popularity_sigma)
        for _ in range(knobs.distractors)
    ]
    return sorted(species, key=lambda s: s.label), distractors


def _new_species(class_name: str, names: _NameBook, rng: np.random.Generator, file_w: Any, scape_w: Any,
                 sigma: float) -> Species:
    family = str(rng.choice(families_of(class_name)))
    common = names.common(_NOUNS[family])
    genus = names.genus()
    taxon = names.taxon_id()
    return Species(
        label=names.ebird(common) if class_name == "Aves" else str(taxon),
        inat_taxon_id=taxon,
        scientific_name=f"{genus} {names.epithet()}",
        common_name=common,
        class_name=class_name,
        family=family,
        params=_plain_params(FAMILIES[family].sample(rng)),
        file_weight=float(file_w[class_name] * rng.lognormal(0, sigma)),
        soundscape_weight=float(scape_w[class_name] * rng.lognormal(0, 0.8)),
        home=(float(rng.normal(6.76, 0.5)), float(rng.normal(-74.21, 0.5))),
    )


def _twin(orig: Species, common: str, names: _NameBook, rng: np.random.Generator, shift: tuple[float, float],
          slot: Species) -> Species:
    """A look-alike of ``orig``: same family and genus, shifted parameters; keeps ``slot``'s priors."""
    taxon = names.taxon_id()
    return Species(
        label=names.ebird(common) if orig.class_name == "Aves" else str(taxon),
        inat_taxon_id=taxon,
        scientific_name=f"{orig.scientific_name.split()[0]} {names.epithet()}",
        common_name=common,
        class_name=orig.class_name,
        family=orig.family,
        params=_plain_params(make_twin(orig.family, orig.params, rng, shift)),
        twin_of=orig.label,
        file_weight=slot.file_weight,
        soundscape_weight=slot.soundscape_weight,
        home=(orig.home[0] + float(rng.normal(0, 0.3)), orig.home[1] + float(rng.normal(0, 0.3))),
    )


def _plain_params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, str) else float(v) if isinstance(v, float) else int(v)) for k, v in params.items()}


class _NameBook:
    """Draws unique pseudo-Latin names, English names, eBird-style codes and taxon ids."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.codes: set[str] = set()
        self.taxa: set[int] = set()
        self.genera: set[str] = set()
        self.commons: set[str] = set()

    def _syllables(self, k: int) -> str:
        return "".join(str(self.rng.choice(_ONSETS)) + str(self.rng.choice(_VOWELS)) for _ in range(k))

    def genus(self) -> str:
        while True:
            name = (self._syllables(int(self.rng.integers(1, 3))) + str(self.rng.choice(_GENUS_ENDS))).capitalize()
            if name not in self.genera:
                self.genera.add(name)
                return name

    def epithet(self) -> str:
        return self._syllables(int(self.rng.integers(1, 3))) + str(self.rng.choice(_EPITHET_ENDS))

    def common(self, nouns: tuple[str, ...]) -> str:
        while True:
            name = f"{self.rng.choice(_ADJECTIVES)} {self.rng.choice(nouns)}"
            if name not in self.commons:
                self.commons.add(name)
                return name

    def ebird(self, common: str) -> str:
        """eBird-style code: 3 letters of the first word + 3 of the last, a digit on collision (rufwre1)."""
        words = common.replace("-", " ").lower().split()
        base = (words[0][:3] + words[-1][:3]) if len(words) > 1 else words[0][:6]
        code, k = base, 0
        while code in self.codes:
            k += 1
            code = f"{base}{k}"
        self.codes.add(code)
        return code

    def taxon_id(self) -> int:
        while True:
            taxon = int(self.rng.integers(10_000, 1_600_000))
            if taxon not in self.taxa:
                self.taxa.add(taxon)
                return taxon
