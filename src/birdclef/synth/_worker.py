"""Rendering of planned files in worker processes (kept free of pandas so that workers start fast)."""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from birdclef import SAMPLE_RATE
from birdclef.synth.calls import Jitter
from birdclef.synth.config import SynthConfig
from birdclef.synth.oggio import write_ogg
from birdclef.synth.scenes import Event, FocalPlan, SoundscapePlan, render_focal, render_soundscape
from birdclef.synth.species import Species

Context = tuple[Path, dict[str, Species], SynthConfig]
"""(dataset root being written, every species and distractor by label, the config)."""


@dataclass(frozen=True)
class Job:
    """One file to render: its index in the plan list, its plan and its own seed."""

    index: int
    plan: FocalPlan | SoundscapePlan
    seed: np.random.SeedSequence


@dataclass(frozen=True)
class Result:
    """What rendering one file planted and wrote."""

    index: int
    events: list[Event]
    voice: list[tuple[float, float]]
    samples: int
    bytes: int


_CONTEXT: Context | None = None


def _init_worker(context: Context) -> None:
    global _CONTEXT
    _CONTEXT = context


def _render(job: Job) -> Result:
    """Render and write one file (runs in a worker); its own seed makes it independent of scheduling."""
    assert _CONTEXT is not None, "worker context not initialised"
    root, species, config = _CONTEXT
    knobs = config.species
    jitter = Jitter(knobs.pitch_jitter, knobs.duration_jitter, knobs.rate_jitter)
    rng = np.random.default_rng(job.seed)
    voice: list[tuple[float, float]] = []
    if isinstance(job.plan, FocalPlan):
        audio, events, voice = render_focal(job.plan, species, jitter, rng)
    else:
        audio, events = render_soundscape(job.plan, species, jitter, config.soundscape.snr_spread_db, rng)
    size = write_ogg(root / job.plan.path, audio, SAMPLE_RATE, config.ogg_compression)
    return Result(job.index, events, voice, len(audio), size)


def render_all(jobs: list[Job], context: Context, workers: int, progress: bool) -> list[Result]:
    """Render every job (in ``workers`` spawned processes, or here when 1) with a progress bar; results in job
    order whatever the completion order."""
    bar = tqdm(total=len(jobs), desc="synth", unit="file", disable=not progress)
    results: dict[int, Result] = {}
    if workers == 1:
        _init_worker(context)
        for job in jobs:
            results[job.index] = _render(job)
            bar.update()
    else:
        # spawn, not fork: the caller may hold threads (torch, tqdm) that a fork would copy half-locked
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(context,)) as pool:
            for res in pool.imap_unordered(_render, jobs, chunksize=1):
                results[res.index] = res
                bar.update()
    bar.close()
    return [results[i] for i in range(len(jobs))]
