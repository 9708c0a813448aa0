"""Train one ensemble member (iteration k, model name): build data, model, loss and policies, fit, save outputs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from birdclef import SAMPLE_RATE, WINDOW_SECONDS
from birdclef.dist import fingerprint  # a resume checkpoint must match the run's settings and inputs
from birdclef.io import merged, write_csv, write_parquet
from birdclef.metric import macro_auc, with_interval
from birdclef.models import create_model, load_checkpoint, save_checkpoint
from birdclef.track import NullRun
from birdclef.train.augment import WAVE_DEFAULTS, NoiseBank, SpecAugment, WaveAugment
from birdclef.train.augment_ops import CacheNoiseBank, resolve_options, section
from birdclef.train.datasets import FocalDataset, PseudoBank, WaveSource
from birdclef.train.distill import DistillLoss, TeacherTargets
from birdclef.train.evaluate import Evaluator
from birdclef.train.fit import FitConfig, clear_resume, fit
from birdclef.train.losses import build_loss
from birdclef.train.mutual import MutualLoss, MutualPair
from birdclef.train.params import check_member
from birdclef.train.segment_filter import drop_segments_without_call
from birdclef.train.selftrain import PseudoMixer


@dataclass
class MemberInputs:
    """Everything one member's training reads (tables already loaded; paths for what is read lazily)."""

    segments: pd.DataFrame  # the clean stage's segment table
    taxonomy: pd.DataFrame  # primary_label, class_name, ... in submission column order
    cache: WaveSource  # waveform cache: segments and soundscapes
    soundscape_labels: pd.DataFrame | None = None  # labelled soundscapes (submission format), if any
    pseudo_labels: pd.DataFrame | None = None  # pseudo stage windows of the teacher iteration
    pseudo_weights: dict[str, float] | None = None  # soundscape_id -> sampler weight (P3)
    teacher_checkpoint: Path | None = None  # same model from the previous iteration (student init)
    init_checkpoint: Path | None = None  # a pre-trained member to fine-tune from (D1), head re-created
    voice_clips: list[np.ndarray] | None = None  # voiced audio cut by the clean stage (A10)
    extra_segments: pd.DataFrame | None = None  # D4: teacher-confident soundscape windows, training rows only


@dataclass
class Peer:
    """The second member of a mutual-learning pair (P10): its model name, checkpoints and output folder."""

    name: str  # member name (``it<k>_<model>``)
    model_name: str  # key into ``params["models"]``
    inputs: MemberInputs  # the pair's inputs with the peer's own teacher / init checkpoints
    out_dir: Path
    metrics: dict[str, float] | None = None  # filled by train_member


def member_classes(taxonomy: pd.DataFrame, class_filter: list[str] | None) -> list[str]:
    """Species of a member: all, or those of the taxon classes in ``class_filter`` (D3 taxon-group models)."""
    tax = taxonomy if not class_filter else taxonomy[taxonomy["class_name"].isin(class_filter)]
    if tax.empty:
        raise ValueError(f"class filter {class_filter} leaves no species")
    return tax["primary_label"].tolist()


