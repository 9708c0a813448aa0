"""Strict training params (train/params.py): a typo in any training section is refused naming its dotted path, bad
values are refused, and the setting combinations that cannot apply are errors (issue 15, items 4 and 5)."""

from __future__ import annotations

import copy
import shutil
from dataclasses import fields
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from birdclef.io import load_params
from birdclef.train import params as tp
from birdclef.train import sections as ts
from birdclef.train.fit import FitConfig
from birdclef.train.losses import LOSS_KEYS, LOSS_NAMES, LOSS_OPTIONS, build_loss
from birdclef.train.member import MemberInputs, train_member
from birdclef.train.optim import OPTIMIZER_KEYS, SCHEDULER_KEYS, build_optimizer, build_scheduler

from train_fixtures import toy_segments

REPO = Path(__file__).resolve().parents[1]
PARAMS = load_params(REPO / "params.yaml")


def problems_of(**changes) -> list[str]:
    """Problems of the committed params with dotted ``changes`` applied (``a__b`` = ``a.b``)."""
    p = copy.deepcopy(PARAMS)
    for dotted, value in changes.items():
        node = p
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        node[int(last) if isinstance(node, list) else last] = value
    return tp.problems(p)


# ---------------------------------------------------------------- the committed params pass


def _dvc_set(tmp_path: Path, overrides: list[str]) -> dict:
    """params.yaml after `dvc exp run -S <overrides>`: DVC's own override code on a copy, then the stages' loader."""
    from dvc.utils.hydra import apply_overrides

    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    apply_overrides(tmp_path / "params.yaml", overrides)
    return load_params(tmp_path / "params.yaml")


def test_committed_params_pass():
    assert tp.problems(PARAMS) == []
    tp.check_params(PARAMS)


@pytest.mark.parametrize("preset", sorted((REPO / "presets").glob("*.yaml")), ids=lambda p: p.name)
def test_every_preset_applied_as_dvc_does_passes(tmp_path, preset):
    from birdclef.track.pipeline import preset_args

    args = preset_args(preset, REPO / "params.yaml")
    assert tp.problems(_dvc_set(tmp_path, args[1::2])) == []


def test_every_ablation_variant_passes(tmp_path):
    from birdclef.track.overrides import set_args

    for spec in sorted((REPO / "ablations").glob("*.yaml")):
        for name, entry in yaml.safe_load(spec.read_text())["variants"].items():
            # a seeded spec's variant is {set: overrides, published: ..., note: ...}; an older one the overrides
            overrides = entry["set"] if isinstance(entry, dict) and "set" in entry else entry
            args = set_args(overrides or {}, PARAMS)
            assert tp.problems(_dvc_set(tmp_path, args[1::2])) == [], f"{spec.name}: {name}"


def test_a_typo_set_through_dvc_exp_run_is_refused(tmp_path):
    """`dvc exp run -S +selftrain.distil.mode=blend` writes the typo into params.yaml (DVC adds the new key), and
    the stages check the loaded file, so the typo stops the run instead of leaving distillation off."""
    params = _dvc_set(tmp_path, ["+selftrain.distil.mode=blend"])
    expected = r"unknown key selftrain\.distil; valid: distill, drop_no_call, drop_path_rate"
    with pytest.raises(ValueError, match=expected):
        tp.check_params(params, tp.TRAIN_STAGE)


def test_values_as_dvc_exp_run_writes_them_pass(tmp_path):
    """DVC writes 1e-06 (PyYAML reads it as a string) and a bare `off` (PyYAML reads False): both mean what they
    say, as the training code reads them (float(), and off for False)."""
    params = _dvc_set(tmp_path, ["train.loop.scheduler.min_lr=1e-6", "selftrain.distill.mode=off"])
    assert params["train"]["loop"]["scheduler"]["min_lr"] == "1e-06"
    assert params["selftrain"]["distill"]["mode"] is False
    assert tp.problems(params) == []


# ---------------------------------------------------------------- a typo in each section is refused

