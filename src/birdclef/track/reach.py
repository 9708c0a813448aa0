"""Which DVC stages a params change reaches, read from dvc.yaml, and whether an ablation variant must retrain.

The rule is derived, never listed by hand: a stage is reached by a dotted key when one of its ``params`` entries is
the key, a section above it (``ensemble`` covers ``ensemble.postprocess.smoothing``) or a key below it (changing
``teacher`` touches ``teacher.name``), or when the stage interpolates the key (``foreach: ${pseudo.rounds}``,
``${item.k}`` excepted). A variant whose changes reach only :data:`REUSE_STAGES` is scored on the baseline's trained
members (the same seed): its experiment would rerun nothing but those stages, so retraining would only add cost.
Adding a params key to a training stage's list in dvc.yaml moves every variant that sets it to "retrain" at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

REUSE_STAGES = frozenset({"ensemble"})
"""Stages that only combine and post-process trained members: their params can be varied on the baseline's models.
``export`` and ``infer`` are left out on purpose: the ablation scores the ensemble stage's test predictions, which
those stages' params cannot change."""

PARAMS_FILE = "params.yaml"
_INTERPOLATION = re.compile(r"\$\{\s*([A-Za-z0-9_.\[\]-]+)\s*\}")

Kind = Literal["reuse", "retrain"]


def stage_params(dvc_yaml: Path) -> dict[str, list[str]]:
    """``{stage: [params.yaml keys it depends on]}`` from a dvc.yaml (``foreach`` stages under their base name).

    Entries of other params files (``{other.yaml: [...]}``) are left out: ablation overrides go to params.yaml.
    A ``{params.yaml: null}`` entry (the whole file) is the empty key, which every key reaches.
    """
    doc = yaml.safe_load(dvc_yaml.read_text()) or {}
    out: dict[str, list[str]] = {}
    for name, stage in (doc.get("stages") or {}).items():
        body = stage.get("do", stage) if isinstance(stage, Mapping) else {}
        keys: list[str] = []
        for entry in body.get("params") or []:
            if isinstance(entry, str):
                keys.append(entry)
            elif isinstance(entry, Mapping):
                for file, listed in entry.items():
                    if file == PARAMS_FILE:
                        keys += [""] if listed is None else [str(k) for k in listed]
        # what the stage interpolates (its foreach list, ${...} in cmd / deps / outs) reaches it too
        keys += [k for k in _INTERPOLATION.findall(yaml.safe_dump(stage)) if not k.startswith("item")]
        out[str(name)] = list(dict.fromkeys(keys))
    return out


def _covers(declared: str, key: str) -> bool:
    # "" (the whole file) covers every key; a section covers its keys; a key covers the entries below it.
    declared = re.sub(r"\[\d+\]", "", declared)
    return (not declared or declared == key or key.startswith(f"{declared}.")
            or declared.startswith(f"{key}."))  # fmt: skip


def reached(keys: Iterable[str], stages: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """``{key: [stages it reaches]}`` for dotted params keys (a leading ``+``, Hydra's add, is ignored)."""
    out = {}
    for key in keys:
        bare = key.lstrip("+")
        out[key] = [s for s, declared in stages.items() if any(_covers(d, bare) for d in declared)]
    return out


def variant_kind(overrides: Mapping[str, Any], stages: Mapping[str, list[str]]) -> Kind:
    """``"reuse"`` when every override reaches only :data:`REUSE_STAGES`, else ``"retrain"``.

    A variant with no overrides (a replicate of the committed params) is ``"retrain"``: it is one more run.

    Raises:
        ValueError: a key that no stage reads (a misspelt key would otherwise be an experiment that changes
            nothing), naming it.
    """
    if not overrides:
        return "retrain"
    found = reached(overrides, stages)
    unread = [k for k, s in found.items() if not s]
    if unread:
        raise ValueError(f"params key(s) {', '.join(unread)} reach no stage of dvc.yaml: nothing would change")
    return "reuse" if all(set(s) <= REUSE_STAGES for s in found.values()) else "retrain"
