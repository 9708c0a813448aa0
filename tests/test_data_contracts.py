"""Tests of birdclef.data.contracts: GX suites catch broken tables and tell input suites from manifest suites."""

from test_data_fixture import make_competition_layout

from birdclef.data.contracts import check_contracts
from birdclef.data.manifest import build_manifest, manifest_tables
from birdclef.data.params import AcquireParams


def test_contracts_name_what_broke(tmp_path):
    m = build_manifest(make_competition_layout(tmp_path / "data"), AcquireParams(n_folds=3), progress=False)
    recordings = manifest_tables(m)["recordings"].to_pandas()
    recordings.loc[0, "duration_s"] = 0.0
    recordings.loc[1, "fold"] = 7
    recordings.loc[2, "secondary_labels"] = ["nosuch"]
    train_csv = m.inputs["train_csv"].copy()
    train_csv.loc[3, "rating"] = 6.0
    train_csv.loc[4, "filename"] = train_csv.loc[5, "filename"]
    tables = {"train_csv": train_csv, "sample_submission_csv": m.inputs["sample_submission_csv"],
              "taxonomy_csv": m.inputs["taxonomy_csv"], "recordings": recordings,
              "soundscapes": manifest_tables(m)["soundscapes"].to_pandas()}
    report = check_contracts(tables, m.taxonomy, n_folds=3)
    failures = "\n".join(report.failures)
    for part in ("recordings: expect_column_values_to_be_between(duration_s): 1 unexpected value(s), e.g. 0.0",
                 "recordings: expect_column_values_to_be_between(fold): 1 unexpected value(s), e.g. 7",
                 "recordings_secondary_labels: expect_column_values_to_be_in_set(secondary_label)",
                 "train_csv: expect_column_values_to_be_between(rating)",
                 "train_csv: expect_column_values_to_be_unique(filename)"):
        assert part in failures
    assert report.checks_failed == 5 and not report.manifest_ok
    metrics = report.metrics()
    assert metrics["checks_failed_train_csv"] == 2 and metrics["checks_failed_sample_submission_csv"] == 0
    assert metrics["checks_run"] == report.checks_run > 40

    clean = check_contracts({"train_csv": m.inputs["train_csv"], "recordings": manifest_tables(m)["recordings"]
                             .to_pandas()}, m.taxonomy, n_folds=3)
    assert clean.manifest_ok and clean.checks_failed == 0 and set(clean.checks) == {
        "train_csv", "train_csv_secondary_labels", "recordings", "recordings_secondary_labels"}


def test_blanked_filenames_of_malformed_rows_are_no_duplicates(tmp_path):
    m = build_manifest(make_competition_layout(tmp_path / "data"), AcquireParams(n_folds=3), progress=False)
    train_csv = m.inputs["train_csv"].copy()
    train_csv.loc[[1, 2], "filename"] = ""  # two rows whose filename was no relative path (skip mode quarantines)
    report = check_contracts({"train_csv": train_csv}, m.taxonomy, n_folds=3)
    assert report.checks["train_csv"][1] == 0, report.failures
    train_csv.loc[3, "filename"] = train_csv.loc[4, "filename"]  # a real duplicate still fails
    report = check_contracts({"train_csv": train_csv}, m.taxonomy, n_folds=3)
    assert report.failures == [
        f"train_csv: expect_column_values_to_be_unique(filename): 2 unexpected value(s), e.g. "
        f"{train_csv.loc[3, 'filename']!r}, {train_csv.loc[3, 'filename']!r}"]


def test_data_docs_are_the_same_bytes_for_the_same_data(tmp_path):
    m = build_manifest(make_competition_layout(tmp_path / "data"), AcquireParams(n_folds=3), progress=False)
    tables = {"taxonomy_csv": m.inputs["taxonomy_csv"], "train_csv": m.inputs["train_csv"]}
    sites = []
    for run in ("first", "second"):
        check_contracts(tables, m.taxonomy, n_folds=3, report_dir=tmp_path / run)
        files = [p for p in (tmp_path / run).rglob("*") if p.is_file()]
        sites.append({p.relative_to(tmp_path / run): p.read_bytes() for p in files})
    assert sites[0] == sites[1]  # no render time, validation time or random element id left
    pages = [text.decode() for path, text in sites[0].items() if path.suffix == ".html"]
    assert any("validations" in str(path) for path in sites[0]) and len(pages) > 3
    assert not any("?d=" in page for page in pages)
    assert any("1970-01-01" in page for page in pages)  # the fixed run time
