"""The leaderboard ledger: Kaggle scores per commit in leaderboard.csv, joined with the commit's local metrics."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import click
import pandas as pd

from birdclef.track.history import Revision, RevisionError, metric_at

COLUMNS = ["commit", "bundle_hash", "split", "score", "date", "note"]
SPLITS = ("public", "private")
DEFAULT_CV = "metrics/train/it*.json:val_auc"
DEFAULT_LOCAL = "metrics/infer.json:score|metrics/ensemble.json:score|metrics/train/it*.json:soundscape_auc"


def bundle_hash(manifest: Path) -> str:
    """A 16-hex content id of a Kaggle bundle from its MANIFEST.json.

    The sha256 of the manifest's sorted ``files`` table (path -> sha256) when it has one, so two bundles with the
    same files share an id whatever else the manifest records; else the sha256 of the manifest bytes.
    """
    raw = manifest.read_bytes()
    try:
        files = json.loads(raw).get("files")
    except (json.JSONDecodeError, AttributeError):
        files = None
    blob = json.dumps(files, sort_keys=True).encode() if isinstance(files, dict) else raw
    return hashlib.sha256(blob).hexdigest()[:16]


def read_ledger(path: Path) -> pd.DataFrame:
    """The ledger as a DataFrame with :data:`COLUMNS` (empty when the file does not exist).

    Raises:
        ValueError: naming the file when its header lacks a column.
    """
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    df = pd.read_csv(path, dtype={"commit": str, "bundle_hash": str, "note": str}, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a leaderboard ledger, missing column(s) {', '.join(missing)}")
    df["score"] = pd.to_numeric(df["score"], errors="coerce")
    return df[COLUMNS]


def record(
    ledger: Path,
    score: float,
    split: str,
    commit: str,
    bundle: str = "",
    note: str = "",
    date: str | None = None,
) -> dict[str, str]:
    """Append one leaderboard result to the ledger (header written when the file is new); return the row.

    Args:
        ledger: leaderboard.csv (git-tracked).
        score: the Kaggle score, in [0, 1].
        split: ``public`` or ``private``.
        commit: full sha of the commit that made the submission.
        bundle: the bundle's content id (:func:`bundle_hash`), "" when unknown.
        note: free text.
        date: ISO 8601 timestamp (now, UTC, by default).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not (0.0 <= score <= 1.0) or math.isnan(score):
        raise ValueError(f"a leaderboard AUC lies in [0, 1], got {score}")
    row = {
        "commit": commit,
        "bundle_hash": bundle,
        "split": split,
        "score": f"{score:.6g}",
        "date": date or datetime.now(UTC).isoformat(timespec="seconds"),
        "note": note,
    }
    new = not ledger.exists() or ledger.stat().st_size == 0
    if not new:
        read_ledger(ledger)  # refuse to append to something that is not a ledger
    ledger.parent.mkdir(parents=True, exist_ok=True)
    with ledger.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        if new:
            writer.writeheader()
        writer.writerow(row)
    return row


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); None with fewer than 3 pairs or a constant side."""
    df = pd.DataFrame({"x": x, "y": y}).dropna()
    if len(df) < 3:
        return None
    rx, ry = df["x"].rank(), df["y"].rank()
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(rx.corr(ry))


def joined(ledger: pd.DataFrame, repo: Path, cv_ref: str = DEFAULT_CV, local_ref: str = DEFAULT_LOCAL) -> pd.DataFrame:
    """The ledger with each commit's local metrics, read from git history: ``cv_auc`` and ``local_auc``.

    A commit git does not know (or a file it lacks) gives NaN, never an error.
    """
    cache: dict[str, tuple[float | None, float | None]] = {}
    cv, local = [], []
    for commit in ledger["commit"]:
        if commit not in cache:
            try:
                rev = Revision.open(repo, commit)
                cache[commit] = (metric_at(rev, cv_ref), metric_at(rev, local_ref))
            except RevisionError:
                cache[commit] = (None, None)
        cv.append(cache[commit][0])
        local.append(cache[commit][1])
    out = ledger.copy()
    out["cv_auc"] = pd.to_numeric(pd.Series(cv, index=out.index, dtype=object), errors="coerce")
    out["local_auc"] = pd.to_numeric(pd.Series(local, index=out.index, dtype=object), errors="coerce")
    return out


def correlations(table: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """Spearman correlation of the leaderboard score with ``cv_auc`` and ``local_auc``, per split."""
    out = {}
    for split, part in table.groupby("split", sort=True):
        out[str(split)] = {
            "cv_auc": spearman(part["score"], part["cv_auc"]),
            "local_auc": spearman(part["score"], part["local_auc"]),
            "n": int(part["score"].notna().sum()),
        }
    return out


def _resolve_commit(repo: Path, commit: str) -> str:
    try:
        return Revision.open(repo, commit).sha
    except RevisionError as err:
        raise click.BadParameter(str(err), param_hint="--commit") from err


@click.group("lb")
def lb_group() -> None:
    """The leaderboard ledger (leaderboard.csv): record Kaggle scores per commit, compare them with local metrics."""


@lb_group.command("record")
@click.argument("score", type=float)
@click.option("--split", type=click.Choice(SPLITS), required=True, help="Which Kaggle leaderboard.")
@click.option("--commit", default=None, help="Commit that made the submission [default: the manifest's, else HEAD].")
@click.option(
    "--manifest",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The submitted bundle's MANIFEST.json (bundle hash, commit).",
)
@click.option("--note", default="", help="Free text, e.g. the Kaggle submission name.")
@click.option("--ledger", type=click.Path(dir_okay=False, path_type=Path), default="leaderboard.csv", show_default=True)
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path), default=".", show_default=True)
@click.option(
    "--mlflow/--no-mlflow",
    "use_mlflow",
    default=True,
    show_default=True,
    help="Also log the score on the commit's `infer` run in MLflow, when one exists.",
)
def record_command(
    score: float,
    split: str,
    commit: str | None,
    manifest: Path | None,
    note: str,
    ledger: Path,
    repo: Path,
    use_mlflow: bool,
) -> None:
    """Append a leaderboard SCORE for a commit to the ledger (then `git add leaderboard.csv`)."""
    bundle = ""
    if manifest is not None:
        bundle = bundle_hash(manifest)
        if commit is None:
            commit = json.loads(manifest.read_text()).get("git_commit") or None
    sha = _resolve_commit(repo, commit or "HEAD")
    try:
        row = record(ledger, score, split, sha, bundle, note)
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"{ledger}: {split} {row['score']} for {sha[:12]}" + (f" (bundle {bundle})" if bundle else ""))
    if use_mlflow:
        from birdclef.track.runs import log_on_commit_run

        run_id = log_on_commit_run(
            sha, {f"lb_{split}": score}, {f"lb_{split}_note": note, "bundle_hash": bundle}, root=repo.resolve()
        )
        click.echo(f"MLflow: logged lb_{split} on infer run {run_id}" if run_id else
                   f"MLflow: no infer run found for {sha[:12]}; ledger only")  # fmt: skip


@lb_group.command("show")
@click.option("--ledger", type=click.Path(dir_okay=False, path_type=Path), default="leaderboard.csv", show_default=True)
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path), default=".", show_default=True)
@click.option(
    "--cv",
    "cv_ref",
    default=DEFAULT_CV,
    show_default=True,
    help="CV metric as FILE:KEY (a glob takes the last file; `|` separates fallbacks).",
)
@click.option(
    "--local", "local_ref", default=DEFAULT_LOCAL, show_default=True, help="Local test-soundscape metric as FILE:KEY."
)
@click.option("--format", "fmt", type=click.Choice(["text", "csv", "markdown"]), default="text", show_default=True)
def show_command(ledger: Path, repo: Path, cv_ref: str, local_ref: str, fmt: str) -> None:
    """Print the ledger joined with each commit's CV and local AUC, and their Spearman correlation (3+ entries)."""
    try:
        table = joined(read_ledger(ledger), repo, cv_ref, local_ref)
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    if table.empty:
        click.echo(f"{ledger}: no entries yet (birdclef lb record SCORE --split public)")
        return
    view = table.assign(commit=table["commit"].str[:10])
    if fmt == "csv":
        click.echo(view.to_csv(index=False), nl=False)
    elif fmt == "markdown":
        cols = list(view.columns)
        click.echo("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
        for _, r in view.iterrows():
            click.echo("| " + " | ".join("" if pd.isna(v) else str(v) for v in r) + " |")
    else:
        click.echo(view.to_string(index=False, na_rep="n/a", float_format=lambda v: f"{v:.4f}"))
    for split, corr in correlations(table).items():
        if corr["n"] < 3:
            click.echo(f"{split}: {corr['n']} entr{'y' if corr['n'] == 1 else 'ies'}; Spearman needs 3 or more")
            continue
        parts = [f"{name} {'n/a' if corr[name] is None else f'{corr[name]:+.3f}'}" for name in ("cv_auc", "local_auc")]
        click.echo(f"{split}: Spearman(leaderboard, ·) over {corr['n']} entries: " + ", ".join(parts))
