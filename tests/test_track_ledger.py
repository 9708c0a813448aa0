"""The leaderboard ledger: record rows, bundle ids, join with metrics from git history, Spearman correlation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from birdclef.track.ledger import bundle_hash, lb_group, read_ledger, spearman

from track_fixtures import sh


def _commit_metrics(repo: Path, cv: float, local: float | None) -> str:
    (repo / "metrics" / "train").mkdir(parents=True, exist_ok=True)
    # two members: the CV AUC is their mean; the later iteration file wins over it0
    (repo / "metrics" / "train" / "it0.json").write_text(json.dumps({"a": {"val_auc": 0.1}}))
    (repo / "metrics" / "train" / "it1.json").write_text(json.dumps({"a": {"val_auc": cv - 0.01},
                                                                       "b": {"val_auc": cv + 0.01}}))
    if local is None:
        (repo / "metrics" / "infer.json").unlink(missing_ok=True)
    else:
        (repo / "metrics" / "infer.json").write_text(json.dumps({"score": local, "score_aves": local}))
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", f"cv {cv}"], repo)
    return sh(["git", "rev-parse", "HEAD"], repo).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    sh(["git", "init", "-q"], root)
    return root


def _manifest(path: Path, commit: str, files: dict, extra: str = "") -> Path:
    path.write_text(json.dumps({"git_commit": commit, "note": extra, "files": files}))
    return path


def test_record_appends_rows_with_bundle_id_and_commit_from_the_manifest(repo, tmp_path):
    sha = _commit_metrics(repo, 0.8, 0.7)
    files = {"model/a.onnx": {"sha256": "ab" * 32, "bytes": 10}}
    m1 = _manifest(tmp_path / "m1.json", sha, files, "first build")
    m2 = _manifest(tmp_path / "m2.json", sha, files, "rebuilt elsewhere")
    m3 = _manifest(tmp_path / "m3.json", sha, {"model/a.onnx": {"sha256": "cd" * 32, "bytes": 10}})
    assert bundle_hash(m1) == bundle_hash(m2) != bundle_hash(m3)
    ledger = repo / "leaderboard.csv"
    runner = CliRunner()
    common = ["--ledger", str(ledger), "--repo", str(repo), "--no-mlflow"]
    res = runner.invoke(lb_group, ["record", "0.812", "--split", "public", "--manifest", str(m1), "--note", "v1",
                                   *common])
    assert res.exit_code == 0, res.output
    res = runner.invoke(lb_group, ["record", "0.79", "--split", "private", "--commit", "HEAD", *common])
    assert res.exit_code == 0, res.output
    table = read_ledger(ledger)
    assert table["commit"].tolist() == [sha, sha]
    assert table["bundle_hash"].tolist() == [bundle_hash(m1), ""]
    assert table["split"].tolist() == ["public", "private"]
    assert table["score"].tolist() == [0.812, 0.79]
    assert table["note"].tolist() == ["v1", ""]
    assert ledger.read_text().splitlines()[0] == "commit,bundle_hash,split,score,date,note"
    assert not (repo / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["1.3", "--split", "public"], "[0, 1]"),
        (["0.8", "--split", "leader"], "Invalid value for '--split'"),
        (["0.8", "--split", "public", "--commit", "deadbeef"], "unknown revision 'deadbeef'"),
    ],
)
def test_record_rejects_bad_input_with_a_clear_message(repo, args, message):
    _commit_metrics(repo, 0.8, 0.7)
    ledger = repo / "leaderboard.csv"
    res = CliRunner().invoke(lb_group, ["record", *args, "--ledger", str(ledger), "--repo", str(repo), "--no-mlflow"])
    assert res.exit_code != 0 and message in res.output
    assert not ledger.exists()


def test_show_joins_git_history_metrics_and_reports_spearman(repo):
    ledger = repo / "leaderboard.csv"
    runner = CliRunner()
    # LB rises while CV falls (rank correlation -1); local AUC tracks LB (+1); one commit lacks infer.json.
    entries = [(0.90, 0.60, 0.70), (0.85, 0.65, 0.72), (0.80, 0.70, 0.75), (0.75, 0.72, None)]
    for cv, lb, local in entries:
        sha = _commit_metrics(repo, cv, local)
        res = runner.invoke(lb_group, ["record", str(lb), "--split", "public", "--commit", sha, "--ledger",
                                       str(ledger), "--repo", str(repo), "--no-mlflow"])
        assert res.exit_code == 0, res.output
    res = runner.invoke(lb_group, ["show", "--ledger", str(ledger), "--repo", str(repo), "--format", "csv"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","), strict=True)) for line in lines[1 : 1 + len(entries)]]
    assert [float(r["cv_auc"]) for r in rows] == pytest.approx([e[0] for e in entries])
    assert [r["local_auc"] for r in rows[:3]] == ["0.7", "0.72", "0.75"] and rows[3]["local_auc"] == ""
    assert "public: Spearman(leaderboard, ·) over 4 entries: cv_auc -1.000, local_auc +1.000" in res.output

    text = runner.invoke(lb_group, ["show", "--ledger", str(ledger), "--repo", str(repo)]).output
    assert "n/a" in text and "cv_auc" in text


def test_show_with_an_unknown_commit_leaves_its_metrics_empty(repo):
    _commit_metrics(repo, 0.8, 0.7)
    ledger = repo / "leaderboard.csv"
    ledger.write_text("commit,bundle_hash,split,score,date,note\n" + "f" * 40 + ",,public,0.5,2025-01-01,lost\n")
    res = CliRunner().invoke(lb_group, ["show", "--ledger", str(ledger), "--repo", str(repo)])
    assert res.exit_code == 0, res.output
    assert "ffffffffff" in res.output and "Spearman needs 3 or more" in res.output


def test_spearman_uses_average_ranks_and_needs_three_pairs():
    assert spearman([1, 2], [2, 1]) is None
    assert spearman([1, 2, 3], [5, 5, 5]) is None
    assert spearman([1, 2, 3, 4], [10, 20, 20, 40]) == pytest.approx(0.9486832980505138)
