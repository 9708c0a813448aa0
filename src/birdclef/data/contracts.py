"""Data contracts with great-expectations 1.x: suites for the competition tables and the manifest, data docs."""

from __future__ import annotations

import contextlib
import datetime
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from birdclef import schema
from birdclef.data.layout import TAXONOMY_COLUMNS
from birdclef.io import atomic_path

TRAIN_CSV_COLUMNS = ("primary_label", "secondary_labels", "type", "filename", "collection", "rating", "url",
                     "latitude", "longitude", "scientific_name", "common_name", "author", "license")
TAXON_CLASSES = ("Aves", "Amphibia", "Insecta", "Mammalia")
MANIFEST_SUITES = ("recordings", "recordings_secondary_labels", "soundscapes")
"""Suites on the stage's own output: a failure there is a bug, so the stage stops (input suites only report)."""
DOCS_TIME = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
"""The run time the data docs show: fixed, so that the site is a function of the data (when runs happened is in
MLflow); a timestamp there changed the docs' hash in dvc.lock on every rerun."""
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@dataclass
class ContractReport:
    """Outcome of every suite.

    Attributes:
        checks: suite name -> (expectations run, expectations failed).
        failures: one line per failed expectation: suite, expectation, column, unexpected count and examples.
    """

    checks: dict[str, tuple[int, int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def checks_run(self) -> int:
        return sum(run for run, _ in self.checks.values())

    @property
    def checks_failed(self) -> int:
        return sum(failed for _, failed in self.checks.values())

    @property
    def manifest_ok(self) -> bool:
        """True when no expectation on the manifest failed."""
        return all(self.checks.get(name, (0, 0))[1] == 0 for name in MANIFEST_SUITES)

    def metrics(self) -> dict[str, int]:
        """Flat counts for metrics/data_quality.json (stable keys)."""
        out = {"checks_run": self.checks_run, "checks_failed": self.checks_failed}
        out.update({f"checks_failed_{name}": failed for name, (_, failed) in sorted(self.checks.items())})
        return out


class ContractError(ValueError):
    """The manifest broke its own contract; the message lists the failed expectations."""


def _exploded(df: pd.DataFrame, key: str) -> pd.DataFrame:
    """One row per (key, secondary label), for the label-in-taxonomy expectation."""
    pairs = [(k, label) for k, labels in zip(df[key], df["secondary_labels"], strict=True) for label in labels]
    return pd.DataFrame(pairs, columns=[key, "secondary_label"], dtype=str)


def _suites(tables: dict[str, pd.DataFrame], taxonomy: pd.DataFrame, n_folds: int) -> dict[str, list[Any]]:
    """Expectations per suite (suite name = table name in ``tables``)."""
    import great_expectations as gx

    E = gx.expectations
    species = taxonomy["primary_label"].tolist()
    classes = sorted(set(taxonomy["class_name"]))

    def shared() -> list[Any]:  # fresh objects per suite: GX refuses an expectation that is in two suites
        return [E.ExpectColumnValuesToBeInSet(column="primary_label", value_set=species),
                E.ExpectColumnValuesToBeBetween(column="rating", min_value=0, max_value=5),
                E.ExpectColumnValuesToBeBetween(column="latitude", min_value=-90, max_value=90),
                E.ExpectColumnValuesToBeBetween(column="longitude", min_value=-180, max_value=180)]

    def types(mapping: dict[str, str]) -> list[Any]:
        return [E.ExpectColumnValuesToBeOfType(column=c, type_=t) for c, t in mapping.items()]

    def not_null(*cols: str) -> list[Any]:
        return [E.ExpectColumnValuesToNotBeNull(column=c) for c in cols]

    def positive(*cols: str) -> list[Any]:
        return [E.ExpectColumnValuesToBeBetween(column=c, min_value=0, strict_min=True) for c in cols]

    suites = {
        "train_csv": [
            E.ExpectTableColumnsToMatchSet(column_set=list(TRAIN_CSV_COLUMNS), exact_match=False),
            E.ExpectTableRowCountToBeBetween(min_value=1),
            *not_null("primary_label", "filename"),
            # a filename that is no relative path is blanked (its row reported malformed): blanks are no duplicates
            E.ExpectColumnValuesToBeUnique(column="filename", row_condition='filename != ""',
                                           condition_parser="pandas"),
            *shared(),
        ],
        "train_csv_secondary_labels": [E.ExpectColumnValuesToBeInSet(column="secondary_label", value_set=species)],
        "taxonomy_csv": [
            E.ExpectTableColumnsToMatchOrderedList(column_list=list(TAXONOMY_COLUMNS)),
            E.ExpectColumnValuesToBeUnique(column="primary_label"),
            *not_null("primary_label", "class_name"),
            E.ExpectColumnValuesToBeInSet(column="class_name", value_set=list(TAXON_CLASSES)),
        ],
        "sample_submission_csv": [
            E.ExpectTableColumnsToMatchOrderedList(column_list=["row_id", *species]),
            E.ExpectColumnValuesToBeUnique(column="row_id"),
            E.ExpectColumnValuesToMatchRegex(column="row_id", regex=r"^.+_\d+$"),
            *not_null("row_id"),
            # no per-species value checks: the values are placeholders, and 206 expectations cost ~15 s
        ],
        "recordings": [
            E.ExpectTableColumnsToMatchOrderedList(column_list=list(schema.RECORDINGS)),
            *types({"rating": "float64", "latitude": "float64", "longitude": "float64", "duration_s": "float64",
                    "sample_rate": "int64", "channels": "int64", "fold": "int64"}),
            *not_null("recording_id", "path", "source", "primary_label", "class_name", "rating", "duration_s"),
            E.ExpectColumnValuesToBeUnique(column="recording_id"),
            E.ExpectColumnValuesToBeUnique(column="path"),
            *shared(),
            E.ExpectColumnValuesToBeInSet(column="class_name", value_set=classes),
            *positive("duration_s", "sample_rate", "channels"),
            E.ExpectColumnValuesToBeBetween(column="fold", min_value=-1, max_value=n_folds - 1),
        ],
        "recordings_secondary_labels": [E.ExpectColumnValuesToBeInSet(column="secondary_label", value_set=species)],
        "soundscapes": [
            E.ExpectTableColumnsToMatchOrderedList(column_list=list(schema.SOUNDSCAPES)),
            *types({"duration_s": "float64", "sample_rate": "int64", "channels": "int64"}),
            E.ExpectColumnValuesToBeUnique(column="soundscape_id"),
            E.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "test", "val"]),
            *positive("duration_s", "sample_rate", "channels"),
        ],
    }
    return {name: suites[name] for name in tables}


