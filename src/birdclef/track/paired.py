"""`birdclef report --predictions A --predictions B`: is B's score really different from A's, or within noise?

Two prediction tables (submission.csv, a ``member_scores/*.parquet`` of the ensemble stage) on the same labelled
soundscapes are scored by the paired bootstrap of :func:`birdclef.metric.paired_bootstrap`: files resampled with
replacement, both scored on the same draw, the difference's 95% interval. A change whose interval excludes 0 is
"real"; otherwise it is "within noise" (the test files cannot tell the two apart). Unpaired intervals overlap far
more often than paired ones exclude 0, so comparing two ``score_ci_*`` ranges by eye under-reports real changes.

A table is a path, or ``REV:PATH`` for a file as it was at a git revision: DVC outputs (submission.csv,
build/ensemble/...) are read from the DVC cache through ``dvc.api``, git-tracked files through git.
"""

from __future__ import annotations

import io
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from birdclef.metric import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, ROW_ID, Paired, paired_bootstrap

WORKSPACE = "workspace"


class PredictionsError(ValueError):
    """Prediction tables or labels that cannot be compared; the message names the file."""


@dataclass(frozen=True)
class Comparison:
    """One prediction table against the baseline (the first), on the rows and species both share with the labels.

    Attributes:
        baseline, name: the two tables as named on the command line.
        result: the paired bootstrap (``diff`` = name's score minus the baseline's).
        n_rows, n_classes: labelled windows and species columns compared.
    """

    baseline: str
    name: str
    result: Paired
    n_rows: int
    n_classes: int


def read_table(spec: str, repo: Path = Path(".")) -> pd.DataFrame:
    """A ``row_id`` + score-column table from a CSV or parquet path, or ``REV:PATH`` (see the module doc).

    Raises:
        PredictionsError: no such file (at that revision), or no ``row_id`` column.
    """
    path, rev = Path(spec), None
    if not (repo / path).is_file() and not path.is_file() and ":" in spec:
        rev, name = spec.split(":", 1)
        path, rev = Path(name), (None if rev == WORKSPACE else rev)
    parquet = path.suffix == ".parquet"
    if rev is None:
        local = path if path.is_file() else repo / path
        if not local.is_file():
            raise PredictionsError(f"{spec}: no such file")
        frame = pd.read_parquet(local) if parquet else pd.read_csv(local, dtype={ROW_ID: str})
    else:
        raw = _at_revision(repo, rev, path, spec)
        frame = pd.read_parquet(io.BytesIO(raw)) if parquet else pd.read_csv(io.BytesIO(raw), dtype={ROW_ID: str})
    if ROW_ID not in frame.columns:
        raise PredictionsError(f"{spec}: no {ROW_ID!r} column")
    return frame


def _at_revision(repo: Path, rev: str, path: Path, spec: str) -> bytes:
    """The file's bytes at ``rev``: from git when it is tracked there, else from the DVC cache (a stage output)."""
    shown = subprocess.run(["git", "show", f"{rev}:{path.as_posix()}"], cwd=repo, capture_output=True)
    if shown.returncode == 0:
        return shown.stdout
    import dvc.api  # slow to import: only for a DVC output at a revision

    try:
        with dvc.api.open(path.as_posix(), repo=str(repo), rev=rev, mode="rb") as f:
            return f.read()
    except Exception as err:  # dvc raises many kinds (no such rev, path, cache entry): all mean "cannot read"
        why = f"{path} is neither in git nor in the DVC cache at revision {rev!r}"
        raise PredictionsError(f"{spec}: {why}: {err}") from err


def compare(
    labels: pd.DataFrame,
    tables: Sequence[tuple[str, pd.DataFrame]],
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> list[Comparison]:
    """Every table after the first against the first, by the paired bootstrap over soundscapes.

    Args:
        labels: 0/1 labels in submission format (``row_id`` + species; other columns are ignored).
        tables: ``(name, predictions)``; at least two. Each is scored on the labelled rows all of them predict and
            on the species columns all of them have (a taxon-group member narrows the comparison to its classes).
        n_resamples, seed: of the bootstrap; one seed resamples the same files for every comparison.

    Raises:
        PredictionsError: fewer than two tables, or no labelled row or species shared by all.
    """
    if len(tables) < 2:
        raise PredictionsError("a comparison needs at least two prediction tables (the first is the baseline)")
    rows = set(labels[ROW_ID].astype(str))
    for _, t in tables:
        rows &= set(t[ROW_ID].astype(str))
    cols = [c for c in labels.columns if c != ROW_ID and pd.api.types.is_numeric_dtype(labels[c])
            and all(c in t.columns for _, t in tables)]  # fmt: skip
    if not rows or not cols:
        raise PredictionsError(f"the tables and labels share {len(rows)} row(s) and {len(cols)} species column(s)")
    keep = labels[ROW_ID].astype(str).isin(rows)
    truth = labels.loc[keep, [ROW_ID, *cols]].assign(row_id=lambda f: f[ROW_ID].astype(str)).reset_index(drop=True)

    def part(t: pd.DataFrame) -> pd.DataFrame:
        t = t.assign(row_id=t[ROW_ID].astype(str))
        return t[t[ROW_ID].isin(rows)][[ROW_ID, *cols]]

    (base_name, base), out = tables[0], []
    for name, t in tables[1:]:
        found = paired_bootstrap(truth, part(base), part(t), n_resamples, seed)
        out.append(Comparison(base_name, name, found, len(truth), len(cols)))
    return out


def as_text(comparisons: Sequence[Comparison]) -> str:
    """One line per comparison: scores, difference with its 95% interval, P(B > A) and the verdict."""
    lines = []
    for c in comparisons:
        r = c.result
        lines.append(
            f"{c.name} vs {c.baseline}: {r.score_b:.4f} vs {r.score_a:.4f}, diff {r.diff:+.4f} "
            f"(95% CI {r.low:+.4f} .. {r.high:+.4f}; B better in {100 * r.share_b_better:.1f}% of {r.n_resamples} "
            f"resamples of {r.n_files} soundscapes, {c.n_rows} windows, {c.n_classes} species): {r.verdict}"
        )
    return "\n".join(lines)


def as_html(comparisons: Sequence[Comparison]) -> str:
    """The report's section: one table row per comparison (empty string when there is none)."""
    if not comparisons:
        return ""
    head = ["baseline (A)", "change (B)", "score A", "score B", "B − A", "95% CI", "B better", "verdict", "files"]
    body = "".join(
        "<tr>" + "".join(f"<td>{v}</td>" for v in (
            escape(c.baseline), escape(c.name), f"{c.result.score_a:.4f}", f"{c.result.score_b:.4f}",
            f"{c.result.diff:+.4f}", f"{c.result.low:+.4f} .. {c.result.high:+.4f}",
            f"{100 * c.result.share_b_better:.1f}%",
            f'<span class="{_verdict_class(c.result)}">{escape(c.result.verdict)}</span>', f"{c.result.n_files}",
        )) + "</tr>"
        for c in comparisons
    )  # fmt: skip
    note = (
        '<p class="na">Paired bootstrap over the labelled soundscapes (files resampled with replacement, both '
        "tables scored on the same draw, "
        f"{comparisons[0].result.n_resamples} resamples): real = the 95% interval of B − A excludes 0.</p>"
    )
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    return f"<h2>Paired comparison</h2>{note}<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def _verdict_class(r: Paired) -> str:
    return "" if not r.real else ("up" if np.sign(r.diff) > 0 else "down")