TYPOS = [
    ("trian", {}, "unknown key trian; valid: tracking, mels,"),
    ("seed", 0, "unknown key seed; valid: tracking, mels,"),  # read by nothing: each section has its own seed
    ("train__crop_sec", 5, "unknown key train.crop_sec; valid: augment, crop_policy, crop_s"),
    ("train__loop__epochz", 3, "unknown key train.loop.epochz; valid: "),
    ("train__loop__optimizer", {"name": "adamw", "lr": 1e-3, "wd": 0.1}, "unknown key train.loop.optimizer.wd; "
     "valid for adamw: name, lr, weight_decay"),
    ("train__loop__scheduler", {"name": "cosine", "warmup_epoch": 1}, "unknown key train.loop.scheduler.warmup_epoch"),
    ("train__loop__scheduler", {"name": "constant", "min_lr": 0.0}, "unknown key train.loop.scheduler.min_lr; valid "
     "for constant: name, warmup_epochs"),
    ("train__loop__ema", {"enabled": True, "decy": 0.9}, "unknown key train.loop.ema.decy; valid: decay, enabled"),
    ("train__loop__soup", {"enabled": True, "last": 2}, "unknown key train.loop.soup.last; valid: enabled, last_k"),
    ("train__loss__sed_duel", True, "unknown key train.loss.sed_duel; valid: focal, label_smoothing"),
    ("train__loss__focal", {"gama": 3.0}, "unknown key train.loss.focal.gama; valid: alpha, gamma"),
    ("train__loss__neg_penalty", {"weigth": 1.0}, "unknown key train.loss.neg_penalty.weigth; valid: margin, weight"),
    ("train__augment__specc", {}, "unknown key train.augment.specc; valid: spec, wave"),
    ("train__augment__wave__mixupp", {}, "unknown key train.augment.wave.mixupp; valid: background,"),
    ("train__augment__wave__mixup__alfa", 1.0, "unknown key train.augment.wave.mixup.alfa; valid: alpha, enabled"),
    ("train__augment__spec__time_mask__width", 3, "unknown key train.augment.spec.time_mask.width; valid: count"),
    ("selftrain__distil", {"mode": "blend"},
     "unknown key selftrain.distil; valid: distill, drop_no_call, drop_path_rate"),
    ("selftrain__mix_shar", 0.5, "unknown key selftrain.mix_shar; valid: "),
    ("selftrain__distill__treshold", 0.3, "unknown key selftrain.distill.treshold; valid: blend, kl_weight, mode"),
    ("pseudo__chunk", 5, "unknown key pseudo.chunk; valid: block, chunk_s"),
    ("pseudo__rounds__1__taux", 0.5, "unknown key pseudo.rounds.1.taux; valid: k, tau"),
    ("pseudo__transforms__file_blnd", 0.3, "unknown key pseudo.transforms.file_blnd; valid: confident_split,"),
    ("pseudo__transforms__entropy__max_entropi", 0.1, "unknown key pseudo.transforms.entropy.max_entropi; valid: "
     "enabled, max_entropy, weight"),
    ("iterations__1__teachr", 0, "unknown key iterations.1.teachr; valid: init_from, k, labels, loss, members, "
     "selftrain, teacher, train"),
    ("iterations__1__train", {"loop": {"epochz": 3}}, "unknown key iterations.1.train.loop.epochz; valid: "),
    ("iterations__1__selftrain", {"mix_shar": 0.5}, "unknown key iterations.1.selftrain.mix_shar; valid: "),
    ("iterations__1__pseudo_transforms", {"min_norm": True}, "unknown key iterations.1.pseudo_transforms; valid: "),
    ("pseudo__rounds__1__transforms", {"min_nrm": True}, "unknown key pseudo.rounds.1.transforms.min_nrm; valid: "),
    ("iterations__1__loss", {"nam": "focal"}, "unknown key iterations.1.loss.nam; valid: focal,"),
    ("models__sed_mnv3__dropout", 0.1, "unknown key models.sed_mnv3.dropout; valid: backbone, classes"),
    ("mels__mel128__nmels", 64, "unknown key mels.mel128.nmels; valid: absmax, deltas"),
    ("pretrain__source", ["x"], "unknown key pretrain.source; valid: exclude_competition_species"),
    ("pretrain__train", {"loop": {"epoch": 3}}, "unknown key pretrain.train.loop.epoch; valid: "),
    ("train__teacher_segments__treshold", 0.2, "unknown key train.teacher_segments.treshold; valid: enabled, "
     "negatives, threshold, weight"),
    ("iterations__1__train", {"teacher_segments": {"enable": True}}, "unknown key "
     "iterations.1.train.teacher_segments.enable; valid: enabled, negatives, threshold, weight"),
]  # fmt: skip


