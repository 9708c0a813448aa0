"""Strict training params: the declared sections (train/sections.py) checked, each problem named by its dotted path."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from birdclef.io import merged
from birdclef.train.schema import Section
from birdclef.train.sections import ITERATION, LOSS, SCHEMA, SELFTRAIN, TRAIN

TOP_LEVEL = ("tracking", "mels", "models", "acquire", "clean", "features", "iterations", "pretrain", "train",
             "selftrain", "pseudo", "teacher", "distill", "ensemble", "export", "infer")  # fmt: skip
"""Every top-level key of params.yaml (a misspelt section, e.g. from `dvc exp run -S +trian.x=1`, is refused);
a new section goes here too (tests/test_train_params.py checks the committed params.yaml)."""

TRAIN_STAGE = ("iterations", "train", "selftrain", "models", "mels")  # what dvc.yaml declares for train@k
PSEUDO_STAGE = ("pseudo",)
PRETRAIN_STAGE = ("pretrain", "train", "models", "mels")
DISTILL_STAGE = ("distill", "train", "models", "mels")
MEMBER = ("train", "selftrain", "models", "mels")  # what train_member reads


# ---------------------------------------------------------------- checks


def _merged(base: Any, override: Any) -> dict[str, Any]:
    """``io.merged`` of two sections; one that is not a mapping counts as empty (its check reports it)."""

    def _dict(value: Any) -> Mapping[str, Any]:
        return value if isinstance(value, Mapping) else {}

    return merged(_dict(base), _dict(override))


def effective(params: Mapping[str, Any], iteration: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The sections an iteration trains with: its overrides merged over the params sections.

    ``train`` (iteration ``train`` over params ``train``, then iteration ``loss`` over its ``loss``, as
    ``member.iteration_config`` does) and ``selftrain``.
    """
    train = _merged(params.get("train"), iteration.get("train"))
    if iteration.get("loss") is not None:
        train["loss"] = _merged(train.get("loss"), iteration["loss"])
    return {
        "train": train,
        "selftrain": _merged(params.get("selftrain"), iteration.get("selftrain")),
    }


def _distill_mode(selftrain: Mapping[str, Any]) -> str:
    mode = (selftrain.get("distill") or {}).get("mode", "off")
    return "off" if mode is False else str(mode)  # YAML reads a bare `off` as False


def teacher_uses(params: Mapping[str, Any], iteration: Mapping[str, Any]) -> list[str]:
    """The settings of a student iteration that need its teacher's checkpoint (empty: it can do without).

    ``selftrain.init: teacher`` (start from the teacher's weights) and a ``selftrain.distill.mode`` other than off
    (the teacher labels every batch). An iteration without a teacher needs none.
    """
    if iteration.get("teacher") is None:
        return []
    st = effective(params, iteration)["selftrain"]
    uses = ["selftrain.init: teacher"] if st.get("init", "teacher") == "teacher" else []
    if (mode := _distill_mode(st)) != "off":
        uses.append(f"selftrain.distill.mode: {mode}")
    return uses


def teacher_checkpoint(path: Path | None, params: Mapping[str, Any], iteration: Mapping[str, Any]) -> Path | None:
    """The teacher checkpoint a student member trains with, or None when it has none and needs none.

    Raises:
        FileNotFoundError: the checkpoint is missing while the iteration's settings need it (see ``teacher_uses``);
            a missing teacher never silently turns into a from-scratch student without distillation.
    """
    if path is None or path.is_file():
        return path
    if uses := teacher_uses(params, iteration):
        raise FileNotFoundError(
            f"iteration {iteration.get('k')}: teacher checkpoint {path} does not exist, and {' and '.join(uses)} "
            "need it (train the teacher iteration with this member, or set selftrain.init: scratch and "
            "selftrain.distill.mode: off for this iteration)"
        )
    return None


def _combinations(params: Mapping[str, Any], iteration: Mapping[str, Any], where: str) -> list[str]:
    """Setting combinations of one iteration that cannot apply (issue 15 item 4), from params alone."""
    eff = effective(params, iteration)
    student = iteration.get("teacher") is not None
    teacher_init = student and eff["selftrain"].get("init", "teacher") == "teacher"
    out = []
    if teacher_init and iteration.get("init_from"):
        out.append(f"{where}: init_from {iteration['init_from']!r} and selftrain.init: teacher both give the student "
                   "its starting weights; set selftrain.init: scratch to start from init_from, or drop init_from")
    if iteration.get("loss") is not None and "loss" in (iteration.get("train") or {}):
        out.append(f"{where}: loss and train.loss both override the loss; give one of them")
    if eff["train"].get("freeze_backbone") and not iteration.get("init_from") and not teacher_init:
        out.append(f"{where}: train.freeze_backbone is true but the iteration starts from no checkpoint (no "
                   "init_from, and no teacher with selftrain.init: teacher): there is no trained backbone to freeze")
    return out


