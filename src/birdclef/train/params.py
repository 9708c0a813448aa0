"""Strict training params: one declarative schema, each unknown key and bad value named by its dotted path."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from birdclef.dist import DEVICES
from birdclef.features.frontend import MelConfig
from birdclef.io import merged
from birdclef.models.backbone import ModelConfig
from birdclef.train.augment import WAVE_DEFAULTS
from birdclef.train.augment_ops import LABEL_MODES
from birdclef.train.augment_spec import SPEC_DEFAULTS
from birdclef.train.datasets import CROP_POLICIES
from birdclef.train.distill import MODES as DISTILL_MODES
from birdclef.train.fit import FitConfig
from birdclef.train.losses import LOSS_NAMES
from birdclef.train.optim import OPTIMIZER_KEYS, SCHEDULER_KEYS
from birdclef.train.pretrain import PretrainConfig
from birdclef.train.sampling import BALANCE_MODES
from birdclef.train.schema import (
    FLAG,
    NAMES,
    NONNEG,
    OVERRIDE,
    POSITIVE,
    PROB,
    RATE,
    ByName,
    Choice,
    Either,
    Entries,
    Named,
    Num,
    Section,
    Spec,
    Text,
    Validated,
    dataclass_section,
    integer,
)
from birdclef.train.selftrain import POLICIES


def _option(key: str, default: Any) -> Spec:
    """The spec of an augmentation option, from the type of its default."""
    if key == "label":
        return Choice(LABEL_MODES)
    if isinstance(default, bool):
        return FLAG
    return integer() if isinstance(default, int) else Num()


def _techniques(defaults: Mapping[str, Mapping[str, Any]]) -> Section:
    """An augmentation family: technique -> {enabled, p, options of its defaults}."""
    return Section(
        {name: Section({**{k: _option(k, v) for k, v in opts.items()}, "enabled": FLAG, "p": PROB})
         for name, opts in defaults.items()}
    )  # fmt: skip


OPTIMIZER_VALUES = {"lr": POSITIVE, "weight_decay": NONNEG}
SCHEDULER_VALUES = {"warmup_epochs": NONNEG, "restart_epochs": NONNEG, "min_lr": NONNEG}

LOOP_TYPES: dict[str, Spec] = {
    "epochs": integer(1),
    "batch_size": integer(1),
    "samples_per_epoch": integer(0),
    "balance": Choice(BALANCE_MODES),
    "optimizer": ByName(OPTIMIZER_KEYS, "adamw", OPTIMIZER_VALUES),
    "scheduler": ByName(SCHEDULER_KEYS, "cosine", SCHEDULER_VALUES),
    "ema": Section({"enabled": FLAG, "decay": Num(0.0, 1.0, high_open=True)}),
    "soup": Section({"enabled": FLAG, "last_k": integer(1)}),
    "grad_accum": integer(1),
    "amp": FLAG,
    "seed": integer(),
    "num_workers": integer(0),
    "checkpoint_every": integer(0),
    "progress": FLAG,
}
"""Types of the ``train.loop`` keys; the keys themselves are FitConfig's fields (fit.py), whose ``from_dict``
checks the values of any field typed nowhere here."""

LOSS = Section(
    {
        "name": Choice(LOSS_NAMES),
        "focal": Section({"alpha": Num(high=1.0), "gamma": NONNEG}),
        "sed_dual": FLAG,
        "label_smoothing": RATE,
        "neg_penalty": Section({"weight": NONNEG, "margin": Num()}),
        "soft_auc_weight": NONNEG,
    }
)

TRAIN = Section(
    {
        "nproc": integer(1),
        "threads": integer(1),
        "device": Choice(DEVICES),
        "crop_s": POSITIVE,
        "crop_policy": Choice(CROP_POLICIES),
        "secondary_value": Either((PROB, Choice(("mask",)))),
        "val_fold": integer(-1),
        "freeze_backbone": FLAG,
        "loop": Validated(dataclass_section(FitConfig, LOOP_TYPES), FitConfig.from_dict),
        "augment": Section({"wave": _techniques(WAVE_DEFAULTS), "spec": _techniques(SPEC_DEFAULTS)}),
        "loss": LOSS,
        "teacher_segments": Section({"enabled": FLAG, "threshold": Num(0.0, 1.0, low_open=True, high_open=True),
                                     "weight": POSITIVE}),  # D4 (rank 7), train/teacher_data.py
    }
)

INIT_CHOICES = ("teacher", "scratch")
SELFTRAIN = Section(
    {
        "policy": Choice(POLICIES),
        "mix_share": PROB,
        "mix_weight": PROB,
        "label_mode": Choice(LABEL_MODES),
        "replace_p": PROB,
        "replace_min_prob": PROB,
        "drop_path_rate": Num(0.0, 1.0, high_open=True, null=True),
        "label_sum_cap": Num(0.0, low_open=True, null=True),
        "init": Choice(INIT_CHOICES),
        "distill": Section(
            {
                "mode": Choice(DISTILL_MODES, aliases=((False, "off"),)),
                "blend": PROB,
                "threshold": PROB,
                "kl_weight": NONNEG,
            }
        ),
    }
)

TRANSFORMS = Section(
    {
        "file_blend": PROB,
        "file_blend_stride_s": Num(0.0, null=True),
        "min_norm": FLAG,
        "low_threshold": PROB,
        "high_threshold": PROB,
        "hard_threshold": PROB,
        "entropy": Section({"enabled": FLAG, "max_entropy": PROB, "weight": PROB}),
        "drop_bottom": RATE,
        "confident_split": Section({"enabled": FLAG, "low": PROB, "high": PROB}),
    }
)

PSEUDO = Section(
    {
        "rounds": Entries(
            Section({"k": integer(0), "tau": POSITIVE, "teacher_weight": PROB, "transforms": TRANSFORMS},
                    required=("k", "tau"))
        ),
        "nproc": integer(1),
        "threads": integer(1, null=True),
        "block": integer(1),
        "chunk_s": POSITIVE,
        "stride_s": POSITIVE,
        "pool": Choice(("mean", "max")),
        "source": Choice(("frame", "clip")),
        "transforms": TRANSFORMS,
    }
)

ITERATION = Section(
    {
        "k": integer(),
        "members": NAMES,
        "teacher": integer(null=True),
        "labels": Text(),
        "init_from": Text(null=True),
        "train": OVERRIDE,
        "selftrain": OVERRIDE,
        "loss": OVERRIDE,
    },
    required=("k", "members"),
)
"""An ``iterations`` entry; its overrides (train, selftrain, loss) are checked merged over their sections. Pseudo-label
transforms are overridden per round instead (``pseudo.rounds[].transforms``)."""

MODEL_TYPES: dict[str, Spec] = {
    "head": Text(),
    "backbone": Text(),
    "pretrained": Either((FLAG, Text())),
    "freq_pool": Choice(("mean", "gem")),
    "drop_rate": RATE,
    "drop_path_rate": RATE,
    "in_chans": integer(1, null=True),
    "mel": Text(),
}
MODEL = Validated(
    dataclass_section(ModelConfig, MODEL_TYPES, {"name": Text(), "classes": NAMES}),
    lambda cfg: ModelConfig.from_dict({k: v for k, v in cfg.items() if k != "classes"}),
)

MEL_TYPES: dict[str, Spec] = {
    "n_fft": integer(1),
    "hop_length": integer(1),
    "n_mels": integer(1),
    "fmin": NONNEG,
    "fmax": POSITIVE,
    "top_db": POSITIVE,
    "norm": Choice(("ref_max", "minmax", "db")),
    "deltas": FLAG,
    "absmax": FLAG,
}
MEL = Validated(dataclass_section(MelConfig, MEL_TYPES, {"name": Text()}), MelConfig.from_dict)

PRETRAIN_TYPES: dict[str, Spec] = {
    "sources": NAMES,
    "members": NAMES,
    "exclude_competition_species": FLAG,
    "min_files": integer(1),
    "trim_s": NONNEG,
    "n_folds": integer(2),
    "seed": integer(),
    "train": OVERRIDE,
}

SCHEMA: dict[str, Spec] = {
    "models": Named(MODEL),
    "mels": Named(MEL),
    "iterations": Entries(ITERATION),
    "pretrain": dataclass_section(PretrainConfig, PRETRAIN_TYPES),
    "train": TRAIN,
    "selftrain": SELFTRAIN,
    "pseudo": PSEUDO,
}
"""The sections this module checks, by top-level key."""

TOP_LEVEL = ("tracking", "mels", "models", "acquire", "clean", "features", "iterations", "pretrain", "train",
             "selftrain", "pseudo", "teacher", "distill", "ensemble", "export", "infer")  # fmt: skip
"""Every top-level key of params.yaml (a misspelt section, e.g. from `dvc exp run -S +trian.x=1`, is refused);
a new section goes here too (tests/test_train_params.py checks the committed params.yaml)."""

TRAIN_STAGE = ("iterations", "train", "selftrain", "models", "mels")  # what dvc.yaml declares for train@k
PSEUDO_STAGE = ("pseudo",)
PRETRAIN_STAGE = ("pretrain", "train", "models", "mels")
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
                out += [f"{where}.members: {m!r} is not a key of models" for m in it.get("members") or []
                        if isinstance(m, str) and m not in models]  # fmt: skip
            if it.get("teacher") is not None and it["teacher"] not in seen:
                out.append(f"{where}.teacher: {it['teacher']!r} is not the k of an earlier iteration (have {seen})")
            if it.get("k") in seen:
                out.append(f"{where}.k: {it['k']!r} appears twice")
            seen.append(it.get("k"))
    if "pretrain" in sections and isinstance(params.get("pretrain"), Mapping):
        pre = params["pretrain"]
        out += check_iteration(params, {"train": pre.get("train")}, "pretrain")
        if _merged(params.get("train"), pre.get("train")).get("freeze_backbone"):
            out.append("pretrain: train.freeze_backbone is true but pre-training starts from no checkpoint")
        if models is not None:
            out += [f"pretrain.members: {m!r} is not a key of models" for m in pre.get("members") or []
                    if isinstance(m, str) and m not in models]  # fmt: skip
    if "models" in sections and models is not None and isinstance(params.get("mels"), Mapping):
        out += [f"models.{name}.mel: {cfg['mel']!r} is not a key of mels" for name, cfg in models.items()
                if isinstance(cfg, Mapping) and "mel" in cfg and cfg["mel"] not in params["mels"]]  # fmt: skip
    return list(dict.fromkeys(out))


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