@pytest.mark.parametrize(("where", "value", "message"), TYPOS, ids=[t[0].replace("__", ".") for t in TYPOS])
def test_a_typo_in_each_section_is_refused_naming_the_key(where, value, message):
    found = problems_of(**{where: value})
    assert len(found) == 1 and found[0].startswith(message), found


def test_every_problem_is_listed_at_once():
    p = copy.deepcopy(PARAMS)
    p["selftrain"]["distil"] = {}
    p["pseudo"]["transforms"]["min_nrm"] = True
    p["train"]["loop"]["batch_size"] = 0
    with pytest.raises(ValueError) as err:
        tp.check_params(p)
    text = str(err.value)
    assert text.startswith("bad params (3 problems):")
    for part in ("selftrain.distil", "pseudo.transforms.min_nrm", "train.loop.batch_size must be an integer >= 1"):
        assert part in text


def test_an_iteration_may_switch_the_schedule_by_name():
    """`scheduler: {name: constant}` over the cosine base is the constant schedule (io.merged replaces a dict of
    another name), not constant with cosine's restart_epochs and min_lr, which the check refused."""
    override = {"loop": {"scheduler": {"name": "constant"}, "optimizer": {"name": "radam"}}}
    assert problems_of(iterations__1__train=override) == []
    loop = tp.effective(PARAMS, {"train": override})["train"]["loop"]
    assert loop["scheduler"] == {"name": "constant"} and loop["optimizer"] == {"name": "radam"}
    assert problems_of(iterations__1__train={"loop": {"scheduler": {"name": "constant", "min_lr": 0.0}}}) == [
        "unknown key iterations.1.train.loop.scheduler.min_lr; valid for constant: name, warmup_epochs"]


def test_an_override_problem_the_base_has_too_is_reported_once():
    found = problems_of(train__loop__epochz=3, iterations__1__train={"loop": {"epochs": 2}})
    assert found == [m for m in found if "epochz" in m] and len(found) == 1


BAD_VALUES = [
    ("train__crop_policy", "loudest", "train.crop_policy must be one of random, first, rms, got 'loudest'"),
    ("train__secondary_value", "masked", "train.secondary_value must be a number in [0, 1] or one of mask"),
    ("train__loop__balance", "sqrtt", "train.loop.balance must be one of none, sqrt, equal"),
    ("train__loop__epochs", 2.5, "train.loop.epochs must be an integer >= 1, got 2.5"),
    ("train__loop__ema", {"enabled": "yes"}, "train.loop.ema.enabled must be true or false, got 'yes'"),
    ("train__loop__optimizer", {"name": "sgd"}, "train.loop.optimizer.name must be one of adamw, radam, got 'sgd'"),
    ("train__loop__optimizer", {"name": "adamw", "lr": "fast"}, "train.loop.optimizer.lr must be a number > 0"),
    ("train__loss__name", "bce_focall", "train.loss.name must be one of bce, focal, bce_focal, ce, soft_auc"),
    ("train__loss__label_smoothing", 1.0, "train.loss.label_smoothing must be a number in [0, 1)"),
    ("train__augment__wave__mixup__p", 1.5, "train.augment.wave.mixup.p must be a number in [0, 1], got 1.5"),
    ("train__augment__wave__mixup__label", "maxx", "train.augment.wave.mixup.label must be one of weighted, max"),
    ("selftrain__policy", "mixupp", "selftrain.policy must be one of mixup, replace, concat, got 'mixupp'"),
    ("selftrain__init", "teachers", "selftrain.init must be one of teacher, scratch, got 'teachers'"),
    ("selftrain__distill__mode", "onlin", "selftrain.distill.mode must be one of off, blend, online"),
    ("pseudo__pool", "median", "pseudo.pool must be one of mean, max, got 'median'"),
    ("pseudo__rounds__0__tau", 0, "pseudo.rounds.0.tau must be a number > 0, got 0"),
    ("pseudo__rounds__0", {"k": 0}, "pseudo.rounds.0.tau is missing"),
    ("pseudo__transforms__drop_bottom", 1.0, "pseudo.transforms.drop_bottom must be a number in [0, 1)"),
    ("iterations__1__members", ["sed_mnv4"], "iterations.1.members: 'sed_mnv4' is not a key of models"),
    ("iterations__1__teacher", 5, "iterations.1.teacher: 5 is not the k of an earlier iteration"),
    ("iterations__1__train", {"loop": {"batch_size": -1}}, "iterations.1.train.loop.batch_size must be an integer"),
    ("models__sed_mnv3__freq_pool", "max", "models.sed_mnv3.freq_pool must be one of mean, gem, got 'max'"),
    ("models__sed_mnv3__mel", "mel80", "models.sed_mnv3.mel: 'mel80' is not a key of mels"),
    ("mels__mel128__norm", "peak", "mels.mel128.norm must be one of ref_max, minmax, db"),
    ("train__teacher_segments__threshold", 1.0, "train.teacher_segments.threshold must be a number in (0, 1), got 1"),
    ("train__teacher_segments__weight", 0, "train.teacher_segments.weight must be a number > 0, got 0"),
    ("iterations__1__train", {"teacher_segments": {"enabled": "yes"}}, "iterations.1.train.teacher_segments.enabled "
     "must be true or false"),
]  # fmt: skip


