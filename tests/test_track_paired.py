"""`birdclef report --predictions A --predictions B`: the paired bootstrap says whether a change is real."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from birdclef.metric import paired_bootstrap
from birdclef.track.paired import PredictionsError, compare, read_table
from birdclef.track.report import report_command

CLASSES = ["blue1", "frog1", "cric1", "bird2"]


def _tables(n_files: int = 50) -> dict[str, pd.DataFrame]:
    """Labels and four prediction tables on the same soundscapes: a baseline, a clearly better change, another draw
    of the baseline's model (alike in distribution) and the baseline with its rows shuffled."""
    rng = np.random.default_rng(0)
    ids = [f"scape{f:02d}_{5 * (w + 1)}" for f in range(n_files) for w in range(12)]
    truth = (rng.random((len(ids), len(CLASSES))) < 0.15).astype(int)
    site = np.repeat(rng.normal(0, 1, (n_files, len(CLASSES))), 12, axis=0)  # shared by every model

    def frame(values: np.ndarray) -> pd.DataFrame:
        out = pd.DataFrame(values, columns=CLASSES)
        out.insert(0, "row_id", ids)
        return out

    noise = np.random.default_rng(1).normal(size=truth.shape)
    redraw = np.random.default_rng(2).normal(size=truth.shape)
    return {
        "labels": frame(truth),
        "base": frame(0.8 * truth + site + noise),
        "better": frame(1.8 * truth + site + noise),
        "redraw": frame(0.8 * truth + site + redraw),
    }


def test_compare_matches_the_metric_and_narrows_to_shared_rows_and_species():
    t = _tables()
    extra = t["better"].drop(columns=["bird2"]).iloc[:-12]  # a member without bird2, missing the last soundscape
    [c] = compare(t["labels"].assign(split="test"), [("base", t["base"]), ("narrow", extra)], n_resamples=200)
    assert (c.n_rows, c.n_classes, c.result.n_files) == (49 * 12, 3, 49)
    keep = t["labels"]["row_id"].isin(set(extra["row_id"]))
    cols = ["row_id", *CLASSES[:3]]
    want = paired_bootstrap(t["labels"].loc[keep, cols], t["base"].loc[keep, cols], extra[cols], 200)
    assert c.result == want and c.baseline == "base" and c.name == "narrow"
    with pytest.raises(PredictionsError, match="at least two"):
        compare(t["labels"], [("base", t["base"])])
    with pytest.raises(PredictionsError, match="share 0 row"):
        compare(t["labels"], [("a", t["base"]), ("b", t["base"].assign(row_id="elsewhere_5"))])


def test_report_says_real_for_a_real_change_and_within_noise_otherwise(tmp_path):
    t = _tables()
    for name in ("labels", "base", "redraw"):
        t[name].to_csv(tmp_path / f"{name}.csv", index=False)
    t["better"].to_parquet(tmp_path / "better.parquet")
    (tmp_path / "repo").mkdir()
    subprocess.run(["git", "init", "-q"], cwd=tmp_path / "repo", check=True)
    out = tmp_path / "report.html"
    args = ["--repo", str(tmp_path / "repo"), "--out", str(out), "--labels", str(tmp_path / "labels.csv"),
            "--resamples", "300", "workspace"]  # fmt: skip
    preds = [a for p in ("base.csv", "better.parquet", "redraw.csv") for a in ("--predictions", str(tmp_path / p))]
    res = CliRunner().invoke(report_command, [*args, *preds])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith(f"{tmp_path / 'better.parquet'} vs {tmp_path / 'base.csv'}:")
    assert lines[0].endswith(": real") and "B better in 100.0% of 300 resamples of 50 soundscapes" in lines[0]
    assert lines[1].endswith(": within noise") and lines[2] == str(out)
    html = out.read_text()
    assert "<h2>Paired comparison</h2>" in html and html.count("within noise") == 1 and '"up">real<' in html
    res = CliRunner().invoke(report_command, [*args, "--predictions", str(tmp_path / "base.csv")])
    assert res.exit_code != 0 and "at least two prediction tables" in res.output
    res = CliRunner().invoke(report_command, [*args, *preds, "--predictions", str(tmp_path / "gone.csv")])
    assert res.exit_code != 0 and "gone.csv: no such file" in res.output


def test_a_table_at_a_revision_comes_from_git_or_the_dvc_cache(tmp_path):
    from dvc.repo import Repo

    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "init"], cwd=tmp_path, check=True)
    Repo.init(str(tmp_path)).close()
    (tmp_path / "submission.csv").write_text("row_id,a\nx_5,0.1\n")  # a DVC output: only its .dvc file is in git
    (tmp_path / "labels.csv").write_text("row_id,a\nx_5,1\n")  # git-tracked
    with Repo(str(tmp_path)) as repo:
        repo.add(str(tmp_path / "submission.csv"))
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], cwd=tmp_path, check=True)
    (tmp_path / "submission.csv").write_text("row_id,a\nx_5,0.9\n")
    (tmp_path / "labels.csv").write_text("row_id,a\nx_5,0\n")
    assert read_table("HEAD:submission.csv", tmp_path)["a"].tolist() == [0.1]
    assert read_table("submission.csv", tmp_path)["a"].tolist() == [0.9]
    assert read_table("workspace:submission.csv", tmp_path)["a"].tolist() == [0.9]
    assert read_table("HEAD:labels.csv", tmp_path)["a"].tolist() == [1]
    with pytest.raises(PredictionsError, match="neither in git nor in the DVC cache"):
        read_table("HEAD:nothing.csv", tmp_path)


def test_the_headline_shows_the_stages_intervals(tmp_path):
    root = tmp_path / "repo"
    (root / "metrics").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    (root / "metrics" / "infer.json").write_text(json.dumps({"score": 0.71, "score_ci_low": 0.68,
                                                             "score_ci_high": 0.74}))  # fmt: skip
    out = tmp_path / "r.html"
    res = CliRunner().invoke(report_command, ["workspace", "--repo", str(root), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "0.7100 <span" in out.read_text() and "[0.6800, 0.7400]" in out.read_text()


def test_help_explains_the_paired_comparison():
    res = CliRunner().invoke(report_command, ["--help"])
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert "--predictions PATH|REV:PATH" in text and '"real" when the interval excludes 0' in text
