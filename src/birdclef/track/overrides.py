"""Params overrides as `dvc exp run -S` arguments, in DVC's (Hydra's) grammar: presets and ablation variants."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def set_args(overrides: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> list[str]:
    """``-S key=value`` arguments in DVC's (Hydra's) override grammar, so DVC parses the values back typed.

    Args:
        overrides: dotted params keys -> values (scalars, lists, dicts).
        params: the current params; a key absent from them is written ``+key=value`` (Hydra adds it).
    """
    args: list[str] = []
    for key, value in overrides.items():
        prefix = "+" if params is not None and not _has_key(params, key) else ""
        args += ["-S", f"{prefix}{key}={value if isinstance(value, str) else hydra_value(value)}"]
    return args


def hydra_value(value: Any) -> str:
    """A value in Hydra's override grammar: bare dict keys, quoted strings, true/false/null."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return json.dumps(value)  # numbers, true / false, null


def _has_key(params: Mapping[str, Any], dotted: str) -> bool:
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True