def _failure_line(suite: str, result: Any) -> str:
    cfg = result.expectation_config
    res = result.result or {}
    column = cfg.kwargs.get("column")
    what = f"{cfg.type}({column})" if column else cfg.type
    if "unexpected_count" in res:
        examples = ", ".join(map(repr, (res.get("partial_unexpected_list") or [])[:5]))
        return f"{suite}: {what}: {res['unexpected_count']} unexpected value(s), e.g. {examples}"
    return f"{suite}: {what}: observed {res.get('observed_value')!r}"


def check_contracts(
    tables: dict[str, pd.DataFrame], taxonomy: pd.DataFrame, n_folds: int, report_dir: Path | None = None
) -> ContractReport:
    """Validate the tables against their suites with an ephemeral GX context; optionally build data docs.

    Args:
        tables: any of ``train_csv`` (typed train.csv), ``taxonomy_csv``, ``sample_submission_csv``,
            ``recordings``, ``soundscapes`` (as written); ``*_secondary_labels`` tables are derived here.
        taxonomy: the manifest's taxonomy (species in sample_submission order, with class_name).
        n_folds: folds the manifest was split into.
        report_dir: where the GX data-docs site goes (written atomically); None builds none.

    Returns:
        The ContractReport.
    """
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    tables = dict(tables)
    for name in ("train_csv", "recordings"):
        if name in tables:
            key = "filename" if name == "train_csv" else "recording_id"
            tables[f"{name}_secondary_labels"] = _exploded(tables[name], key)
    report = ContractReport()
    with atomic_path(report_dir) if report_dir is not None else contextlib.nullcontext() as site:
        sites = {}
        if site is not None:
            sites["birdclef"] = {"class_name": "SiteBuilder",
                                 "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                                   "base_directory": str(site.resolve())},
                                 "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}}
        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            analytics_enabled=False, progress_bars=ProgressBarsConfig(globally=False), data_docs_sites=sites,
        )
        context = gx.get_context(mode="ephemeral", project_config=config)
        source = context.data_sources.add_pandas("acquire")
        for name, expectations in _suites(tables, taxonomy, n_folds).items():
            batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
            suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
            definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch,
                                                                                    suite=suite))
            checkpoint = context.checkpoints.add(gx.Checkpoint(name=name, validation_definitions=[definition],
                                                               result_format="SUMMARY"))
            result = checkpoint.run(batch_parameters={"dataframe": tables[name]},
                                    run_id=RunIdentifier(run_name="acquire", run_time=DOCS_TIME))
            for suite_result in result.run_results.values():
                failed = [r for r in suite_result.results if not r.success]
                report.checks[name] = (len(suite_result.results), len(failed))
                report.failures += [_failure_line(name, r) for r in failed]
        if site is not None:
            context.build_data_docs()  # once: an UpdateDataDocsAction per checkpoint re-renders the whole site
            _make_deterministic(site)
    return report


def _make_deterministic(site: Path) -> None:
    """Rewrite the site's pages so that the same data gives the same bytes (DVC hashes it into dvc.lock).

    GX stamps pages with the render time (``?d=`` on the logo URL), validation times, and random uuid4 element
    ids: times become :data:`DOCS_TIME`, uuids become ordinals (the same uuid the same ordinal within a page, so
    every ``href="#..."`` still finds its ``id``).
    """
    fixed = DOCS_TIME.strftime("%Y%m%dT%H%M%S.%fZ")
    for page in sorted(site.rglob("*")):
        if page.suffix not in (".html", ".json") or not page.is_file():
            continue
        text = re.sub(r"\?d=\d{8}T\d{6}\.\d{6}Z", "", page.read_text())
        text = re.sub(r"\d{8}T\d{6}\.\d{6}Z", fixed, text)
        page.write_text(_UUID.sub(_Ordinals(), text))


class _Ordinals:
    """``re.sub`` replacement: the n-th distinct uuid met becomes ``00000000-0000-4000-8000-<n>``."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def __call__(self, match: re.Match[str]) -> str:
        return self.seen.setdefault(match.group(0), f"00000000-0000-4000-8000-{len(self.seen):012d}")