def check_iteration(params: Mapping[str, Any], iteration: Mapping[str, Any], where: str = "iteration") -> list[str]:
    """Problems of one iteration's overrides, each checked merged over its base section.

    A problem the base section has already is left to the check of that section (reported once).
    """
    eff = effective(params, iteration)
    bases = {"train": params.get("train"), "selftrain": params.get("selftrain"),
             "loss": _merged(params.get("train"), iteration.get("train")).get("loss")}  # fmt: skip
    full = {"train": eff["train"], "selftrain": eff["selftrain"], "loss": eff["train"].get("loss")}
    schemas: dict[str, Section] = {"train": TRAIN, "selftrain": SELFTRAIN, "loss": LOSS}
    out: list[str] = []
    for key, schema in schemas.items():
        if not isinstance(iteration.get(key), Mapping):
            continue  # absent, or not a mapping (the iteration entry's own check says so)
        known = set(schema.check(bases[key], f"{where}.{key}"))
        out += [m for m in schema.check(full[key], f"{where}.{key}") if m not in known]
    return out


def problems(params: Mapping[str, Any], sections: Sequence[str] = tuple(SCHEMA)) -> list[str]:
    """Every problem ``check_params`` would raise for, one message each (empty: the params are good)."""
    unknown = [s for s in sections if s not in SCHEMA]
    if unknown:
        raise ValueError(f"no params schema for section(s) {unknown}; known: {', '.join(SCHEMA)}")
    out = [f"unknown key {k}; valid: {', '.join(TOP_LEVEL)}" for k in params if k not in TOP_LEVEL]
    for section in sections:
        if section in params:
            out += SCHEMA[section].check(params[section], section)
    models = params.get("models") if isinstance(params.get("models"), Mapping) else None
    if "iterations" in sections and isinstance(params.get("iterations"), list):
        seen: list[Any] = []
        for i, it in enumerate(params["iterations"]):
            if not isinstance(it, Mapping):
                continue
            where = f"iterations.{i}"
            out += check_iteration(params, it, where) + _combinations(params, it, where)
            if models is not None:
                out += [f"{where}.members: {m!r} is not a key of models" for m in _names(it.get("members"))
                        if isinstance(m, str) and m not in models]  # fmt: skip
            if it.get("teacher") is not None and it["teacher"] not in seen:
                out.append(f"{where}.teacher: {it['teacher']!r} is not the k of an earlier iteration (have {seen})")
            if it.get("k") in seen:
                out.append(f"{where}.k: {it['k']!r} appears twice")
            seen.append(it.get("k"))
    for name in ("pretrain", "distill"):  # a `train` override of its own, checked merged like an iteration's
        if name in sections and isinstance(params.get(name), Mapping):
            out += _trains_own_members(params, name, models)
    if "models" in sections and models is not None and isinstance(params.get("mels"), Mapping):
        out += [f"models.{name}.mel: {cfg['mel']!r} is not a key of mels" for name, cfg in models.items()
                if isinstance(cfg, Mapping) and "mel" in cfg and cfg["mel"] not in params["mels"]]  # fmt: skip
    return list(dict.fromkeys(out))


def _names(value: Any) -> list[Any]:
    """The entries of a names list; another value is none (its own check reports it)."""
    return list(value) if isinstance(value, list | tuple) else []


def _trains_own_members(params: Mapping[str, Any], name: str, models: Mapping[str, Any] | None) -> list[str]:
    """Problems of pretrain / distill: their ``train`` override merged over ``train``, their members' names."""
    section = params[name]
    out = check_iteration(params, {"train": section.get("train")}, name)
    if _merged(params.get("train"), section.get("train")).get("freeze_backbone"):
        out.append(f"{name}: train.freeze_backbone is true but {name} trains the backbone from no checkpoint")
    if models is not None:
        out += [f"{name}.members: {m!r} is not a key of models" for m in _names(section.get("members"))
                if isinstance(m, str) and m not in models]  # fmt: skip
    return out


def _raise(found: list[str]) -> None:
    if found:
        raise ValueError(f"bad params ({len(found)} problem{'s' * (len(found) > 1)}):\n  " + "\n  ".join(found))


def check_params(params: Mapping[str, Any], sections: Sequence[str] = tuple(SCHEMA)) -> None:
    """Check the training sections of a params dict; absent sections are skipped (their defaults apply).

    Every unknown key is named by its dotted path with the valid keys (``unknown key selftrain.distil; valid:
    ...``), every bad value with what it must be; iterations' overrides are checked merged over their base
    sections, and setting combinations that cannot apply (``_combinations``) are refused. Keys set through
    ``dvc exp run -S`` land in params.yaml, so checking the loaded file covers them.

    Args:
        params: the whole params dict (``load_params``).
        sections: top-level keys to check (keys of ``SCHEMA``); a stage passes the ones it declares in dvc.yaml.

    Raises:
        ValueError: listing every problem found, one per line.
    """
    _raise(problems(params, sections))


def check_member(params: Mapping[str, Any], iteration: Mapping[str, Any]) -> None:
    """Check what ``train_member`` reads: the train, selftrain, models and mels sections and this iteration's
    overrides merged over them (the checkpoint-dependent rules are ``member._initialise``'s).

    Raises:
        ValueError: listing every problem found.
    """
    entry = Section(ITERATION.keys)  # k and members may be left out by library callers
    _raise(problems(params, MEMBER) + entry.check(iteration, "iteration") + check_iteration(params, iteration))
