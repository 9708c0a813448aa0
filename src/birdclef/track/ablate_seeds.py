"""The seeded ablation's results: each variant x seed's test predictions, compared with the baseline of its seed.

A ``retrain`` run's predictions are its experiment's output, read from the DVC cache at the experiment's commit; a
``reuse`` run's come from :func:`birdclef.track.ablate_reuse.run_reuse` on the baseline experiment of that seed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from birdclef.metric import ROW_ID, score
from birdclef.track.ablate_reuse import run_reuse
from birdclef.track.ablate_spec import AblationSpec
from birdclef.track.ablate_table import Noise, VariantResult, aligned, noise, pooled_effects
from birdclef.track.paired import PredictionsError, read_table

Reuse = Callable[[str, int | None, str], Path | None]
"""``(variant, seed, baseline commit) -> predictions path`` (None: not available without running)."""


def class_map(path: Path) -> dict[str, str]:
    """Species -> taxon class name from a taxonomy.csv (``{}`` when the file is absent)."""
    if not path.is_file():
        return {}
    taxonomy = pd.read_csv(path, dtype={"primary_label": str})
    return dict(zip(taxonomy["primary_label"], taxonomy["class_name"], strict=True))


def make_reuse(spec: AblationSpec, repo: Path, run: bool, parent_id: str | None, uri: str) -> Reuse:
    """The reuse step for :func:`collect`: ``run_reuse`` into ``build/ablate/<spec>/<variant>-s<seed>``.

    With ``run`` False only a finished folder of an earlier run is used (``--no-run``).
    """

    def reuse(variant: str, seed: int | None, base_rev: str) -> Path | None:
        workdir = repo / "build" / "ablate" / spec.name / f"{variant}-s{seed}"
        if not run:
            done = workdir / spec.predictions
            return done if done.is_file() else None
        return run_reuse(repo, workdir, base_rev, spec.overrides(variant, seed), spec.predictions,
                         spec.exp_name(variant, seed), parent_id, uri)  # fmt: skip

    return reuse


def run_reuses(
    tasks: Sequence[tuple[str, int | None, str]], reuse: Reuse, jobs: int = 1
) -> dict[tuple[str, int | None], Path | None | RuntimeError]:
    """Run ``reuse(variant, seed, base_rev)`` for every task, ``jobs`` at a time; ``{(variant, seed): outcome}``.

    Each reuse run is one ensemble-stage subprocess on one core's worth of threads (the spec's thread caps), so
    ``jobs`` of them use the cores the queued experiments used; a failed one is kept as its ``RuntimeError``.
    """

    def one(task: tuple[str, int | None, str]) -> Path | None | RuntimeError:
        try:
            return reuse(*task)
        except RuntimeError as err:
            return err

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        outcomes = list(pool.map(one, tasks))
    return {(variant, seed): out for (variant, seed, _), out in zip(tasks, outcomes, strict=True)}


def collect(
    spec: AblationSpec,
    repo: Path,
    results: Mapping[str, Mapping[str, Any]],
    kinds: Mapping[str, str],
    reuse: Reuse,
    n_resamples: int = 1000,
) -> tuple[list[VariantResult], Noise | None, list[str]]:
    """Every variant's row of the seeded table, the baseline's noise levels and the taxon classes found.

    Args:
        spec: the spec (with seeds).
        repo: the DVC project (labels, taxonomy, the experiments' predictions).
        results: ``ablate.experiments`` of ``dvc exp show`` (``rev``, ``state``, ``error`` per name).
        kinds: ``AblationSpec.kinds``.
        reuse: how a ``reuse`` variant x seed gets its predictions.
        n_resamples: of the bootstraps.
    """
    labels = pd.read_csv(repo / spec.labels, dtype={ROW_ID: str})
    taxa = class_map(repo / spec.taxonomy)
    seeds = spec.seed_list()
    base: dict[int | None, pd.DataFrame] = {}
    base_rev: dict[int | None, str] = {}
    for s in seeds:
        found = _experiment_table(spec, repo, results, spec.baseline, s)
        if isinstance(found, tuple):
            base[s], base_rev[s] = found
    rows, found_noise = [], None
    if base:
        found_noise = noise(labels, list(base.values()), n_resamples)
    classes = sorted({taxa.get(c, "unknown") for c in labels.columns if c != ROW_ID and c in taxa})
    if spec.taxa:
        classes = [c for c in classes if c in spec.taxa or c.lower() in spec.taxa]
    tasks = [(v, s, base_rev[s]) for v in spec.variants if kinds[v] == "reuse" for s in seeds if s in base]
    reused = run_reuses(tasks, reuse, spec.jobs)
    for variant, sets in spec.variants.items():
        kind = kinds[variant]
        published = spec.published.get(variant, {})
        if kind == "baseline":
            missing = [s for s in seeds if s not in base]
            rows.append(VariantResult(variant, kind, sets, published, _status(missing, results, spec, variant),
                                      found_noise.scores if found_noise else (), None))  # fmt: skip
            continue
        tables: dict[int | None, pd.DataFrame] = {}
        errors: list[str] = []
        for s in seeds:
            if s not in base:
                continue
            if kind == "reuse":
                path = reused[(variant, s)]
                if isinstance(path, RuntimeError):
                    errors.append(str(path).splitlines()[0][:200])
                elif path is not None:
                    tables[s] = read_table(str(path))
            else:
                got = _experiment_table(spec, repo, results, variant, s)
                if isinstance(got, tuple):
                    tables[s] = got[0]
        ran = [s for s in seeds if s in tables]
        missing = [s for s in seeds if s not in tables]
        status = f"failed: {errors[0]}" if errors and not ran else _status(missing, results, spec, variant)
        effects = pooled_effects(labels, [(base[s], tables[s]) for s in ran], taxa, n_resamples) if ran else None
        scores = tuple(_score(labels, tables[s]) for s in ran)
        rows.append(VariantResult(variant, kind, sets, published, status, scores, effects))
    return rows, found_noise, classes


def _experiment_table(
    spec: AblationSpec, repo: Path, results: Mapping[str, Mapping[str, Any]], variant: str, seed: int | None
) -> tuple[pd.DataFrame, str] | str:
    """The experiment's predictions and commit, or why there are none."""
    res = results.get(spec.exp_name(variant, seed))
    if not res:
        return "not found"
    if res.get("state") != "success" or not res.get("rev"):
        return str(res.get("state"))
    try:
        return read_table(f"{res['rev']}:{spec.predictions}", repo), str(res["rev"])
    except PredictionsError as err:
        return f"no predictions: {err}"


def _status(missing: list[Any], results: Mapping[str, Mapping[str, Any]], spec: AblationSpec, variant: str) -> str:
    if not missing:
        return "ok"
    states = {(results.get(spec.exp_name(variant, s)) or {}).get("state", "not found") for s in missing}
    return f"missing seed(s) {missing}: {', '.join(sorted(map(str, states)))}"


def _score(labels: pd.DataFrame, table: pd.DataFrame) -> float:
    truth, (cut,) = aligned(labels, [table])
    return score(truth, cut)