def split_segments(
    segments: pd.DataFrame, classes: list[str], val_fold: int, extra: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The training and validation rows of a member.

    Args:
        segments: the clean stage's segment table.
        classes: the member's species; rows with another primary label are left out.
        val_fold: the held-out fold (-1: every fold trains, no validation rows).
        extra: more training rows (D4 teacher segments, with ``cache_key`` / ``offset_s``); they join the training
            rows only, never the validation fold, whatever their ``fold`` says.

    Returns:
        ``(train, val)``; ``val`` is None when ``val_fold`` is -1.
    """
    segs = segments[segments["primary_label"].isin(classes)].reset_index(drop=True)
    train = segs[segs["fold"] != val_fold] if val_fold >= 0 else segs
    val = segs[segs["fold"] == val_fold] if val_fold >= 0 else None
    if extra is not None and len(extra):
        train = pd.concat([train, extra[extra["primary_label"].isin(classes)]], ignore_index=True)
    return train.reset_index(drop=True), val


def quiet_soundscape_spans(cache: WaveSource, keys: list[str], share: float = 0.3) -> list[tuple[str, int, int]]:
    """The quietest ``share`` of 5-s windows of the train soundscapes, as ``(key, first sample, samples)`` spans:
    background noise for A9 (rank 2), read from the cache when drawn (``CacheNoiseBank``)."""
    window = WINDOW_SECONDS * SAMPLE_RATE
    scored: list[tuple[float, str, int]] = []
    for key in keys:
        n = cache.length(key)
        rms = cache.rms(key)
        per = max(1, window // cache.rms_hop)
        for w in range(n // window):
            scored.append((float(np.mean(rms[w * per : (w + 1) * per] ** 2)), key, w))
    scored.sort()
    keep = scored[: max(1, int(len(scored) * share))] if scored else []
    return [(k, w * window, window) for _, k, w in keep]


def iteration_config(params: Mapping[str, Any], iteration: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``train`` and ``selftrain`` settings of one iteration: the sections with its own overrides merged in.

    An iteration may carry ``train: {...}``, ``selftrain: {...}`` and ``loss: {...}`` (a shorthand for
    ``train: {loss: {...}}``; giving both is an error), so a whole self-training recipe is one params.yaml: rank 5's
    self-distillation rounds on train_audio with re-initialised weights (``selftrain: {init: scratch, mix_share: 0.0,
    distill: {mode: blend}}``) followed by rounds with soundscapes, or a loss that changes once pseudo labels arrive.
    """
    override = dict(iteration.get("train") or {})
    if iteration.get("loss"):
        if "loss" in override:
            k = iteration.get("k")
            raise ValueError(f"iteration {k}: give the loss override as `loss` or `train.loss`, not both")
        override["loss"] = iteration["loss"]
    tcfg = merged(params["train"], override)
    st_cfg = merged(params.get("selftrain", {}) or {}, iteration.get("selftrain") or {})
    return tcfg, st_cfg


def train_member(
    name: str,
    model_name: str,
    params: Mapping[str, Any],
    iteration: Mapping[str, Any],
    inputs: MemberInputs,
    out_dir: Path,
    resume_dir: Path | None = None,
    run: NullRun | None = None,
    device: str = "cpu",
    peer: Peer | None = None,
) -> dict[str, float]:
    """Train one member and write ``out_dir``: model.pt, history.csv, val/soundscape predictions (parquet).

    With ``peer`` (P10 mutual learning, ``train.mutual``), a second member trains in the same ``fit()`` on the same
    batches (each model's loss plus ``train.mutual.weight`` x a symmetric KL between their predictions) and is
    written to ``peer.out_dir`` alike; its metrics are stored in ``peer.metrics``.

    Args:
        name: member name (``it<k>_<model>``).
        model_name: key into ``params["models"]``.
        params: the whole params dict (reads ``models``, ``mels``, ``train``, ``selftrain``).
        iteration: this iteration's entry of ``params["iterations"]`` (``k``, ``teacher``, ...).
        inputs: loaded tables and caches.
        out_dir: the member's output folder.
        resume_dir: resume checkpoint folder (kept across a killed run).
        run: experiment recorder.
        device: torch device.

    Returns:
        Flat metrics: ``val_auc``, ``soundscape_auc`` (+ per taxon class), timing.
    """
    check_member(params, iteration)  # every key known, every value good, the iteration's overrides merged in
    run = run or NullRun()
    tcfg, st_cfg = iteration_config(params, iteration)
    model_cfg = dict(params["models"][model_name])
    mel_cfg = dict(params["mels"][model_cfg.pop("mel")])
    class_filter = model_cfg.pop("classes", None)
    classes = member_classes(inputs.taxonomy, class_filter)
    student = inputs.pseudo_labels is not None
    if student and st_cfg.get("drop_path_rate") is not None:
        model_cfg["drop_path_rate"] = float(st_cfg["drop_path_rate"])  # drop_path only while self-training (P1)

    seed = int(tcfg["loop"].get("seed", 0))
    torch.manual_seed(seed)
    model = create_model(model_cfg, len(classes), mel_cfg)
    model.classes = classes
    _initialise(model, classes, inputs, st_cfg if student else {}, tcfg)
    mutual = dict(tcfg.get("mutual") or {})
    if bool(mutual.get("enabled")) != (peer is not None):
        raise ValueError(f"{name}: train.mutual.enabled trains the two members of an iteration together "
                         f"(enabled: {bool(mutual.get('enabled'))}, peer: {peer.model_name if peer else None})")
    peer_model = _peer_model(params, peer, classes, st_cfg if student else {}, tcfg, student) if peer else None

    extra = inputs.extra_segments
    train_segs, val_segs = split_segments(inputs.segments, classes, int(tcfg.get("val_fold", 0)), extra)
    n_teacher = 0 if extra is None else int(extra["primary_label"].isin(classes).sum())
    n_dropped = 0
    no_call = dict(st_cfg.get("drop_no_call") or {}) if student else {}
    if no_call.get("enabled"):  # D2 (rank 10): the teacher iteration's model must hear the primary species
        if inputs.teacher_checkpoint is None:
            raise ValueError(f"{name}: selftrain.drop_no_call needs the teacher iteration's checkpoint")
        judge, _ = load_checkpoint(inputs.teacher_checkpoint)
        if list(judge.classes or []) != classes:
            raise ValueError(f"{name}: selftrain.drop_no_call needs a teacher with the student's classes")
        train_segs, n_dropped = drop_segments_without_call(
            train_segs, inputs.cache, judge.to(device), classes, float(no_call.get("threshold", 0.1)), device
        )
    train_set = FocalDataset(
        train_segs, inputs.cache, classes, float(tcfg["crop_s"]), tcfg.get("crop_policy", "random"),
        tcfg.get("secondary_value", 0.5),
    )
    aug_cfg = dict(tcfg.get("augment", {}))
    noise_keys = [k for k in inputs.cache.keys("train_soundscape")] if hasattr(inputs.cache, "keys") else []
    background = "background" in resolve_options(section(aug_cfg, "wave"), WAVE_DEFAULTS, "train.augment.wave")
    noise = None  # A9's bank: an index into the cache (not the audio), built only when A9 is on
    if noise_keys and background:
        noise = CacheNoiseBank(inputs.cache, quiet_soundscape_spans(inputs.cache, noise_keys))
    voice = NoiseBank(inputs.voice_clips) if inputs.voice_clips else None
    transforms = []
    if student:
        bank = PseudoBank(
            inputs.pseudo_labels, inputs.pseudo_weights or {}, inputs.cache, classes, float(tcfg["crop_s"])
        )
        transforms.append(PseudoMixer(bank, st_cfg))
    transforms.append(WaveAugment(aug_cfg, noise_bank=noise, voice_bank=voice))
    loss = build_loss(tcfg.get("loss", {}))
    distill = dict(st_cfg.get("distill") or {})
    distill["mode"] = str(distill.get("mode") or "off")  # YAML reads a bare `off` as False
    if distill["mode"] != "off" and inputs.teacher_checkpoint is not None:
        teacher, _ = load_checkpoint(inputs.teacher_checkpoint)
        if list(teacher.classes or []) != classes:
            raise ValueError(f"{name}: selftrain.distill needs a teacher with the student's classes")
        transforms.append(TeacherTargets(teacher, distill, device))  # P6 / P7: after augmentation, as seen
        loss = DistillLoss(loss, float(distill.get("kl_weight", 1.0)) if distill["mode"] == "online" else 0.0)
    spec_aug = SpecAugment(aug_cfg)
    taxa = dict(zip(inputs.taxonomy["primary_label"], inputs.taxonomy["class_name"], strict=True))
    evaluator = Evaluator(classes, inputs.cache, val_segs, inputs.soundscape_labels, float(tcfg["crop_s"]), taxa)
    loop = FitConfig.from_dict(tcfg["loop"])
    fp = fingerprint(name, model_cfg, mel_cfg, tcfg, st_cfg if student else {}, iteration, train_segs,
                     inputs.pseudo_labels if student else 0, *([peer.model_name] if peer else []))
    trained = MutualPair(model, peer_model) if peer_model is not None else model
    if peer_model is not None:
        loss = MutualLoss(loss, float(mutual.get("weight", 1.0)))
    result = fit(
        trained, train_set, loop, loss, transforms=transforms, spec_augment=spec_aug,
        evaluate=evaluator, resume_dir=resume_dir, fingerprint=fp, run=run, device=device,
    )

    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return {}  # rank 0 writes the outputs; the other ranks only shared the work
    common: dict[str, float] = {
        "train_seconds": round(result.seconds, 1),
        "train_samples_per_second": round(result.samples_seen / max(result.seconds, 1e-9), 2),
        "teacher_segments": n_teacher,  # D4 rows among the training rows
        "segments_dropped_no_call": n_dropped,  # D2: training rows the teacher iteration heard no call in
    }
    if peer is not None and peer_model is not None:
        peer.metrics = _publish(peer_model, peer.name, peer.model_name, iteration, fp, result.history, evaluator,
                                peer.out_dir, dict(common), taxa, run, device, own_history=False)
    out = _publish(model, name, model_name, iteration, fp, result.history, evaluator, out_dir, common, taxa, run,
                   device)
    clear_resume(resume_dir)
    return out


def _peer_model(params: Mapping[str, Any], peer: Peer, classes: list[str], st_cfg: Mapping[str, Any],
                tcfg: Mapping[str, Any], student: bool) -> torch.nn.Module:
    """The peer's model, built and initialised as its own member would be (same classes as the pair's first)."""
    cfg = dict(params["models"][peer.model_name])
    mel = dict(params["mels"][cfg.pop("mel")])
    if member_classes(peer.inputs.taxonomy, cfg.pop("classes", None)) != classes:
        raise ValueError(f"train.mutual: {peer.model_name} must predict the same classes as its partner")
    if student and st_cfg.get("drop_path_rate") is not None:
        cfg["drop_path_rate"] = float(st_cfg["drop_path_rate"])
    model = create_model(cfg, len(classes), mel)
    model.classes = classes
    _initialise(model, classes, peer.inputs, st_cfg, tcfg)
    return model


def _publish(
    model: torch.nn.Module, name: str, model_name: str, iteration: Mapping[str, Any], fp: str,
    history_rows: list[dict[str, float]], evaluator: Evaluator, out_dir: Path, metrics: dict[str, float],
    taxa: Mapping[str, str], run: NullRun, device: str, own_history: bool = True,
) -> dict[str, float]:
    """Write one trained member's folder (checkpoint, history, predictions) and return its metrics.

    A mutual-learning peer (``own_history=False``) shares its partner's per-epoch history, which scored the
    partner; its own scores are the final ones computed here.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"member": name, "iteration": int(iteration["k"]), "model_name": model_name, "fingerprint": fp}
    save_checkpoint(out_dir / "model.pt", model, meta)
    shared = ("epoch", "train_loss", "lr")  # the pair's loss and schedule; the epoch scores are the partner's
    rows = history_rows if own_history else [{k: r[k] for k in shared if k in r} for r in history_rows]
    history = pd.DataFrame(rows)
    history.insert(0, "member", name)
    write_csv(history, out_dir / "history.csv")
    model.eval()
    if evaluator.val is not None:
        val_pred = evaluator.focal_predictions(model, device)
        write_parquet(val_pred, out_dir / "val_predictions.parquet")
        metrics["val_auc"] = macro_auc(evaluator.focal_solution(), val_pred.rename(columns={"segment_id": "row_id"}))[
            "auc"
        ]
    if evaluator.solution is not None:
        ss_pred = evaluator.soundscape_predictions(model, device)
        write_parquet(ss_pred, out_dir / "soundscape_predictions.parquet")
        scores = macro_auc(evaluator.solution, ss_pred, taxa)
        metrics.update({f"soundscape_{k}": v for k, v in scores.items()})
        with_interval(metrics, "soundscape_auc", evaluator.solution, ss_pred)  # 95% over soundscape resamples
    run.log_metrics(metrics if own_history else {f"peer_{k}": v for k, v in metrics.items()})
    run.log_artifact(out_dir / "model.pt", artifact_path="checkpoint")
    return {k: round(float(v), 6) if isinstance(v, float) else v for k, v in metrics.items()}


def _initialise(
    model: torch.nn.Module, classes: list[str], inputs: MemberInputs, st_cfg: Mapping[str, Any], tcfg: Mapping
) -> None:
    """Start from the teacher (student iterations, ``selftrain.init: teacher``) or a pre-trained member (D1).

    Raises:
        ValueError: both the teacher and ``init_from`` would give the starting weights (one would win silently), or
            ``freeze_backbone`` is on with no checkpoint to start from (nothing trained to freeze).
    """
    teacher = st_cfg.get("init", "teacher") == "teacher" and inputs.teacher_checkpoint is not None
    if teacher and inputs.init_checkpoint is not None:
        raise ValueError(
            f"init_from {inputs.init_checkpoint} and selftrain.init: teacher ({inputs.teacher_checkpoint}) both give "
            "the student its starting weights; set selftrain.init: scratch to start from init_from, or drop init_from"
        )
    source = inputs.teacher_checkpoint if teacher else inputs.init_checkpoint
    if source is None:
        if tcfg.get("freeze_backbone", False):
            raise ValueError("train.freeze_backbone is true but the member starts from no checkpoint (no init_from, "
                             "no teacher with selftrain.init: teacher): there is no trained backbone to freeze")
        return
    donor, _ = load_checkpoint(source)
    if list(donor.classes or []) == classes:
        model.load_state_dict(donor.state_dict())
    else:
        # New class set: keep the backbone (and the head's input layers), learn fresh class layers.
        donor.replace_head(len(classes))
        model.load_state_dict(donor.state_dict(), strict=False)
    if tcfg.get("freeze_backbone", False):  # D3: rare-class head fine-tuning, only the class layers learn
        model.freeze_backbone(True)