@pytest.mark.parametrize(("where", "value", "message"), BAD_VALUES, ids=[b[0].replace("__", ".") for b in BAD_VALUES])
def test_bad_values_are_refused_saying_what_they_must_be(where, value, message):
    found = problems_of(**{where: value})
    assert len(found) == 1 and found[0].startswith(message), found


def test_a_stage_checks_only_the_sections_it_declares():
    p = copy.deepcopy(PARAMS)
    p["train"]["loop"]["epochz"] = 3
    tp.check_params(p, tp.PSEUDO_STAGE)  # pseudo@k does not read train.*
    with pytest.raises(ValueError, match="train.loop.epochz"):
        tp.check_params(p, tp.TRAIN_STAGE)
    with pytest.raises(ValueError, match="no params schema"):
        tp.check_params(p, ["ensembel"])


def test_the_schema_lists_the_code_keys():
    """The schema's key lists are the library's own: a key the code reads is never refused, a typo always is."""
    loop = ts.TRAIN.keys["loop"].spec.keys
    assert set(loop) == {f.name for f in fields(FitConfig)} and set(ts.LOOP_TYPES) <= set(loop)
    assert set(ts.LOSS.keys) == set(LOSS_KEYS) and set(ts.LOSS.keys["name"].options) == set(LOSS_NAMES)
    assert {k: set(ts.LOSS.keys[k].keys) for k in LOSS_OPTIONS} == {k: set(v) for k, v in LOSS_OPTIONS.items()}
    for table, values in ((OPTIMIZER_KEYS, ts.OPTIMIZER_VALUES), (SCHEDULER_KEYS, ts.SCHEDULER_VALUES)):
        assert {k for keys in table.values() for k in keys} == set(values)
    for name in LOSS_NAMES:
        build_loss({"name": name})


# ---------------------------------------------------------------- optimiser and schedule dicts


def test_optimizer_and_scheduler_refuse_keys_their_name_does_not_take():
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match=r"optimizer radam: unknown key\(s\) \['betas'\]; valid: name, lr"):
        build_optimizer(params, {"name": "radam", "lr": 1e-3, "betas": [0.9, 0.99]})
    opt = build_optimizer(params, {"name": "adamw"})
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)  # the same default as fit's schedule base rate
    with pytest.raises(ValueError, match=r"scheduler cosine: unknown key\(s\) \['min_lrr'\]"):
        build_scheduler(opt, {"name": "cosine", "min_lrr": 0.0}, 10, 2, 1e-3)


def test_constant_schedule_honours_its_warmup():
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], {"name": "adamw", "lr": 1.0})
    sched = build_scheduler(opt, {"name": "constant", "warmup_epochs": 1}, 4, 3, 1.0)
    lrs = []
    for _ in range(8):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0])


