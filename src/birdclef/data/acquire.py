"""The acquire stage as a function: build the manifest, check the data contracts, write metrics and outputs."""

from __future__ import annotations

import sys
from pathlib import Path

from birdclef.data.contracts import ContractError, check_contracts
from birdclef.data.labels import soundscape_labels
from birdclef.data.manifest import build_manifest, manifest_tables, write_manifest
from birdclef.data.params import AcquireParams
from birdclef.io import write_metrics


def run_acquire(
    data: Path,
    params: AcquireParams,
    out: Path,
    metrics: Path,
    timings: Path,
    report: Path,
    progress: bool | None = None,
) -> dict[str, float | int]:
    """Run the acquire stage.

    Args:
        data: data root in the competition layout.
        params: the acquire params.
        out: manifest folder to write (recordings / soundscapes / taxonomy parquet, quarantine.csv).
        metrics: data-quality JSON to write (flat counts).
        timings: the stage's timing JSON to write (its wall time).
        report: folder for the great-expectations data docs.
        progress: tqdm bar while probing audio (None: only on a terminal).

    Returns:
        The metrics written.

    Raises:
        BadInputError: ``on_bad: fail`` and bad rows or files; nothing is written.
        ContractError: the manifest broke its own contract; metrics and report are written, the manifest is not.
    """
    manifest = build_manifest(data, params, progress)
    written = {key: table.to_pandas() for key, table in manifest_tables(manifest).items()}
    tables = {**manifest.inputs, "recordings": written["recordings"], "soundscapes": written["soundscapes"]}
    contracts = check_contracts(tables, manifest.taxonomy, params.n_folds, report)
    manifest.soundscape_labels = soundscape_labels(data, manifest.taxonomy["primary_label"].tolist())
    quality = {**manifest.stats, **contracts.metrics()}
    quality["labelled_soundscape_windows"] = int((manifest.soundscape_labels["split"] == "test").sum())
    quality["labelled_val_windows"] = int((manifest.soundscape_labels["split"] == "val").sum())
    write_metrics(quality, metrics, timings)
    for line in contracts.failures:
        print(f"data contract failed: {line}", file=sys.stderr)
    if not contracts.manifest_ok:
        raise ContractError("the manifest broke its data contract (see above and the data docs in " f"{report})")
    write_manifest(manifest, out)
    return quality
