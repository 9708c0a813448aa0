"""Registry of model heads by name, so params.yaml picks a head with a string (timm style)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

T = TypeVar("T", bound=type[nn.Module])

_HEADS: dict[str, type[nn.Module]] = {}


def register_head(name: str) -> Callable[[T], T]:
    """Class decorator registering a head under ``name``.

    A head class is built as ``cls(in_features, num_classes, n_mels, in_chans, cfg)`` and must provide
    ``prepare(mel)``, ``forward(features) -> {"clip", "frame"}`` and ``reset_classifier(num_classes)``
    (see ``birdclef.models.heads.Head``).

    Raises:
        ValueError: when ``name`` is already taken (two heads must never shadow each other silently).
    """

    def wrap(cls: T) -> T:
        if name in _HEADS:
            raise ValueError(f"head {name!r} is already registered by {_HEADS[name].__name__}")
        _HEADS[name] = cls
        return cls

    return wrap


def get_head(name: str) -> type[nn.Module]:
    """Return the head class registered under ``name``; the error lists the known heads."""
    try:
        return _HEADS[name]
    except KeyError:
        raise KeyError(f"unknown model head {name!r}; registered heads: {list_heads()}") from None


def list_heads() -> list[str]:
    """Names of all registered heads, sorted."""
    return sorted(_HEADS)