def test_loss_sub_dicts_refuse_typos():
    with pytest.raises(ValueError, match=r"unknown loss focal key\(s\) \['gama'\]"):
        build_loss({"name": "focal", "focal": {"gama": 3.0}})
    with pytest.raises(ValueError, match=r"unknown loss neg_penalty key\(s\) \['wieght'\]"):
        build_loss({"neg_penalty": {"wieght": 1.0}})


# ---------------------------------------------------------------- settings that are errors (item 4)


def test_init_from_with_teacher_init_in_a_student_iteration_is_refused():
    found = problems_of(iterations__1__init_from="build/pretrain/{model}/model.pt")
    assert len(found) == 1 and "init_from" in found[0] and "selftrain.init: teacher" in found[0]
    assert found[0].startswith("iterations.1: ")
    fine = problems_of(iterations__1__init_from="build/pretrain/{model}/model.pt", selftrain__init="scratch")
    assert fine == []
    assert problems_of(iterations__0__init_from="build/pretrain/{model}/model.pt") == []  # no teacher: fine-tuning


def test_freeze_backbone_without_a_checkpoint_is_refused():
    found = problems_of(iterations__0__train={"freeze_backbone": True})
    assert len(found) == 1 and found[0].startswith("iterations.0: train.freeze_backbone is true but")
    assert problems_of(iterations__0__train={"freeze_backbone": True}, iterations__0__init_from="x/{model}.pt") == []
    assert problems_of(iterations__1__train={"freeze_backbone": True}) == []  # a student starts from its teacher
    scratch = problems_of(iterations__1__train={"freeze_backbone": True}, selftrain__init="scratch")
    assert len(scratch) == 1 and scratch[0].startswith("iterations.1: train.freeze_backbone")
    for name in ("pretrain", "distill"):
        assert problems_of(**{f"{name}__train": {"freeze_backbone": True}}) == [
            f"{name}: train.freeze_backbone is true but {name} trains the backbone from no checkpoint"
        ]


DISTILL_PROBLEMS = [
    ("distill__holdot", 0.1,
     "unknown key distill.holdot; valid: enabled, holdout, members, seed, splits, target, train"),
    ("distill__holdout", 1.0, "distill.holdout must be a number in [0, 1), got 1.0"),
    ("distill__members", "sed_mnv3s", "distill.members must be a list of distinct names, got 'sed_mnv3s'"),
    ("distill__members", ["sed_mnv4"], "distill.members: 'sed_mnv4' is not a key of models"),
    ("distill__enabled", "yes", "distill.enabled must be true or false, got 'yes'"),
    ("distill__train", {"loop": {"epochz": 3}}, "unknown key distill.train.loop.epochz; valid: "),
    ("distill__train", {"loop": {"scheduler": {"name": "constant", "min_lr": 0.0}}},
     "unknown key distill.train.loop.scheduler.min_lr; valid for constant: name, warmup_epochs"),
    ("distill__train", [], "distill.train must be a mapping of the keys it overrides, got []"),
]  # fmt: skip


@pytest.mark.parametrize(("where", "value", "message"), DISTILL_PROBLEMS, ids=[d[0] for d in DISTILL_PROBLEMS])
def test_the_distill_section_is_checked_with_its_train_override_merged(where, value, message):
    found = problems_of(**{where: value})
    assert len(found) == 1 and found[0].startswith(message), found


def test_distill_enabled_needs_members_and_the_stage_checks_its_sections():
    assert problems_of(distill__enabled=True, distill__members=[]) == ["distill: distill.enabled needs distill.members"]
    assert problems_of(distill__train={"loop": {"scheduler": {"name": "constant"}}}) == []  # replaced, not merged
    p = copy.deepcopy(PARAMS)
    p["distill"]["holdot"] = 0.1
    tp.check_params(p, tp.PRETRAIN_STAGE)  # pretrain does not read distill.*
    with pytest.raises(ValueError, match=r"unknown key distill\.holdot"):
        tp.check_params(p, tp.DISTILL_STAGE)


