"""Tests of birdclef.data.acquire: what run_acquire writes when the input or the manifest contract is bad."""

import pytest
from test_data_fixture import make_competition_layout, truncate_file

from birdclef.data import acquire
from birdclef.data.contracts import ContractError, ContractReport
from birdclef.data.params import AcquireParams
from birdclef.data.problems import BadInputError
from birdclef.io import read_json


def _paths(tmp_path):
    metrics = tmp_path / "metrics"
    return (tmp_path / "build" / "acquire", metrics / "data_quality.json", metrics / "timing" / "acquire.json",
            tmp_path / "reports" / "docs")


def test_bad_input_with_fail_writes_nothing(tmp_path):
    data = make_competition_layout(tmp_path / "data")
    truncate_file(data / "train_audio/frog1/XC8.ogg")
    out, metrics, timings, report = _paths(tmp_path)
    with pytest.raises(BadInputError, match="train.csv:9, train_audio/frog1/XC8.ogg: truncated"):
        acquire.run_acquire(data, AcquireParams(), out, metrics, timings, report, progress=False)
    assert not out.exists() and not metrics.exists() and not timings.exists() and not report.exists()


def test_a_broken_manifest_contract_keeps_the_manifest_out(tmp_path, monkeypatch):
    data = make_competition_layout(tmp_path / "data")
    out, metrics, timings, report = _paths(tmp_path)
    seen = {}

    def fake_contracts(tables, taxonomy, n_folds, report_dir):
        seen.update(tables=sorted(tables), n_folds=n_folds)
        return ContractReport(checks={"recordings": (26, 1), "train_csv": (9, 0)},
                              failures=["recordings: expect_column_values_to_be_unique(path): 1 unexpected"])

    monkeypatch.setattr(acquire, "check_contracts", fake_contracts)
    with pytest.raises(ContractError, match="broke its data contract"):
        acquire.run_acquire(data, AcquireParams(n_folds=4), out, metrics, timings, report, progress=False)
    assert seen == {"tables": ["recordings", "sample_submission_csv", "soundscapes", "taxonomy_csv", "train_csv"],
                    "n_folds": 4}
    quality = read_json(metrics)
    assert quality["checks_failed"] == 1 and quality["checks_failed_recordings"] == 1 and quality["recordings"] == 8
    assert not out.exists()
    assert set(read_json(timings)) == {"stage_seconds"}  # the data-quality counts hold no timing
