"""Declarative params schema primitives: each node checks a value and names every problem by its dotted path."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any


class Spec:
    """One node of the schema: ``check`` returns one message per problem of ``value`` at dotted ``path``."""

    def check(self, value: Any, path: str) -> list[str]:  # pragma: no cover - every spec overrides it
        raise NotImplementedError

    def describe(self) -> str:
        """What a good value looks like (error messages)."""
        return "a value"


class AnyValue(Spec):
    """Anything (a key that exists, whose value another part of the code checks)."""

    def check(self, value: Any, path: str) -> list[str]:
        return []


# YAML 1.1 (PyYAML, so the stages) reads 1e-06 as a string; a YAML 1.2 writer (`dvc exp run -S`) writes floats so.
_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@dataclass(frozen=True)
class Num(Spec):
    """A number (an int where ``integer``) within optional bounds; ``null`` also accepts None."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    null: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            kind += f" in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        elif self.low is not None:
            kind += f" {'>' if self.low_open else '>='} {self.low:g}"
        elif self.high is not None:
            kind += f" {'<' if self.high_open else '<='} {self.high:g}"
        return kind + (" or null" if self.null else "")

    def check(self, value: Any, path: str) -> list[str]:
        if value is None and self.null:
            return []
        if isinstance(value, str) and not self.integer and _FLOAT_TEXT.fullmatch(value.strip()):
            value = float(value)
        ok = isinstance(value, int) if self.integer else isinstance(value, int | float)
        if not ok or isinstance(value, bool):
            return [f"{path} must be {self.describe()}, got {value!r}"]
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        return [f"{path} must be {self.describe()}, got {value!r}"] if too_low or too_high else []


def integer(low: int | None = None, null: bool = False) -> Num:
    """An int >= ``low``."""
    return Num(low=low, integer=True, null=null)


PROB = Num(0.0, 1.0)  # a probability or share
RATE = Num(0.0, 1.0, high_open=True)  # dropout-like rates, label smoothing
POSITIVE = Num(0.0, low_open=True)
NONNEG = Num(0.0)


class Flag(Spec):
    """true or false."""

    def describe(self) -> str:
        return "true or false"

    def check(self, value: Any, path: str) -> list[str]:
        return [] if isinstance(value, bool) else [f"{path} must be true or false, got {value!r}"]


FLAG = Flag()


@dataclass(frozen=True)
class Choice(Spec):
    """One of ``options``; ``aliases`` maps values YAML may produce to an option (a bare ``off`` reads False)."""

    options: tuple[Any, ...]
    aliases: tuple[tuple[Any, Any], ...] = ()

    def describe(self) -> str:
        return "one of " + ", ".join(str(o) for o in self.options)

    def check(self, value: Any, path: str) -> list[str]:
        value = next((to for frm, to in self.aliases if value is frm), value)
        ok = isinstance(value, str | int | None) and not isinstance(value, bool) and value in self.options
        return [] if ok else [f"{path} must be {self.describe()}, got {value!r}"]


@dataclass(frozen=True)
class Text(Spec):
    """A non-empty string; ``null`` also accepts None."""

    null: bool = False

    def describe(self) -> str:
        return "a non-empty string" + (" or null" if self.null else "")

    def check(self, value: Any, path: str) -> list[str]:
        if (value is None and self.null) or (isinstance(value, str) and value):
            return []
        return [f"{path} must be {self.describe()}, got {value!r}"]


class Names(Spec):
    """A list of distinct non-empty strings."""

    def describe(self) -> str:
        return "a list of distinct names"

    def check(self, value: Any, path: str) -> list[str]:
        ok = isinstance(value, list | tuple) and all(isinstance(v, str) and v for v in value)
        return [] if ok and len(set(value)) == len(value) else [f"{path} must be {self.describe()}, got {value!r}"]


NAMES = Names()


@dataclass(frozen=True)
class Either(Spec):
    """A value any of ``specs`` accepts."""

    specs: tuple[Spec, ...]

    def describe(self) -> str:
        return " or ".join(s.describe() for s in self.specs)

    def check(self, value: Any, path: str) -> list[str]:
        if any(not s.check(value, path) for s in self.specs):
            return []
        return [f"{path} must be {self.describe()}, got {value!r}"]


