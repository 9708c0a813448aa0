"""Tests of the synthetic taxonomy: class mix, label styles, confusable twins, distractors."""

from __future__ import annotations

import numpy as np
import pytest

from birdclef.synth.calls import FAMILIES
from birdclef.synth.config import CLASS_NAMES, preset_config
from birdclef.synth.species import make_taxonomy


@pytest.mark.parametrize("preset", ["tiny", "demo", "full"])
def test_class_counts_follow_the_preset(preset: str) -> None:
    config = preset_config(preset)
    species, distractors = make_taxonomy(config, np.random.default_rng(0))
    for class_name in CLASS_NAMES:
        assert sum(s.class_name == class_name for s in species) == config.classes[class_name]
    labels = [s.label for s in species]
    assert len(set(labels)) == len(labels) and labels == sorted(labels)
    assert len({s.common_name for s in species}) == len(species)
    assert len({s.inat_taxon_id for s in [*species, *distractors]}) == len(species) + len(distractors)
    assert len(distractors) == config.species.distractors
    assert not {d.label for d in distractors} & set(labels)
    for s in species:
        assert FAMILIES[s.family].class_name == s.class_name
        assert s.label == str(s.inat_taxon_id) or s.class_name == "Aves"


def test_twins_are_look_alikes_of_their_originals() -> None:
    config = preset_config("full")
    species, _ = make_taxonomy(config, np.random.default_rng(1))
    by_label = {s.label: s for s in species}
    twins = [s for s in species if s.twin_of is not None]
    assert len(twins) == config.species.confusable_pairs
    assert len({t.twin_of for t in twins}) == len(twins)  # one twin per original
    for twin in twins:
        orig = by_label[twin.twin_of]
        assert orig.family == twin.family and orig.class_name == twin.class_name
        assert orig.scientific_name.split()[0] == twin.scientific_name.split()[0]  # same genus
        assert orig.common_name.split()[1:] == twin.common_name.split()[1:]  # "Northern X" / "Southern X"
        changed = [k for k in orig.params if orig.params[k] != twin.params[k]]
        assert changed and all(0.8 < twin.params[k] / orig.params[k] < 1.25 for k in changed)


def test_same_seed_same_taxonomy_other_seed_other() -> None:
    config = preset_config("demo")
    a, _ = make_taxonomy(config, np.random.default_rng(5))
    b, _ = make_taxonomy(config, np.random.default_rng(5))
    c, _ = make_taxonomy(config, np.random.default_rng(6))
    assert [s.to_dict() for s in a] == [s.to_dict() for s in b]
    assert [s.label for s in a] != [s.label for s in c]


def test_a_class_without_species_is_refused() -> None:
    config = preset_config("tiny", {"classes": {"Aves": 3, "Amphibia": 1, "Insecta": 0, "Mammalia": 1}})
    with pytest.raises(ValueError, match="no species of class.*Insecta"):
        make_taxonomy(config, np.random.default_rng(0))
