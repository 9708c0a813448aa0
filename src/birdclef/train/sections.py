"""The training params sections, declared: train, selftrain, pseudo, iterations, models, mels, pretrain, distill."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from birdclef.dist import DEVICES
from birdclef.features.frontend import MelConfig
from birdclef.models.backbone import ModelConfig
from birdclef.train.augment import WAVE_DEFAULTS
from birdclef.train.augment_ops import LABEL_MODES
from birdclef.train.augment_spec import SPEC_DEFAULTS
from birdclef.train.datasets import CROP_POLICIES
from birdclef.train.distill import MODES as DISTILL_MODES
from birdclef.train.embed_distill import DistillParams
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
from birdclef.train.teacher_data import NEGATIVES as D4_NEGATIVES


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
        "mutual": Section({"enabled": FLAG, "weight": NONNEG}),  # P10 (rank 8), train/mutual.py
        "teacher_segments": Section({"enabled": FLAG, "threshold": Num(0.0, 1.0, low_open=True, high_open=True),
                                     "weight": POSITIVE, "negatives": Choice(D4_NEGATIVES)}),  # D4 (rank 7)
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
        "drop_no_call": Section({"enabled": FLAG, "threshold": PROB}),  # D2 (rank 10), train/segment_filter.py
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
            Section({"k": integer(0), "tau": POSITIVE, "teacher_weight": PROB,
                     "teacher_blend": Choice(("linear", "percentile")), "transforms": TRANSFORMS},
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

DISTILL_TYPES: dict[str, Spec] = {
    "enabled": FLAG,
    "members": NAMES,
    "splits": NAMES,
    "holdout": RATE,
    "seed": integer(),
    "train": OVERRIDE,
}
DISTILL = Validated(dataclass_section(DistillParams, DISTILL_TYPES), DistillParams.from_dict)
"""The ``distill:`` section (T1): DistillParams' fields, typed, then its own checks (enabled needs members)."""

SCHEMA: dict[str, Spec] = {
    "models": Named(MODEL),
    "mels": Named(MEL),
    "iterations": Entries(ITERATION),
    "pretrain": dataclass_section(PretrainConfig, PRETRAIN_TYPES),
    "train": TRAIN,
    "selftrain": SELFTRAIN,
    "pseudo": PSEUDO,
    "distill": DISTILL,
}
"""The sections ``train.params`` checks, by top-level key."""