def mapping_problem(value: Any, path: str, keys: Sequence[str]) -> list[str]:
    if isinstance(value, Mapping):
        return []
    return [f"{path} must be a mapping (keys: {', '.join(sorted(keys))}), got {value!r}"]


@dataclass(frozen=True)
class Section(Spec):
    """A mapping with a fixed set of keys, each with its spec; ``required`` keys must be present."""

    keys: Mapping[str, Spec]
    required: tuple[str, ...] = ()

    def describe(self) -> str:
        return "a mapping"

    def check(self, value: Any, path: str) -> list[str]:
        if value is None:
            return []  # an empty section (`loss:` with nothing under it) takes the defaults
        if bad := mapping_problem(value, path, list(self.keys)):
            return bad
        valid = ", ".join(sorted(self.keys))
        out = [f"unknown key {path}.{k}; valid: {valid}" for k in value if k not in self.keys]
        out += [f"{path}.{k} is missing" for k in self.required if k not in value]
        for key, spec in self.keys.items():
            if key in value:
                out += spec.check(value[key], f"{path}.{key}")
        return out


@dataclass(frozen=True)
class Entries(Spec):
    """A list whose entries each follow ``entry`` (path ``<path>.<index>``, as `dvc exp run -S` writes it)."""

    entry: Spec

    def check(self, value: Any, path: str) -> list[str]:
        if not isinstance(value, list | tuple):
            return [f"{path} must be a list, got {value!r}"]
        return [m for i, item in enumerate(value) for m in self.entry.check(item, f"{path}.{i}")]


@dataclass(frozen=True)
class Named(Spec):
    """A mapping of free names (models, mel configs) to entries that each follow ``entry``."""

    entry: Spec

    def check(self, value: Any, path: str) -> list[str]:
        if not isinstance(value, Mapping):
            return [f"{path} must be a mapping of names to configs, got {value!r}"]
        return [m for name, item in value.items() for m in self.entry.check(item, f"{path}.{name}")]


@dataclass(frozen=True)
class ByName(Spec):
    """A dict whose ``name`` picks the keys it may hold (``table``: name -> keys); ``values`` types the keys."""

    table: Mapping[str, Sequence[str]]
    default: str
    values: Mapping[str, Spec]

    def check(self, value: Any, path: str) -> list[str]:
        if value is None:
            return []
        if bad := mapping_problem(value, path, ["name"]):
            return bad
        name = value.get("name", self.default)
        if not isinstance(name, str) or name.lower() not in self.table:
            return [f"{path}.name must be one of {', '.join(self.table)}, got {name!r}"]
        keys = ("name", *self.table[name.lower()])
        out = [f"unknown key {path}.{k}; valid for {name}: {', '.join(keys)}" for k in value if k not in keys]
        return out + [m for k in keys[1:] if k in value for m in self.values[k].check(value[k], f"{path}.{k}")]


@dataclass(frozen=True)
class Validated(Spec):
    """``spec``, then ``build(value)`` (a library constructor that checks values): its ValueError is a problem."""

    spec: Spec
    build: Callable[[Any], Any]

    def check(self, value: Any, path: str) -> list[str]:
        if value is None or (out := self.spec.check(value, path)):
            return [] if value is None else out
        try:
            self.build(value)
        except (ValueError, TypeError) as err:
            return [f"{path}: {err}"]
        return []


def dataclass_section(cls: type, types: Mapping[str, Spec], extra: Mapping[str, Spec] | None = None) -> Section:
    """A Section whose keys are the fields of ``cls`` (the code's own list), typed by ``types`` where given."""
    keys = {f.name: types.get(f.name, AnyValue()) for f in fields(cls)}
    return Section({**keys, **(extra or {})})


class Override(Spec):
    """An override of another section (a per-iteration ``train:``): only a mapping here; the caller checks its keys
    merged over the section it overrides."""

    def check(self, value: Any, path: str) -> list[str]:
        if value is None or isinstance(value, Mapping):
            return []
        return [f"{path} must be a mapping of the keys it overrides, got {value!r}"]


OVERRIDE = Override()
