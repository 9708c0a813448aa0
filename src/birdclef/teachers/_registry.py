"""Registry of teacher adapters by name, so params.yaml picks a foundation model with a string (timm style)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from birdclef.teachers.base import Teacher

T = TypeVar("T", bound="type[Teacher]")

_TEACHERS: dict[str, type[Teacher]] = {}


def register_teacher(name: str) -> Callable[[T], T]:
    """Class decorator registering a teacher adapter under ``name``.

    The class is built by ``cls.from_config(cfg, where)`` (see :class:`birdclef.teachers.base.Teacher`).

    Raises:
        ValueError: when ``name`` is already taken (two adapters must never shadow each other silently).
    """

    def wrap(cls: T) -> T:
        if name in _TEACHERS:
            raise ValueError(f"teacher {name!r} is already registered by {_TEACHERS[name].__name__}")
        cls.name = name
        _TEACHERS[name] = cls
        return cls

    return wrap


def get_teacher_class(name: str) -> type[Teacher]:
    """The adapter class registered under ``name``; the error lists the known ones."""
    try:
        return _TEACHERS[name]
    except KeyError:
        raise KeyError(f"unknown teacher {name!r}; registered teachers: {list_teachers()}") from None


def list_teachers() -> list[str]:
    """Names of all registered teacher adapters, sorted."""
    return sorted(_TEACHERS)


def create_teacher(name: str, cfg: Mapping[str, Any] | None = None, where: str = "teacher") -> Teacher:
    """Build the teacher ``name`` from its options (model file, label file, threads, declared rates and names).

    Args:
        name: a registered adapter (``birdnet``, ``perch_v2``, ``onnx``).
        cfg: adapter options; keys an adapter does not know, or that cannot apply to it, are refused.
        where: the params prefix named in errors (``teacher`` -> ``teacher.model_path``).

    Raises:
        KeyError: unknown ``name``. ValueError: bad options. FileNotFoundError: a model or label file that is
            not there, naming the param, the environment variable and where to get the file.
    """
    return get_teacher_class(name).from_config(dict(cfg or {}), where)