def test_per_iteration_selftrain_override_decides_the_combinations():
    it = {"init_from": "x/{model}.pt", "selftrain": {"init": "scratch"}}
    assert problems_of(iterations__1__init_from=it["init_from"], iterations__1__selftrain=it["selftrain"]) == []


def test_a_loss_given_twice_in_an_iteration_is_refused():
    found = problems_of(iterations__1__loss={"name": "focal"}, iterations__1__train={"loss": {"name": "bce"}})
    assert found == ["iterations.1: loss and train.loss both override the loss; give one of them"]
    assert problems_of(iterations__1__loss={"name": "focal", "focal": {"gamma": 1.0}}) == []


def test_a_missing_teacher_checkpoint_is_an_error_when_the_student_needs_it(tmp_path):
    missing = tmp_path / "it0" / "sed_mnv3s" / "model.pt"
    student = PARAMS["iterations"][1]
    with pytest.raises(FileNotFoundError, match=rf"{missing}.*selftrain\.init: teacher"):
        tp.teacher_checkpoint(missing, PARAMS, student)
    scratch = copy.deepcopy(PARAMS)
    scratch["selftrain"]["init"] = "scratch"
    assert tp.teacher_checkpoint(missing, scratch, student) is None  # nothing needs it: a from-scratch student
    scratch["selftrain"]["distill"]["mode"] = "online"
    with pytest.raises(FileNotFoundError, match=r"selftrain\.distill\.mode: online"):
        tp.teacher_checkpoint(missing, scratch, student)
    override = {**student, "selftrain": {"distill": {"mode": "blend"}}}
    with pytest.raises(FileNotFoundError, match=r"selftrain\.distill\.mode: blend"):
        tp.teacher_checkpoint(missing, scratch | {"selftrain": {"init": "scratch"}}, override)
    missing.parent.mkdir(parents=True)
    missing.write_bytes(b"")
    assert tp.teacher_checkpoint(missing, PARAMS, student) == missing
    assert tp.teacher_checkpoint(None, PARAMS, PARAMS["iterations"][0]) is None


MEL = {"n_fft": 512, "hop_length": 320, "n_mels": 32, "fmin": 40, "fmax": 15000}


def _member_params() -> dict:
    return {
        "models": {"tiny": {"head": "sed", "backbone": "test_efficientnet", "pretrained": False, "mel": "m"}},
        "mels": {"m": MEL},
        "train": {"crop_s": 1.0, "val_fold": 0, "loop": {"epochs": 1, "batch_size": 4, "progress": False},
                  "augment": {}, "loss": {"name": "bce"}},
        "selftrain": {},
    }  # fmt: skip


def _member_inputs() -> MemberInputs:
    segs, cache = toy_segments()
    taxonomy = pd.DataFrame({"primary_label": ["a", "b", "c"], "class_name": ["Aves", "Amphibia", "Aves"]})
    return MemberInputs(segments=segs, taxonomy=taxonomy, cache=cache)


def test_train_member_refuses_a_typo_in_the_merged_iteration_config(tmp_path):
    with pytest.raises(ValueError, match=r"unknown key iteration\.train\.loop\.epochz"):
        train_member("it0_tiny", "tiny", _member_params(), {"k": 0, "train": {"loop": {"epochz": 1}}},
                     _member_inputs(), tmp_path)  # fmt: skip
    assert not (tmp_path / "model.pt").exists()


def test_train_member_refuses_a_teacher_and_init_from_together(tmp_path):
    inputs = _member_inputs()
    inputs.teacher_checkpoint, inputs.init_checkpoint = tmp_path / "teacher.pt", tmp_path / "pretrained.pt"
    with pytest.raises(ValueError, match=r"init_from .*pretrained\.pt and selftrain\.init: teacher"):
        train_member("it1_tiny", "tiny", _member_params(), {"k": 1, "teacher": 0}, inputs, tmp_path)


def test_train_member_refuses_freezing_a_backbone_it_does_not_load(tmp_path):
    with pytest.raises(ValueError, match="freeze_backbone is true but the member starts from no checkpoint"):
        train_member("it0_tiny", "tiny", _member_params(), {"k": 0, "train": {"freeze_backbone": True}},
                     _member_inputs(), tmp_path)  # fmt: skip
