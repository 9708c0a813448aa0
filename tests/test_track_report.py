"""The HTML report: revisions compared from git history, missing pieces shown as such, rendered in Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from birdclef.track.report import build_report, report_command

from track_fixtures import chromium, png_is_blank, render_page, sh

SPECIES = {"blue1": "Aves", "frog1": "Amphibia", "cric1": "Insecta"}


def _write(root: Path, rel: str, content: object) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))


def _history(epochs: int, scale: float) -> str:
    rows = ["member,epoch,train_loss,lr,val_auc,soundscape_auc"]
    rows += [f"it0_sed,{e},{1 / e:.4f},0.001,{0.5 + scale * e / 10:.4f},{0.45 + scale * e / 12:.4f}"
             for e in range(1, epochs + 1)]  # fmt: skip
    return "\n".join(rows) + "\n"


def _results(root: Path, scale: float, per_class: bool, minutes: float, timing_files: bool = False) -> None:
    """One revision's metrics; ``timing_files``: speed in metrics/timing/ (as the stages write it now)."""
    _write(root, "metrics/train/it0.json", {"sed": {"val_auc": 0.6 * scale, "soundscape_auc": 0.55 * scale,
                                                    "soundscape_auc_Aves": 0.6 * scale}})  # fmt: skip
    _write(root, "metrics/train/it0_history.csv", _history(4, scale))
    _write(root, "metrics/pseudo/it0.json", {"windows": 240, "windows_kept": 200, "mean_max_prob": 0.3 * scale})
    _write(root, "metrics/ensemble.json", {"score": 0.7 * scale, "weight_it0_sed": 0.6, "weight_it1_sed": 0.4,
                                           "member_it0_sed_score": 0.66, "member_it1_sed_score": 0.68})  # fmt: skip
    scores = {"score": 0.71 * scale, "score_aves": 0.8 * scale, "score_insecta": 0.5}
    speed = {"seconds_per_soundscape_minute": 1.5, "projected_kaggle_minutes": minutes, "cores": 4}
    if timing_files:
        _write(root, "metrics/infer.json", scores)
        _write(root, "metrics/timing/infer.json", {**speed, "stage_seconds": 30.0})
        _write(root, "metrics/timing/train_it0.json", {"sed": {"train_seconds": 140.3}, "stage_seconds": 150.0})
    else:  # an older revision's layout: speed among the scores
        _write(root, "metrics/infer.json", {**scores, **speed})
        for name in ("infer", "train_it0"):
            (root / "metrics" / "timing" / f"{name}.json").unlink(missing_ok=True)
    if per_class:
        lines = ["primary_label,auc"] + [f"{s},{0.5 + 0.1 * i * scale:.3f}" for i, s in enumerate(SPECIES)]
        _write(root, "metrics/infer_per_class.csv", "\n".join(lines) + "\n")


@pytest.fixture
def repo(tmp_path):
    """Three commits: nothing yet, first results, better results with per-class AUC; a malformed workspace file."""
    root = tmp_path / "repo"
    root.mkdir()
    sh(["git", "init", "-q"], root)
    _write(root, "README", "x")
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "empty"], root)
    _results(root, 1.0, per_class=False, minutes=120.0, timing_files=True)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "baseline results"], root)
    _results(root, 1.1, per_class=True, minutes=40.0)
    _write(root, "data/taxonomy.csv", "primary_label,class_name\n" + "".join(f"{k},{v}\n" for k, v in SPECIES.items()))
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "focal loss"], root)
    _write(root, "metrics/pseudo/it1.json", "{not json")
    return root


def test_report_compares_revisions_with_tables_and_inline_charts(repo, tmp_path):
    out = build_report(repo, ["HEAD~1", "HEAD"], tmp_path / "r.html", repo / "data" / "taxonomy.csv")
    html = out.read_text()
    assert "<script" not in html and not re.search(r'(src|href)="https?:', html)
    for heading in ("Headline metrics", "Per-taxon AUC", "Per-class AUC", "Learning curves",
                    "Pseudo labels per iteration", "Ensemble members and weights", "Inference speed"):  # fmt: skip
        assert f"<h2>{heading}</h2>" in html
    # infer score 0.71 -> 0.781, shown with its change
    assert "0.7100" in html and "0.7810" in html and "(+0.0710)" in html
    # per-class AUC: taxon classes joined from taxonomy.csv; the first revision has none
    assert "<td class=\"k\">frog1</td><td class=\"k\">Amphibia</td>" in html
    assert "not available for: HEAD~1" in html
    # per-taxon from infer, the over-budget projection (HEAD~1's timing file) flagged
    assert "Insecta" in html and "over the 90-min limit" in html
    assert "train/it0 · sed · train_seconds" in html  # a member's timing joins its scores
    assert html.count("<svg") >= 4  # taxon bars + three learning-curve charts
    assert html.count("<path") >= 6  # two revisions x three curves
    assert "it0_sed" in html and "0.6000" in html and "windows_kept" in html


def test_report_shows_missing_pieces_as_not_available(repo, tmp_path):
    html = build_report(repo, ["HEAD~2", "workspace"], tmp_path / "r.html").read_text()
    empty = html.split("<h2>Per-taxon AUC</h2>")[0]
    assert "Headline metrics" in empty
    assert "metrics/pseudo/it1.json: not valid JSON" in html  # the workspace's broken file is reported


def test_report_with_nothing_at_all_renders_every_section_as_not_available(repo, tmp_path):
    html = build_report(repo, ["HEAD~2"], tmp_path / "r.html").read_text()
    # headline, all metrics, taxa, per class, curves, pseudo, ensemble, speed
    assert html.count('<p class="na">not available</p>') == 8


def test_report_command_defaults_and_unknown_revision(repo, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli.html"
    res = runner.invoke(report_command, ["--repo", str(repo), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "HEAD (" in out.read_text() and "workspace" in out.read_text()
    res = runner.invoke(report_command, ["nosuchrev", "--repo", str(repo), "--out", str(out)])
    assert res.exit_code != 0 and "unknown revision 'nosuchrev'" in res.output


@pytest.mark.skipif(chromium() is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(repo, tmp_path):
    page = build_report(repo, ["HEAD~1", "HEAD", "workspace"], tmp_path / "report.html", repo / "data/taxonomy.csv")
    dom, shot, console = render_page(page, tmp_path)
    assert console == []
    assert dom.count("<table") >= 6 and dom.count("<svg") >= 4 and "Learning curves" in dom
    assert shot.stat().st_size > 10_000 and not png_is_blank(shot)
