"""DVC experiments and plots on a tiny project: exp run -S, exp show, metrics/params diff, offline plots HTML."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from track_fixtures import REPO, chromium, png_is_blank, render_page, sh, tiny_project

TEMPLATE = REPO / ".dvc" / "plots" / "offline.html"


def test_offline_template_has_the_dvc_placeholder_and_no_remote_script():
    page = TEMPLATE.read_text()
    assert "{plot_divs}" in page
    assert "{scripts}" not in page  # DVC would put its CDN <script src> tags there
    assert "<script src" not in page and "cdn." not in page
    assert "window.vegaEmbed" in page


def test_repo_config_points_dvc_plots_at_the_offline_template():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / ".dvc" / "config")
    assert (REPO / ".dvc" / cfg["plots"]["html_template"]).resolve() == TEMPLATE.resolve()


def test_repo_plots_definitions_are_well_formed():
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    for entry in doc.get("plots", []):
        [(name, spec)] = entry.items()
        assert isinstance(name, str) and name
        if spec:
            assert set(spec) <= {"x", "y", "template", "title", "x_label", "y_label"}, name
            assert spec.get("template", "linear") in {"linear", "simple", "scatter", "bar_horizontal", "smooth"}


@pytest.mark.integration
def test_exp_run_set_param_shows_in_exp_show_metrics_diff_and_offline_plots(tmp_path):
    root = tiny_project(tmp_path / "proj")
    (root / ".dvc" / "plots").mkdir(exist_ok=True)
    shutil.copy(TEMPLATE, root / ".dvc" / "plots" / "offline.html")
    sh(["dvc", "config", "plots.html_template", "plots/offline.html"], root)
    sh(["dvc", "repro", "-q"], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "baseline results"], root)
    base = json.loads((root / "metrics" / "train.json").read_text())

    sh(["dvc", "exp", "run", "-S", "train.epochs=5", "-n", "five"], root)

    shown = json.loads(sh(["dvc", "exp", "show", "--json"], root).stdout)
    [baseline] = [e for e in shown if e["rev"] != "workspace"]
    [exp] = [r for group in baseline["experiments"] for r in group["revs"] if r["name"] == "five"]
    exp_metrics = exp["data"]["metrics"]["metrics/train.json"]["data"]
    assert exp["data"]["params"]["params.yaml"]["data"]["train"]["epochs"] == 5
    assert exp_metrics["val_auc"] > base["val_auc"]
    assert baseline["data"]["metrics"]["metrics/train.json"]["data"]["val_auc"] == base["val_auc"]

    diff = json.loads(sh(["dvc", "metrics", "diff", "--json"], root).stdout)
    change = diff["metrics/train.json"]["val_auc"]
    assert change["old"] == base["val_auc"] and change["new"] == exp_metrics["val_auc"]
    assert change["diff"] == pytest.approx(exp_metrics["val_auc"] - base["val_auc"])
    params = json.loads(sh(["dvc", "params", "diff", "--json"], root).stdout)
    assert params["params.yaml"]["train.epochs"] == {"old": 3, "new": 5, "diff": 2}

    sh(["dvc", "plots", "diff", "HEAD", "-o", "plots_out"], root)
    page = root / "plots_out" / "index.html"
    html = page.read_text()
    assert "cdn.jsdelivr" not in html and "<script src" not in html
    assert html.count("vegaEmbed('#") >= 1 and '"rev": "HEAD"' in html and '"rev": "workspace"' in html
    if chromium() is None:
        pytest.skip("chromium is not installed: the offline page was not rendered")
    dom, shot, console = render_page(page, tmp_path)
    assert console == []
    assert dom.count("<path") >= 2  # one line per revision
    assert "HEAD" in dom and "workspace" in dom  # the legend
    assert not png_is_blank(shot)
