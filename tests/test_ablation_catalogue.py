"""ablations/catalogue.yaml (issue 18 item 4): at least 20 variants over the catalogue, each valid under the strict
params checks, each with a published effect; nothing runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from birdclef.track.ablate_spec import AblationSpec, variant_problems

REPO = Path(__file__).resolve().parents[1]
CATALOGUE = REPO / "ablations" / "catalogue.yaml"
EXTENDED = REPO / "ablations" / "catalogue_extended.yaml"


@pytest.mark.parametrize("path", [CATALOGUE, EXTENDED], ids=["catalogue", "extended"])
def test_every_catalogue_variant_is_valid_under_the_strict_params_checks(tmp_path: Path, path: Path) -> None:
    spec = AblationSpec.load(path)
    assert spec.seeds == [0, 1, 2] and spec.preset == "presets/bench.yaml"
    assert variant_problems(spec, REPO / "params.yaml", tmp_path) == {}
    kinds = spec.kinds(REPO)
    assert kinds["baseline"] == "baseline"
    post_only = {v for v, sets in spec.variants.items() if sets and all(k.startswith("ensemble.") for k in sets)}
    assert {k for k, v in kinds.items() if v == "reuse"} == post_only
    for variant in spec.variants:
        if variant != spec.baseline:
            assert spec.published.get(variant, {}).get("ref"), f"{variant}: no TECHNIQUES.md id"


def test_the_two_specs_split_the_catalogue_and_the_first_covers_every_category() -> None:
    main, extended = AblationSpec.load(CATALOGUE), AblationSpec.load(EXTENDED)
    kinds = main.kinds(REPO)
    assert len(main.variants) - 1 >= 20  # issue 18: at least 20 variants x 3 seeds in one unattended sitting
    assert kinds["no_smoothing"] == "reuse" and kinds["focal"] == "retrain"
    assert set(extended.kinds(REPO).values()) == {"baseline", "retrain"}
    assert set(main.variants) & set(extended.variants) == {"baseline"}
    assert main.overrides("baseline", 0) == extended.overrides("baseline", 0)  # one baseline: the run cache hits
    refs = {main.published[v]["ref"][0] for v in main.variants if v != main.baseline}
    assert refs >= {"L", "A", "S", "F", "P", "I"}  # losses, augmentation, sampling, front end, self-training, post
    assert len(set(main.variants) | set(extended.variants)) - 1 >= 33


def test_the_check_refuses_a_misspelt_key_and_a_bad_value(tmp_path: Path) -> None:
    doc = {"name": "bad", "seeds": [0], "variants": {"base": {}, "typo": {"train.loss.nmae": "focal"},
                                                        "value": {"train.loss.name": "nope"},
                                                        "post": {"ensemble.combination": "median"}}}  # fmt: skip
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(doc))
    found = variant_problems(AblationSpec.load(tmp_path / "spec.yaml"), REPO / "params.yaml", tmp_path)
    assert set(found) == {"typo", "value", "post"}
    assert any("nmae" in m for m in found["typo"]) and any("median" in m for m in found["post"])
