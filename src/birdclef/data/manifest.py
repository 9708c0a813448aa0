"""The manifest builder: competition layout in, typed recordings / soundscapes / taxonomy tables and quarantine out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pyarrow as pa

from birdclef import schema
from birdclef.data.folds import assign_folds, cap_per_label
from birdclef.data.layout import (
    EXTRA_CSV_REQUIRED,
    EXTRA_DIR,
    TRAIN_CSV_REQUIRED,
    TableError,
    check_layout,
    extra_source_paths,
    list_soundscapes,
    parse_metadata,
    read_csv_strings,
    read_species_columns,
    read_taxonomy,
)
from birdclef.data.params import COMPETITION_SOURCE, AcquireParams
from birdclef.data.probe import probe_many
from birdclef.data.problems import BadInputError, Problem, count_by_reason, quarantine_frame
from birdclef.io import atomic_path

RECORDINGS_SCHEMA = pa.schema(
    [
        ("recording_id", pa.string()),
        ("path", pa.string()),
        ("source", pa.string()),
        ("primary_label", pa.string()),
        ("secondary_labels", pa.list_(pa.string())),
        ("class_name", pa.string()),
        ("rating", pa.float64()),
        ("collection", pa.string()),
        ("author", pa.string()),
        ("latitude", pa.float64()),
        ("longitude", pa.float64()),
        ("duration_s", pa.float64()),
        ("sample_rate", pa.int64()),
        ("channels", pa.int64()),
        ("fold", pa.int64()),
    ]
)
SOUNDSCAPES_SCHEMA = pa.schema(
    [
        ("soundscape_id", pa.string()),
        ("path", pa.string()),
        ("split", pa.string()),
        ("duration_s", pa.float64()),
        ("sample_rate", pa.int64()),
        ("channels", pa.int64()),
    ]
)
TAXONOMY_SCHEMA = pa.schema(
    [
        ("primary_label", pa.string()),
        ("inat_taxon_id", pa.int64()),
        ("scientific_name", pa.string()),
        ("common_name", pa.string()),
        ("class_name", pa.string()),
    ]
)
FILES = {"recordings": "recordings.parquet", "soundscapes": "soundscapes.parquet",
         "taxonomy": "taxonomy.parquet", "quarantine": "quarantine.csv"}


@dataclass
class Manifest:
    """What ``build_manifest`` produced.

    Attributes:
        recordings: one row per usable focal recording, columns ``schema.RECORDINGS``.
        soundscapes: one row per usable soundscape, columns ``schema.SOUNDSCAPES``.
        taxonomy: columns ``schema.TAXONOMY``, rows in sample_submission's species-column order.
        quarantine: problems found (columns kind, row, file, problem); empty when the data is clean.
        stats: flat counts for metrics (rows read, filtered, capped, quarantined by reason, outputs).
        inputs: the parsed competition tables for the data contracts: ``train_csv`` (typed, every row that had
            the right field count), ``taxonomy_csv``, ``sample_submission_csv``.
    """

    recordings: pd.DataFrame
    soundscapes: pd.DataFrame
    taxonomy: pd.DataFrame
    quarantine: pd.DataFrame
    stats: dict[str, float | int] = field(default_factory=dict)
    inputs: dict[str, pd.DataFrame] = field(default_factory=dict)
    soundscape_labels: pd.DataFrame | None = None  # labelled soundscape windows (data.labels), if any


def _read_sources(root: Path, params: AcquireParams) -> tuple[pd.DataFrame, list[Problem], pd.DataFrame, int]:
    """Every source's metadata rows (typed, with source / recording_id / path), their parse problems, the typed
    train.csv for the contracts, and the number of rows dropped for a wrong field count."""
    frames, problems, train_csv, n_unparsed = [], [], pd.DataFrame(), 0
    for source in params.sources:
        if source == COMPETITION_SOURCE:
            csv_path, audio_dir, required, prefix = root / "train.csv", COMPETITION_SOURCE, TRAIN_CSV_REQUIRED, ""
            csv_name = "train.csv"
        else:
            csv_path, audio_dir = extra_source_paths(root, source)
            required, prefix = EXTRA_CSV_REQUIRED, f"{source}/"
            csv_name = f"{EXTRA_DIR}/{source}/{csv_path.name}"
        raw, bad_lines = read_csv_strings(csv_path, required, name=csv_name)
        rows, bad_values = parse_metadata(raw, csv_name)
        problems += bad_lines + bad_values
        n_unparsed += len(bad_lines)
        if source == COMPETITION_SOURCE:
            train_csv = rows.drop(columns=["_line", "row"])
        rows["source"] = source
        rows["recording_id"] = [prefix + f if f else "" for f in rows["filename"]]
        rows["path"] = [f"{audio_dir}/{f}" if f else "" for f in rows["filename"]]
        frames.append(rows)
    return pd.concat(frames, ignore_index=True), problems, train_csv, n_unparsed


def _label_problems(rows: pd.DataFrame, known: set[str]) -> list[Problem]:
    problems = []
    for row, path, primary, secondary in zip(
        rows["row"], rows["path"], rows["primary_label"], rows["secondary_labels"], strict=True
    ):
        faults = []
        if primary and primary not in known:
            faults.append(f"primary_label {primary!r} is not in taxonomy.csv")
        unknown = [s for s in secondary if s not in known]
        if unknown:
            faults.append(f"secondary label(s) {', '.join(map(repr, unknown))} not in taxonomy.csv")
        if faults:
            problems.append(Problem("unknown_label", row, path, "; ".join(faults)))
    return problems


def _duplicate_problems(rows: pd.DataFrame) -> list[Problem]:
    """Repeated recording ids, and file names seen in an earlier source (the same upload scraped twice)."""
    problems = []
    first_id: dict[str, str] = {}
    first_name: dict[str, tuple[str, str, str]] = {}
    for row, path, rid, source in zip(rows["row"], rows["path"], rows["recording_id"], rows["source"], strict=True):
        if not rid:
            continue
        name = PurePosixPath(rid).name
        if rid in first_id:
            problems.append(Problem("duplicate", row, path, f"recording {rid!r} already listed on {first_id[rid]}"))
            continue
        first_id[rid] = row
        seen = first_name.get(name)
        if seen and seen[2] != source:
            problems.append(Problem("duplicate", row, path, f"file name {name!r} already in {seen[1]} ({seen[0]})"))
        elif not seen:
            first_name[name] = (row, path, source)
    return problems


def _probe_problems(
    paths: list[str], rows: list[str], root: Path, params: AcquireParams, progress: bool | None
) -> tuple[list, list[Problem]]:
    infos = probe_many([root / p for p in paths], params.verify_decode, params.workers, progress)
    problems = [
        Problem(info.problem_kind, row, path, info.problem)
        for info, path, row in zip(infos, paths, rows, strict=True)
        if not info.ok
    ]
    return infos, problems


def build_manifest(root: Path, params: AcquireParams, progress: bool | None = None) -> Manifest:
    """Read the competition layout under ``root``, check every row and file, and build the manifest tables.

    Args:
        root: the data root (competition layout).
        params: the acquire params.
        progress: tqdm bar while probing audio (None: only on a terminal).

    Returns:
        The Manifest. Recordings filtered out by min_rating / class_filter / max_files_per_class are dropped
        silently (counted in stats); bad rows and files are quarantined.

    Raises:
        LayoutError, TableError: a missing required file or an unusable taxonomy / sample submission / CSV.
        BadInputError: with ``on_bad: fail``, listing every problem found.
        ValueError: a class_filter name that is not a taxonomy class.
    """
    check_layout(root)
    taxonomy = read_taxonomy(root / "taxonomy.csv")
    species = read_species_columns(root / "sample_submission.csv")
    only_tax = sorted(set(taxonomy["primary_label"]) - set(species))
    only_sub = sorted(set(species) - set(taxonomy["primary_label"]))
    if only_tax or only_sub:
        raise TableError(
            f"taxonomy.csv and sample_submission.csv disagree: only in taxonomy {only_tax}, "
            f"only in sample_submission {only_sub}"
        )
    taxonomy = taxonomy.set_index("primary_label").loc[species].reset_index()
    class_of = dict(zip(taxonomy["primary_label"], taxonomy["class_name"], strict=True))
    classes = sorted(set(class_of.values()))
    bad_classes = sorted(set(params.class_filter) - set(classes))
    if bad_classes:
        raise ValueError(f"acquire.class_filter: {bad_classes} not among the taxonomy classes {classes}")

    rows, problems, train_csv, n_unparsed = _read_sources(root, params)
    problems += _label_problems(rows, set(species)) + _duplicate_problems(rows)
    bad_rows = {p.row for p in problems}

    rated = (rows["rating"] >= params.min_rating) | (rows["rating"] == 0) | rows["rating"].isna()
    in_class = rows["primary_label"].map(lambda lb: lb not in class_of or class_of[lb] in params.class_filter)
    wanted = rated & (in_class if params.class_filter else True)
    clean = ~rows["row"].isin(bad_rows)
    stats = {"csv_rows": len(rows) + n_unparsed,
             "filtered_rating": int((clean & ~rated).sum()),
             "filtered_class": int((clean & rated & ~wanted).sum())}

    # probe what would be used, plus bad rows (so on_bad=fail reports their files too), minus unusable paths
    probe = rows[wanted & (rows["path"] != "")]
    infos, audio_problems = _probe_problems(list(probe["path"]), list(probe["row"]), root, params, progress)
    scapes = list_soundscapes(root)
    scape_infos, scape_problems = _probe_problems(list(scapes["path"]), [""] * len(scapes), root, params, progress)
    seen_ids: dict[str, str] = {}
    for sid, path in zip(scapes["soundscape_id"], scapes["path"], strict=True):
        if sid in seen_ids:
            scape_problems.append(Problem("duplicate", "", path, f"soundscape id {sid!r} also {seen_ids[sid]}"))
        seen_ids.setdefault(sid, path)
    problems += audio_problems + scape_problems
    if problems and params.on_bad == "fail":
        raise BadInputError(problems)

    bad_files = {p.file for p in audio_problems + scape_problems}  # row problems drop rows, not shared files
    probe = probe.assign(
        duration_s=[i.duration_s for i in infos],
        sample_rate=np.array([i.sample_rate for i in infos], dtype=np.int64),
        channels=np.array([i.channels for i in infos], dtype=np.int64),
    )
    keep = probe[~probe["row"].isin(bad_rows) & ~probe["path"].isin(bad_files)]
    capped = cap_per_label(keep, params.max_files_per_class, params.seed)
    stats["capped"] = len(keep) - len(capped)
    recordings = capped.assign(
        class_name=capped["primary_label"].map(class_of),
        fold=assign_folds(capped["primary_label"].tolist(), params.n_folds, params.seed),
    )[list(schema.RECORDINGS)].reset_index(drop=True)

    scapes = scapes.assign(
        duration_s=[i.duration_s for i in scape_infos],
        sample_rate=np.array([i.sample_rate for i in scape_infos], dtype=np.int64),
        channels=np.array([i.channels for i in scape_infos], dtype=np.int64),
    )
    soundscapes = scapes[~scapes["path"].isin(bad_files)][list(schema.SOUNDSCAPES)].reset_index(drop=True)
    quarantine = quarantine_frame(problems)
    stats.update(_output_stats(recordings, soundscapes, taxonomy, problems))
    inputs = {"train_csv": train_csv, "taxonomy_csv": taxonomy,
              "sample_submission_csv": pd.read_csv(root / "sample_submission.csv", dtype={"row_id": str})}
    return Manifest(recordings, soundscapes, taxonomy, quarantine, stats, inputs)


def _output_stats(
    recordings: pd.DataFrame, soundscapes: pd.DataFrame, taxonomy: pd.DataFrame, problems: list[Problem]
) -> dict[str, float | int]:
    present = set(recordings["primary_label"])
    stats: dict[str, float | int] = {
        "recordings": len(recordings),
        "recordings_hours": round(float(recordings["duration_s"].sum()) / 3600, 4),
        "soundscapes_train": int((soundscapes["split"] == "train").sum()),
        "soundscapes_test": int((soundscapes["split"] == "test").sum()),
        "soundscapes_val": int((soundscapes["split"] == "val").sum()),
        "species": len(taxonomy),
        "species_without_recordings": int((~taxonomy["primary_label"].isin(present)).sum()),
        "quarantined_items": len({p.row or p.file for p in problems}),  # CSV rows, and files no row names
    }
    stats.update({f"quarantined_{kind}": n for kind, n in count_by_reason(problems).items()})
    return stats


def _to_arrow(df: pd.DataFrame, arrow_schema: pa.Schema) -> pa.Table:
    columns = {}
    for f in arrow_schema:
        values = df[f.name]
        if pa.types.is_list(f.type):
            columns[f.name] = pa.array([list(v) for v in values], type=f.type)
        elif pa.types.is_integer(f.type):
            columns[f.name] = pa.array(values.astype("Int64"), type=f.type)
        else:
            columns[f.name] = pa.array(values, type=f.type, from_pandas=True)
    return pa.table(columns, schema=arrow_schema)


def manifest_tables(manifest: Manifest) -> dict[str, pa.Table]:
    """recordings / soundscapes / taxonomy as Arrow tables with the declared column types (what gets written)."""
    return {
        "recordings": _to_arrow(manifest.recordings, RECORDINGS_SCHEMA),
        "soundscapes": _to_arrow(manifest.soundscapes, SOUNDSCAPES_SCHEMA),
        "taxonomy": _to_arrow(manifest.taxonomy, TAXONOMY_SCHEMA),
    }


def write_manifest(manifest: Manifest, out_dir: Path) -> None:
    """Write the manifest folder atomically: recordings / soundscapes / taxonomy parquet, quarantine.csv and,
    when set, soundscape_labels.parquet."""
    import pyarrow.parquet as pq

    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for key, table in manifest_tables(manifest).items():
            pq.write_table(table, tmp / FILES[key])
        manifest.quarantine.to_csv(tmp / FILES["quarantine"], index=False)
        if manifest.soundscape_labels is not None:
            manifest.soundscape_labels.to_parquet(tmp / "soundscape_labels.parquet", index=False)


def read_manifest(out_dir: Path) -> dict[str, pd.DataFrame]:
    """Read a manifest folder back: keys recordings, soundscapes, taxonomy, quarantine.

    secondary_labels come back as ``list[str]``; integer columns as int64.
    """
    tables = {key: pd.read_parquet(out_dir / name) for key, name in FILES.items() if name.endswith(".parquet")}
    tables["recordings"]["secondary_labels"] = tables["recordings"]["secondary_labels"].map(list)
    tables["quarantine"] = pd.read_csv(out_dir / FILES["quarantine"], dtype=str, keep_default_na=False)
    return tables
