"""`birdclef report`: one self-contained HTML page (inline SVG, no scripts, no CDN) comparing revisions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path

import click
import pandas as pd

from birdclef.io import atomic_path
from birdclef.metric import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, ScoringError
from birdclef.track.history import WORKSPACE, Revision, RevisionError
from birdclef.track.paired import Comparison, PredictionsError, as_html, as_text, compare, read_table
from birdclef.track.report_data import (
    HISTORY_GLOBS,
    PER_CLASS_GLOBS,
    RevisionData,
    collect,
    read_taxonomy,
    taxon_scores,
)
from birdclef.track.svg import bar_chart, line_chart

KAGGLE_BUDGET_MINUTES = 90.0  # CPU-only inference limit of the competition
NA = '<p class="na">not available</p>'
CSS = """
body{font-family:system-ui,-apple-system,sans-serif;margin:24px;color:#1a202c}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #e2e8f0;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #e2e8f0;padding:3px 8px;text-align:right}th{background:#f7fafc}
td.k,th.k{text-align:left}.na{color:#718096;font-style:italic}
.up{color:#2f855a}.down{color:#c53030}.over{color:#c53030;font-weight:600}
svg.chart{margin:6px 12px 6px 0;background:#fff;max-width:100%;height:auto}svg.chart text{font-size:10px;fill:#2d3748}
svg.chart .ctitle{font-size:12px;font-weight:600}svg.chart .grid{stroke:#edf2f7}
svg.chart .axes{fill:none;stroke:#a0aec0}details{margin:8px 0}
"""


def _num(v: float | None, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.{digits}f}" if isinstance(v, float) and not float(v).is_integer() else f"{v:g}"


def _delta(v: float | None, base: float | None) -> str:
    if v is None or base is None or not (math.isfinite(v) and math.isfinite(base)) or v == base:
        return ""
    d = v - base
    return f' <span class="{"up" if d > 0 else "down"}">({d:+.4f})</span>'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], key_cols: int = 1) -> str:
    head = "".join(f'<th class="{"k" if i < key_cols else ""}">{escape(h)}</th>' for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"k" if i < key_cols else ""}">{c}</td>' for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _compare_rows(keys: Sequence[str], values: Sequence[dict[str, float]]) -> list[list[str]]:
    """One row per key: the value in each revision and its change from the first revision."""
    rows = []
    for key in keys:
        base = values[0].get(key) if values else None
        rows.append([escape(key)] + [_num(v.get(key)) + (_delta(v.get(key), base) if i else "")
                                     for i, v in enumerate(values)])  # fmt: skip
    return rows


def _headline(d: RevisionData) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, members in d.train.items():
        for metric in ("val_auc", "soundscape_auc"):
            vals = [m[metric] for m in members.values() if metric in m]
            if vals:
                out[f"train it{k} {metric} (mean of {len(vals)} member{'s' if len(vals) > 1 else ''})"] = sum(
                    vals
                ) / len(vals)
    for name, doc in (("ensemble", d.ensemble), ("infer", d.infer)):
        if isinstance(doc.get("score"), int | float):
            out[f"{name} score (test soundscapes)"] = float(doc["score"])
    return out


def _headline_ci(d: RevisionData) -> dict[str, tuple[float, float]]:
    """The 95% bootstrap intervals the stages wrote beside the headline scores (revisions before them: none)."""
    out: dict[str, tuple[float, float]] = {}
    for name, doc in (("ensemble", d.ensemble), ("infer", d.infer)):
        low, high = doc.get("score_ci_low"), doc.get("score_ci_high")
        if isinstance(low, int | float) and isinstance(high, int | float):
            out[f"{name} score (test soundscapes)"] = (float(low), float(high))
    return out


def section_summary(data: Sequence[RevisionData]) -> str:
    revs = _table(
        ["revision", "commit", "date", "subject"],
        [[escape(d.rev.label), escape(d.rev.sha[:12]), escape(d.rev.date[:19]), escape(d.rev.subject)] for d in data],
    )
    heads = [_headline(d) for d in data]
    keys = list(dict.fromkeys(k for h in heads for k in h))
    rows = _compare_rows(keys, heads)
    cis = [_headline_ci(d) for d in data]
    for key, row in zip(keys, rows, strict=True):  # the score's own sampling error beside it
        for j, ci in enumerate(cis):
            if key in ci:
                row[1 + j] += f' <span class="na">[{ci[key][0]:.4f}, {ci[key][1]:.4f}]</span>'
    headline = _table(["metric", *[d.rev.label for d in data]], rows) if keys else NA
    if any(cis):
        headline += ('<p class="na">[ , ]: 95% bootstrap interval over the test soundscapes. Overlapping intervals '
                     "do not mean no change: the paired test (--predictions A --predictions B) decides.</p>")
    flats = [d.flat() for d in data]
    all_keys = sorted({k for f in flats for k in f})
    every = _table(["metric", *[d.rev.label for d in data]], _compare_rows(all_keys, flats)) if all_keys else NA
    problems = [f"<li>{escape(d.rev.label)}: {escape(p)}</li>" for d in data for p in d.problems]
    return (
        f"<h2>Revisions</h2>{revs}<h2>Headline metrics</h2>{headline}"
        f"<details><summary>All metrics ({len(all_keys)})</summary>{every}</details>"
        + (f"<p>Unreadable files:</p><ul>{''.join(problems)}</ul>" if problems else "")
    )


def section_taxa(data: Sequence[RevisionData]) -> str:
    scored = [taxon_scores(d) for d in data]
    taxa = sorted({t for _, s in scored for t in s})
    if not taxa:
        return f"<h2>Per-taxon AUC</h2>{NA}"
    header = ["taxon", *[f"{d.rev.label} ({src or 'n/a'})" for d, (src, _) in zip(data, scored, strict=True)]]
    table = _table(header, _compare_rows(taxa, [s for _, s in scored]))
    chart = bar_chart(taxa, [(d.rev.label, [s.get(t) for t in taxa]) for d, (_, s) in zip(data, scored, strict=True)],
                      "AUC per taxon class", "AUC")  # fmt: skip
    return f"<h2>Per-taxon AUC</h2>{table}{chart}"


def section_per_class(data: Sequence[RevisionData]) -> str:
    tables = [(d.rev.label, d.per_class) for d in data if d.per_class is not None]
    if not tables:
        return f"<h2>Per-class AUC</h2>{NA}"
    merged: pd.DataFrame | None = None
    for label, df in tables:
        part = df.rename(columns={"auc": label})
        merged = part if merged is None else merged.merge(part, on=["label", "taxon"], how="outer")
    assert merged is not None
    labels = [label for label, _ in tables]
    merged = merged.sort_values(["taxon", labels[-1]], na_position="last")
    rows = []
    for _, r in merged.iterrows():
        vals = [None if pd.isna(r[c]) else float(r[c]) for c in labels]
        rows.append([escape(str(r["label"])), escape(str(r["taxon"]) or "—")]
                    + [_num(v) + (_delta(v, vals[0]) if i else "") for i, v in enumerate(vals)])  # fmt: skip
    missing = [d.rev.label for d in data if d.per_class is None]
    note = f'<p class="na">not available for: {escape(", ".join(missing))}</p>' if missing else ""
    return f"<h2>Per-class AUC</h2>{note}{_table(['species', 'taxon', *labels], rows, key_cols=2)}"


def section_curves(data: Sequence[RevisionData]) -> str:
    charts = []
    for metric, title in (("val_auc", "Validation AUC (focal fold)"), ("soundscape_auc", "Test-soundscape AUC"),
                          ("train_loss", "Training loss")):  # fmt: skip
        series = [
            (f"{d.rev.label} · {name}", h["epoch"].astype(float).tolist(), h[metric].astype(float).tolist())
            for d in data for name, h in d.histories.items() if metric in h.columns
        ]  # fmt: skip
        if series:
            charts.append(line_chart(series, title, "epoch", metric))
    return f"<h2>Learning curves</h2>{''.join(charts) if charts else NA}"


def section_pseudo(data: Sequence[RevisionData]) -> str:
    """One column per (revision, round), one row per statistic: long stat names stay readable."""
    cols = [(d.rev.label, k, r) for d in data for k, r in d.pseudo.items()]
    if not cols:
        return f"<h2>Pseudo labels per iteration</h2>{NA}"
    stats = sorted({s for _, _, r in cols for s in r})
    rows = [[escape(s), *[_num(r.get(s)) for _, _, r in cols]] for s in stats]
    table = _table(["statistic", *[f"{label} · round it{k}" for label, k, _ in cols]], rows)
    return f"<h2>Pseudo labels per iteration</h2>{table}"


def section_ensemble(data: Sequence[RevisionData]) -> str:
    rows = []
    for d in data:
        for key, w in sorted(d.ensemble.items()):
            if key.startswith("weight_"):
                member = key[len("weight_") :]
                rows.append([escape(d.rev.label), escape(member), _num(float(w)),
                             _num(d.ensemble.get(f"member_{member}_score"))])  # fmt: skip
    if not rows:
        return f"<h2>Ensemble members and weights</h2>{NA}"
    table = _table(["revision", "member", "weight", "member score"], rows, key_cols=2)
    return f"<h2>Ensemble members and weights</h2>{table}"


def section_speed(data: Sequence[RevisionData]) -> str:
    keys = ["seconds_per_soundscape_minute", "projected_kaggle_minutes", "peak_rss_mb", "startup_seconds", "cores",
            "n_files", "n_failed"]  # fmt: skip
    present = [k for k in keys if any(k in d.infer for d in data)]
    if not present:
        return f"<h2>Inference speed</h2>{NA}"
    rows = []
    for d in data:
        cells = [escape(d.rev.label)]
        for k in present:
            v = d.infer.get(k)
            cell = _num(float(v)) if isinstance(v, int | float) else "—"
            if k == "projected_kaggle_minutes" and isinstance(v, int | float) and v > KAGGLE_BUDGET_MINUTES:
                cell = f'<span class="over">{cell} (over the {KAGGLE_BUDGET_MINUTES:g}-min limit)</span>'
            cells.append(cell)
        rows.append(cells)
    return f"<h2>Inference speed</h2>{_table(['revision', *present], rows)}"


def render(
    data: Sequence[RevisionData], title: str = "birdclef report", comparisons: Sequence[Comparison] = ()
) -> str:
    """The complete HTML page for the collected revisions (+ the paired comparison of prediction tables)."""
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = section_summary(data) + as_html(comparisons) + "".join(
        f(data) for f in (section_taxa, section_per_class, section_curves, section_pseudo, section_ensemble,
                          section_speed)
    )  # fmt: skip
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{CSS}</style></head><body><h1>{escape(title)}</h1>"
        f'<p class="na">Generated {made}; changes are relative to the first revision.</p>{body}</body></html>\n'
    )


def build_report(
    repo: Path,
    revs: Sequence[str],
    out: Path,
    taxonomy: Path | None = None,
    history_globs: Sequence[str] = HISTORY_GLOBS,
    per_class_globs: Sequence[str] = PER_CLASS_GLOBS,
    comparisons: Sequence[Comparison] = (),
) -> Path:
    """Collect ``revs`` of the git repository ``repo`` and write the HTML report to ``out`` atomically.

    Raises:
        RevisionError: a revision git does not know.
    """
    taxa = read_taxonomy(taxonomy)
    data = [collect(Revision.open(repo, r), history_globs, per_class_globs, taxa) for r in revs]
    page = render(data, f"birdclef report: {' vs '.join(d.rev.label for d in data)}", comparisons)
    with atomic_path(out) as tmp:
        tmp.write_text(page)
    return out


@click.command("report")
@click.argument("revs", nargs=-1)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default="reports/report.html", show_default=True
)
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path), default=".", show_default=True)
@click.option(
    "--taxonomy",
    type=click.Path(dir_okay=False, path_type=Path),
    default="data/taxonomy.csv",
    show_default=True,
    help="Species -> taxon class, for per-class tables that lack it.",
)
@click.option(
    "--history",
    "history_globs",
    multiple=True,
    default=HISTORY_GLOBS,
    show_default=True,
    help="Globs of per-epoch history CSVs (repeatable).",
)
@click.option(
    "--per-class",
    "per_class_globs",
    multiple=True,
    default=PER_CLASS_GLOBS,
    show_default=True,
    help="Globs of per-class AUC CSVs (label, [class_name], auc).",
)
@click.option(
    "--predictions",
    "predictions",
    multiple=True,
    metavar="PATH|REV:PATH",
    help="A prediction table (submission.csv, build/ensemble/member_scores/*.parquet) to compare; repeat it: the "
    "first is the baseline A, each further one a change B. REV:PATH reads the file as it was at a git revision "
    "(DVC outputs from the DVC cache).",
)
@click.option(
    "--labels",
    type=click.Path(dir_okay=False, path_type=Path),
    default="data/test_labels.csv",
    show_default=True,
    help="0/1 labels in submission format that --predictions are scored against.",
)
@click.option("--resamples", type=click.IntRange(min=1), default=BOOTSTRAP_RESAMPLES, show_default=True,
              help="Bootstrap resamples of the labelled soundscapes.")  # fmt: skip
@click.option("--seed", type=int, default=BOOTSTRAP_SEED, show_default=True, help="Fixes the resampled files.")
def report_command(
    revs: tuple[str, ...],
    out: Path,
    repo: Path,
    taxonomy: Path,
    history_globs: tuple[str, ...],
    per_class_globs: tuple[str, ...],
    predictions: tuple[str, ...],
    labels: Path,
    resamples: int,
    seed: int,
) -> None:
    """Write one self-contained HTML report comparing REVS (git revisions or `workspace`; default: HEAD and the
    workspace): metrics, per-taxon and per-class AUC, learning curves, pseudo labels, ensemble, speed.

    \b
    Is a change real? Give two or more --predictions on the same labelled soundscapes:
      birdclef report --predictions HEAD~1:submission.csv --predictions submission.csv
    prints, per change B against the baseline A, B - A with its paired 95% bootstrap interval (soundscapes
    resampled with replacement, both scored on the same draw), the share of resamples where B beats A and a
    verdict: "real" when the interval excludes 0, "within noise" when it does not. The report gets the same table.
    """
    comparisons: list[Comparison] = []
    try:
        if predictions:
            truth = read_table(str(labels), repo)
            comparisons = compare(truth, [(p, read_table(p, repo)) for p in predictions], resamples, seed)
        path = build_report(repo, list(revs) or ["HEAD", WORKSPACE], out, repo / taxonomy, history_globs,
                            per_class_globs, comparisons)  # fmt: skip
    except (RevisionError, PredictionsError, ScoringError) as err:
        raise click.ClickException(str(err)) from err
    if comparisons:
        click.echo(as_text(comparisons))
    click.echo(f"{path}")
