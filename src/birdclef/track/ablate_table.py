"""The arithmetic of a seeded ablation: each variant's effect against the baseline, pooled over seeds, per taxon.

How the seeds are pooled. Seed ``s`` of a variant is compared with seed ``s`` of the baseline (same training seed,
same test soundscapes): that pairs away what the two runs share. The point estimate is the mean over seeds of the
per-seed differences ``score(variant_s) - score(baseline_s)``. The 95% interval comes from a two-level bootstrap:
each resample draws the soundscapes with replacement (one draw shared by every seed, variant and baseline, so the
comparison stays paired) *and* draws the seeds with replacement, then averages the drawn seeds' differences on the
drawn files. The interval so covers both the test files' sampling error and the seed-to-seed spread of the effect;
with one seed it is exactly :func:`birdclef.metric.paired_bootstrap`'s. With 3 seeds the seed level is coarse (the
mean of 3 draws from 3 values), which widens the interval rather than narrowing it: an effect marked "real" beat both.

A taxon column does the same over that taxon class's species only (its macro AUC), so "Insecta" rests on however
few insect species the test files have: read narrow groups with that in mind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from birdclef.metric import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CI_LEVEL,
    ROW_ID,
    _auc_matrix,
    _macro,
    _percentiles,
    file_ids,
    per_class_auc,
    score_interval,
)

OVERALL = "all"
SIGNS = ("+", "-", "0")
"""A published effect: ``+`` the write-ups credit the change with a gain, ``-`` with a loss, ``0`` with none."""


@dataclass(frozen=True)
class Effect:
    """A variant's change of the metric against the baseline, over seeds.

    Attributes:
        diff: mean over seeds of the per-seed difference (variant minus baseline) on all files.
        low, high: the two-level bootstrap's percentile interval (module doc).
        per_seed: the per-seed differences, in seed order.
        share_better: fraction of resamples where the variant's mean is strictly above the baseline's.
        n_files: soundscapes resampled.
    """

    diff: float
    low: float
    high: float
    per_seed: tuple[float, ...]
    share_better: float
    n_files: int

    @property
    def real(self) -> bool:
        """Whether the interval excludes 0."""
        return bool(self.low > 0 or self.high < 0)

    @property
    def sign(self) -> str:
        """``+`` / ``-`` when the interval excludes 0 on that side, else ``0`` (within noise)."""
        return "+" if self.low > 0 else "-" if self.high < 0 else "0"

    @property
    def seed_sd(self) -> float:
        """Standard deviation of the per-seed differences (nan with one seed)."""
        return float(np.std(self.per_seed, ddof=1)) if len(self.per_seed) > 1 else float("nan")


@dataclass(frozen=True)
class Noise:
    """The benchmark's two noise levels, printed under the table.

    Attributes:
        half_width: mean over seeds of the baseline score's 95% bootstrap half-width (the test files' error).
        seed_sd: standard deviation of the baseline score over seeds (nan with one seed).
        seed_range: max minus min of the baseline score over seeds.
        scores: the baseline score per seed.
        n_files: soundscapes scored.
    """

    half_width: float
    seed_sd: float
    seed_range: float
    scores: tuple[float, ...]
    n_files: int


def aligned(
    solution: pd.DataFrame, tables: Sequence[pd.DataFrame]
) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """Labels and tables cut to the rows all tables predict and the labelled species columns all of them have.

    One shared row set keeps every seed on the same files, so one bootstrap draw of files serves them all.

    Raises:
        ValueError: no row or no species column in common.
    """
    rows = set(solution[ROW_ID].astype(str))
    for t in tables:
        rows &= set(t[ROW_ID].astype(str))
    cols = [c for c in solution.columns if c != ROW_ID and pd.api.types.is_numeric_dtype(solution[c])
            and all(c in t.columns for t in tables)]  # fmt: skip
    if not rows or not cols:
        raise ValueError(f"labels and prediction tables share {len(rows)} row(s) and {len(cols)} species column(s)")
    order = [r for r in solution[ROW_ID].astype(str) if r in rows]

    def cut(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.assign(**{ROW_ID: frame[ROW_ID].astype(str)}).set_index(ROW_ID)
        return frame.loc[order, cols].reset_index()

    return cut(solution), [cut(t) for t in tables]


def pooled_effects(
    solution: pd.DataFrame,
    pairs: Sequence[tuple[pd.DataFrame, pd.DataFrame]],
    taxa: Mapping[str, str] | None = None,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = CI_LEVEL,
) -> dict[str, Effect]:
    """The variant's effect overall (``"all"``) and per taxon class, pooled over seeds (module doc).

    Args:
        solution: 0/1 labels (``row_id`` + species); every table is cut to the rows and columns all share.
        pairs: ``(baseline, variant)`` prediction tables, one pair per seed.
        taxa: species -> taxon class name; None gives the overall effect only.
        n_resamples, seed, level: of the bootstrap (``seed + 1`` draws the seeds, so the files match
            :func:`birdclef.metric.paired_bootstrap`'s draw).

    Returns:
        ``{"all": Effect, "<taxon>": Effect, ...}``; a taxon with no labelled positive is left out.

    Raises:
        ValueError: no pair, or nothing in common to score.
    """
    if not pairs:
        raise ValueError("no (baseline, variant) pair to compare")
    truth, cut = aligned(solution, [t for pair in pairs for t in pair])
    scored = [c for c in truth.columns if c != ROW_ID and truth[c].sum() > 0]  # _auc_matrix's column order
    if not scored:
        raise ValueError("the labels have no species with a positive window: nothing to score")
    groups = {OVERALL: np.ones(len(scored), bool)}
    for name in sorted({(taxa or {}).get(c, "unknown") for c in scored} if taxa else ()):
        groups[name] = np.array([(taxa or {}).get(c, "unknown") == name for c in scored])
    boot: dict[str, list[np.ndarray]] = {g: [] for g in groups}
    point: dict[str, list[float]] = {g: [] for g in groups}
    for k in range(len(pairs)):
        a, b = cut[2 * k], cut[2 * k + 1]
        auc = _auc_matrix(truth, [a, b], n_resamples, seed, None)  # (2, R, C) on the shared file draws
        full = np.stack([list(per_class_auc(truth, t).values()) for t in (a, b)])  # (2, C) on all files
        for g, mask in groups.items():
            boot[g].append(_macro(auc[1][:, mask]) - _macro(auc[0][:, mask]))
            point[g].append(float(np.mean(full[1, mask]) - np.mean(full[0, mask])))
    n_files = len(set(file_ids(truth[ROW_ID])))
    draw = np.random.default_rng(seed + 1).integers(0, len(pairs), size=(n_resamples, len(pairs)))
    out = {}
    for g in groups:
        per = np.stack(boot[g])  # (S, R)
        pooled = per[draw, np.arange(n_resamples)[:, None]].mean(axis=1)  # seeds drawn per resample, then averaged
        pooled = pooled[np.isfinite(pooled)]  # a resample that drew no positive of the group scores nothing
        low, high = _percentiles(pooled, level)
        out[g] = Effect(float(np.mean(point[g])), low, high, tuple(point[g]),
                        float(np.mean(pooled > 0)) if len(pooled) else float("nan"), n_files)  # fmt: skip
    return out


def noise(solution: pd.DataFrame, baselines: Sequence[pd.DataFrame], n_resamples: int = BOOTSTRAP_RESAMPLES,
          seed: int = BOOTSTRAP_SEED) -> Noise:  # fmt: skip
    """The baseline's bootstrap half-width (mean over seeds) and its score's spread over seeds."""
    truth, cut = aligned(solution, baselines)
    found = [score_interval(truth, t, n_resamples, seed) for t in cut]
    scores = tuple(f.score for f in found)
    sd = float(np.std(scores, ddof=1)) if len(scores) > 1 else float("nan")
    return Noise(float(np.mean([f.half_width for f in found])), sd, float(max(scores) - min(scores)), scores,
                 found[0].n_files)  # fmt: skip


def reproduced(effect: Effect | None, published: str | None) -> str:
    """The "reproduced?" cell: does the measured effect agree with the sign the write-ups report?

    ``yes``: the interval excludes 0 on the published side (or, for a published ``0``, includes 0); ``no
    (opposite)``: it excludes 0 on the other side; ``no (within noise)``: a published gain or loss the benchmark
    cannot tell from 0; ``no (real effect)``: a published non-effect the benchmark finds; ``n/a``: no published sign
    or no measurement.
    """
    if effect is None or published not in SIGNS or not np.isfinite(effect.low):
        return "n/a"
    if published == "0":
        return "yes" if not effect.real else "no (real effect)"
    if not effect.real:
        return "no (within noise)"
    return "yes" if effect.sign == published else "no (opposite)"


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class VariantResult:
    """One row of the seeded ablation table.

    Attributes:
        variant: its name in the spec.
        kind: ``retrain`` (its own ``dvc exp run`` per seed), ``reuse`` (the baseline's members, re-ensembled) or
            ``baseline``.
        overrides: its params changes.
        published: ``{"sign": "+"|"-"|"0", "rank": ..., "ref": ...}`` from the write-ups (may be empty).
        status: ``ok`` or why it has no effect (``failed: ...``, ``missing seeds [1]``).
        scores: the metric on all test files, per seed that ran.
        effects: ``pooled_effects`` (None for the baseline and for a variant that did not run).
    """

    variant: str
    kind: str
    overrides: Mapping[str, object]
    published: Mapping[str, object]
    status: str
    scores: tuple[float, ...]
    effects: Mapping[str, Effect] | None


def _ci(e: Effect | None) -> str:
    if e is None or not np.isfinite(e.diff):
        return "n/a"
    return f"{e.diff:+.4f} [{e.low:+.4f}, {e.high:+.4f}]"


def _published(p: Mapping[str, object]) -> str:
    if not p:
        return ""
    rank = p.get("rank")
    ranks = ", ".join(map(str, rank)) if isinstance(rank, list | tuple) else rank
    return f"{p.get('sign', '?')}" + (f" (rank {ranks})" if ranks not in (None, "") else "")


def markdown(rows: Sequence[VariantResult], taxa: Sequence[str], found: Noise | None, seeds: Sequence[object],
             header: Mapping[str, str]) -> str:  # fmt: skip
    """The seeded ablation table: mean Δ with its pooled 95% interval, overall and per taxon, against the sign the
    write-ups report; the metric's bootstrap half-width and the seed spread under it."""
    lines = [f"- {k}: {v}" for k, v in header.items()]
    head = ["variant", "kind", "overrides", "score", "Δ (95% CI)", *(f"Δ {t}" for t in taxa), "seed sd of Δ",
            "published", "reproduced?"]  # fmt: skip
    lines += ["", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in rows:
        overall = (r.effects or {}).get(OVERALL)
        sets = ", ".join(f"`{k}={v}`" for k, v in r.overrides.items()) or "(committed params)"
        score = f"{np.mean(r.scores):.4f}" if r.scores else "n/a"
        name = r.variant + ("" if r.status == "ok" else f" ({r.status})")
        if r.kind == "baseline":
            cells = [name, "baseline", sets, score, "—", *("—" for _ in taxa), "", "", ""]
        else:
            sd = f"{overall.seed_sd:.4f}" if overall is not None and np.isfinite(overall.seed_sd) else ""
            cells = [name, r.kind, sets, score, _ci(overall), *(_ci((r.effects or {}).get(t)) for t in taxa), sd,
                     _published(r.published), reproduced(overall, r.published.get("sign"))]  # fmt: skip
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    if found is not None:
        lines.append(f"- metric bootstrap half-width (baseline, 95%, {found.n_files} test soundscapes, mean over "
                     f"{len(found.scores)} seed(s)): {found.half_width:.4f}")  # fmt: skip
        spread = "n/a (one seed)" if not np.isfinite(found.seed_sd) else (
            f"sd {found.seed_sd:.4f}, range {found.seed_range:.4f}")  # fmt: skip
        lines.append(f"- seed spread of the baseline score over seeds {list(seeds)}: {spread} "
                     f"(scores {', '.join(f'{s:.4f}' for s in found.scores)})")  # fmt: skip
    lines.append("- Δ: mean over seeds of variant minus baseline of the same seed; 95% CI: bootstrap drawing the test "
                 "soundscapes (shared by every run) and the seeds; `reproduced?` compares the CI's side of 0 with the "
                 "published sign")  # fmt: skip
    return "\n".join(lines) + "\n"


def frame(rows: Sequence[VariantResult], taxa: Sequence[str]) -> pd.DataFrame:
    """The table as numbers, one row per variant (the MLflow table of the ablation's parent run)."""
    out = []
    for r in rows:
        row: dict[str, object] = {"variant": r.variant, "kind": r.kind, "status": r.status,
                                  "overrides": ", ".join(f"{k}={v}" for k, v in r.overrides.items()),
                                  "score": float(np.mean(r.scores)) if r.scores else float("nan"),
                                  "n_seeds": len(r.scores)}  # fmt: skip
        for group in (OVERALL, *taxa):
            e = (r.effects or {}).get(group)
            suffix = "" if group == OVERALL else f"_{group}"
            for key, value in (("delta", "diff"), ("ci_low", "low"), ("ci_high", "high")):
                row[f"{key}{suffix}"] = getattr(e, value) if e is not None else float("nan")
        overall = (r.effects or {}).get(OVERALL)
        row["published_sign"] = str(r.published.get("sign", ""))
        row["published_rank"] = str(r.published.get("rank", ""))
        row["reproduced"] = "" if r.kind == "baseline" else reproduced(overall, r.published.get("sign"))
        out.append(row)
    return pd.DataFrame(out)
