"""The train@k stage's library: check and load what iteration k learns from, train its members, publish the results."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from birdclef.features.cache import WaveCache
from birdclef.io import atomic_path, scratch_dir, write_csv, write_metrics
from birdclef.track import stage_run
from birdclef.train.member import MemberInputs, Peer, iteration_config, train_member
from birdclef.train.params import teacher_checkpoint
from birdclef.train.teacher_data import load_teacher_segments
from birdclef.train.voice import voice_clips

SECTIONS = ("train", "selftrain", "models", "mels")  # what a member's run records

VAL_SPLIT = "val"
"""The labelled-soundscape split that per-epoch soundscape scores use (data/val_labels.csv)."""


@dataclass(frozen=True)
class IterationPaths:
    """The train stage's folders and files (its command line).

    Attributes:
        data: raw data root (voiced spans are decoded from it).
        acquire, clean, features: those stages' outputs (taxonomy and labelled soundscapes, segments and voice
            spans, the waveform cache).
        labels: the segment table (iteration 0) or the pseudo stage's folder of the teacher iteration.
        teacher_outputs: the teacher stage's folder (D4 segments when ``train.teacher_segments.enabled``).
        train_root: parent of the ``it<k>`` folders (a student's teacher checkpoint).
        out: this iteration's folder, one subfolder a member.
        resume: resume checkpoints (persist across a kill).
        metrics: ``{member: scores}`` JSON.
        timings: ``{member: {train_seconds, train_samples_per_second}}`` JSON (+ the stage's wall time).
        history: per-epoch CSV of every member.
    """

    data: Path
    acquire: Path
    clean: Path
    features: Path
    labels: Path
    teacher_outputs: Path
    train_root: Path
    out: Path
    resume: Path
    metrics: Path
    timings: Path
    history: Path


@dataclass
class IterationPlan:
    """What iteration k trains from, checked before any member trains.

    Attributes:
        index: the iteration's index into params ``iterations``.
        iteration: its entry.
        inputs: the tables and caches every member reads.
        checkpoints: model name -> ``(teacher checkpoint, init checkpoint)``, each None when unused.
    """

    index: int
    iteration: Mapping[str, Any]
    inputs: MemberInputs
    checkpoints: dict[str, tuple[Path | None, Path | None]]


def plan_iteration(params: Mapping[str, Any], index: int, paths: IterationPaths) -> IterationPlan:
    """Load and check what iteration ``index`` learns from.

    Raises:
        FileNotFoundError: a student iteration whose ``labels`` folder holds no pseudo labels; an ``init_from``
            checkpoint that does not exist; a teacher checkpoint that a setting needs (``teacher_checkpoint``).
        ValueError: ``train.teacher_segments.enabled`` while the teacher stage has no train-soundscape windows.
    """
    iteration = params["iterations"][index]
    k, teacher = iteration["k"], iteration.get("teacher")
    pseudo = weights = None
    if teacher is not None:
        if not (paths.labels / "labels.parquet").exists():
            raise FileNotFoundError(f"iteration {k} has teacher {teacher} but {paths.labels} holds no labels.parquet")
        pseudo = pd.read_parquet(paths.labels / "labels.parquet")
        table = pd.read_parquet(paths.labels / "soundscapes.parquet")
        weights = dict(zip(table["soundscape_id"], table["sampler_weight"], strict=True))
    taxonomy = pd.read_parquet(paths.acquire / "taxonomy.parquet")
    mutual_pair(params, iteration)  # a bad pairing stops before anything loads or trains
    try:
        extra = load_teacher_segments(paths.teacher_outputs, iteration_config(params, iteration)[0], taxonomy)
    except ValueError as err:
        raise ValueError(f"iteration {k}: {err}") from err
    labels = pd.read_parquet(paths.acquire / "soundscape_labels.parquet")
    inputs = MemberInputs(
        segments=pd.read_parquet(paths.clean / "segments.parquet"),
        taxonomy=taxonomy,
        cache=WaveCache(paths.features),
        # Per-epoch scores on the labelled validation soundscapes only (S3): the test labels are the local
        # leaderboard, scored once by the ensemble and infer stages, never used to pick anything.
        soundscape_labels=labels[labels["split"] == VAL_SPLIT].drop(columns=["split", "soundscape_id"]),
        pseudo_labels=pseudo,
        pseudo_weights=weights,
        voice_clips=voice_clips(paths.data, pd.read_parquet(paths.clean / "voice_spans.parquet")),
        extra_segments=extra,
    )
    checkpoints = {}
    for model in iteration["members"]:
        ckpt = paths.train_root / f"it{teacher}" / model / "model.pt" if teacher is not None else None
        init_from = iteration.get("init_from")  # D1 / D3: fine-tune a checkpoint, `{model}` = this member
        init = Path(str(init_from).format(model=model)) if init_from else None
        if init is not None and not init.is_file():
            raise FileNotFoundError(f"iteration {k}: init_from {init} does not exist")
        checkpoints[model] = (teacher_checkpoint(ckpt, params, iteration), init)  # missing + needed: an error
    return IterationPlan(index, iteration, inputs, checkpoints)


def mutual_pair(params: Mapping[str, Any], iteration: Mapping[str, Any]) -> bool:
    """Whether the iteration trains its members as a P10 mutual-learning pair (``train.mutual.enabled``).

    Raises:
        ValueError: mutual learning on with other than exactly two members.
    """
    tcfg = iteration_config(params, iteration)[0]
    if not (tcfg.get("mutual") or {}).get("enabled"):
        return False
    members = list(iteration.get("members") or [])
    if len(members) != 2 or members[0] == members[1]:
        raise ValueError(f"iteration {iteration.get('k')}: train.mutual trains two different members together, "
                         f"the iteration lists {members}")
    return True


def run_iteration(
    params: Mapping[str, Any], plan: IterationPlan, paths: IterationPaths, device: str = "cpu", rank: int = 0
) -> dict[str, dict[str, float]]:
    """Train every member of the plan; rank 0 publishes ``paths.out``, the metrics and the history.

    Other DDP ranks share the work and write into a scratch folder that is thrown away; they record no runs.

    Returns:
        ``{model name: train_member metrics}`` (rank 0; empty dicts on the other ranks).
    """
    k = plan.iteration["k"]
    tracking = params.get("tracking", {}) if rank == 0 else {"enabled": False}
    section = {s: params[s] for s in SECTIONS if s in params}
    metrics: dict[str, dict[str, float]] = {}
    models = list(plan.checkpoints)
    mutual = mutual_pair(params, plan.iteration)
    with atomic_path(paths.out) if rank == 0 else scratch_dir() as out:
        for model, (teacher, init) in plan.checkpoints.items():
            if mutual and model == models[1]:
                continue  # P10: trained together with models[0]
            name = f"it{k}_{model}"
            inputs = replace(plan.inputs, teacher_checkpoint=teacher, init_checkpoint=init)
            peer = None
            if mutual:
                p_teacher, p_init = plan.checkpoints[models[1]]
                peer = Peer(f"it{k}_{models[1]}", models[1],
                            replace(plan.inputs, teacher_checkpoint=p_teacher, init_checkpoint=p_init),
                            out / models[1])
            with stage_run(f"train@{plan.index}", {**section, "member": name}, tracking) as run:
                metrics[model] = train_member(name, model, params, plan.iteration, inputs, out / model,
                                              paths.resume / model, run, device, peer)  # fmt: skip
            if peer is not None:
                metrics[peer.model_name] = peer.metrics or {}
            for member in [model, *([peer.model_name] if peer else [])]:
                print(f"it{k}_{member}: " + ", ".join(f"{key}={v}" for key, v in metrics[member].items()))
    if rank == 0:
        write_metrics(metrics, paths.metrics, paths.timings)
        histories = [pd.read_csv(paths.out / m / "history.csv") for m in plan.checkpoints]
        write_csv(pd.concat(histories, ignore_index=True), paths.history)
    return metrics
