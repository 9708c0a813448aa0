"""Reading the Kaggle BirdCLEF+ competition layout: required paths, taxonomy, sample submission, metadata CSVs."""

from __future__ import annotations

import ast
import csv
import math
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import pandas as pd

from birdclef.data.problems import Problem

REQUIRED_FILES = ("taxonomy.csv", "train.csv", "sample_submission.csv")
REQUIRED_DIRS = ("train_audio",)
SOUNDSCAPE_DIRS = {"train": "train_soundscapes", "test": "test_soundscapes", "val": "val_soundscapes"}
"""Split name -> folder. All optional: Kaggle ships test_soundscapes empty and DVC does not track empty folders;
``val_soundscapes`` holds labelled validation soundscapes (labels in val_labels.csv) where a dataset has them."""
AUDIO_SUFFIXES = (".ogg", ".wav", ".flac", ".mp3")
EXTRA_DIR = "extra"
"""Folder under the data root that holds extra sources, one sub-folder each (see ``ingest_kaggle``)."""
EXTRA_METADATA_NAMES = ("metadata.csv", "train_metadata.csv", "train.csv")
"""Metadata CSV names looked for in an extra source folder, first match wins (earlier BirdCLEF years use
train_metadata.csv)."""

TAXONOMY_COLUMNS = ("primary_label", "inat_taxon_id", "scientific_name", "common_name", "class_name")
TRAIN_CSV_REQUIRED = ("primary_label", "secondary_labels", "filename", "rating")
EXTRA_CSV_REQUIRED = ("primary_label", "filename")
NUMERIC_COLUMNS = {"rating": (0.0, 5.0), "latitude": (-90.0, 90.0), "longitude": (-180.0, 180.0)}
"""Numeric metadata columns and their valid closed ranges."""


class LayoutError(FileNotFoundError):
    """The data root lacks required competition files; the message names every missing path."""


class TableError(ValueError):
    """A CSV that cannot be used at all (undecodable, missing columns, broken taxonomy); names file and row."""


def missing_paths(root: Path) -> list[str]:
    """Required competition paths absent under ``root`` (``"train_audio/"`` style for folders)."""
    missing = [name for name in REQUIRED_FILES if not (root / name).is_file()]
    missing += [f"{name}/" for name in REQUIRED_DIRS if not (root / name).is_dir()]
    return missing


def check_layout(root: Path) -> None:
    """Raise ``LayoutError`` naming every required file or folder missing under ``root``."""
    if not root.is_dir():
        raise LayoutError(f"{root}: data root is not a folder")
    missing = missing_paths(root)
    if missing:
        raise LayoutError(
            f"{root}: not in the BirdCLEF competition layout; missing {', '.join(missing)} "
            f"(expected {', '.join(REQUIRED_FILES + tuple(d + '/' for d in REQUIRED_DIRS))})"
        )


def read_csv_strings(
    path: Path, required: tuple[str, ...] = (), name: str | None = None
) -> tuple[pd.DataFrame, list[Problem]]:
    """Read a CSV as strings, keeping each row's line number and reporting rows with the wrong field count.

    Args:
        path: the CSV file.
        required: columns the header must have.
        name: how messages and ``Problem.row`` name the file (default: its file name).

    Returns:
        The well-formed rows (every column ``str``, plus ``_line``: the row's line number, header = 1) and one
        ``malformed`` Problem per row whose field count differs from the header's.

    Raises:
        TableError: undecodable bytes, a CSV syntax error, an empty file or missing required columns; the message
            names the file and line.
    """
    name = name or path.name
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise TableError(f"{name} line {line}: not UTF-8 ({err.reason} at byte {err.start})") from err
    reader = csv.reader(text.splitlines(keepends=True))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise TableError(f"{name}: empty file, expected a header row") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise TableError(f"{name}: missing column(s) {', '.join(missing)}; header has {', '.join(header)}")
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise TableError(f"{name}: duplicate column(s) {', '.join(dupes)} in the header")
    rows: list[list[str]] = []
    lines: list[int] = []
    problems: list[Problem] = []
    try:
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank line
            if len(fields) != len(header):
                problems.append(
                    Problem("malformed", f"{name}:{reader.line_num}", "",
                            f"{len(fields)} fields, the header has {len(header)}")
                )
                continue
            rows.append(fields)
            lines.append(reader.line_num)
    except csv.Error as err:
        raise TableError(f"{name} line {reader.line_num}: CSV syntax error: {err}") from err
    df = pd.DataFrame(rows, columns=header, dtype=str)
    df["_line"] = pd.Series(lines, dtype="int64")
    return df, problems


def read_taxonomy(path: Path) -> pd.DataFrame:
    """Read taxonomy.csv: columns ``TAXONOMY_COLUMNS`` (inat_taxon_id nullable Int64, the rest ``str``).

    Raises:
        TableError: naming every bad row (wrong field count, empty or duplicate primary_label, empty class_name,
            non-integer inat_taxon_id).
    """
    df, problems = read_csv_strings(path, TAXONOMY_COLUMNS)
    errors = [str(p) for p in problems]
    df = df.copy()
    for col in TAXONOMY_COLUMNS:
        df[col] = df[col].str.strip()
    seen: dict[str, int] = {}
    for label, cls, taxon, line in zip(
        df["primary_label"], df["class_name"], df["inat_taxon_id"], df["_line"], strict=True
    ):
        where = f"{path.name}:{line}"
        if not label:
            errors.append(f"{where}: empty primary_label")
        elif label in seen:
            errors.append(f"{where}: duplicate primary_label {label!r} (first on line {seen[label]})")
        else:
            seen[label] = line
        if not cls:
            errors.append(f"{where}: empty class_name for {label!r}")
        if taxon and not re.fullmatch(r"-?\d+(\.0*)?", taxon):
            errors.append(f"{where}: inat_taxon_id {taxon!r} is not an integer")
    if errors:
        raise TableError(f"{path.name}: {len(errors)} problem(s):\n  " + "\n  ".join(errors))
    if df.empty:
        raise TableError(f"{path.name}: no species rows")
    taxon_ids = pd.to_numeric(df["inat_taxon_id"].replace("", None)).astype("Int64")
    out = df[list(TAXONOMY_COLUMNS)].copy()
    out["inat_taxon_id"] = taxon_ids
    return out.reset_index(drop=True)


def read_species_columns(path: Path) -> list[str]:
    """Species columns of sample_submission.csv, in file order (the submission's column order).

    Raises:
        TableError: when the first column is not ``row_id``, or a species column is empty or repeated.
    """
    with path.open(encoding="utf-8-sig", newline="") as f:
        header = next(csv.reader(f), None)
    if not header or header[0].strip() != "row_id":
        raise TableError(f"{path.name}: first column must be row_id, got {header[:1] if header else 'nothing'}")
    species = [h.strip() for h in header[1:]]
    dupes = sorted({s for s in species if species.count(s) > 1})
    if dupes or "" in species:
        raise TableError(f"{path.name}: species columns must be unique and non-empty (repeated: {dupes})")
    return species


def parse_secondary_labels(value: object) -> list[str]:
    """Parse a secondary_labels cell into a list of labels (order kept, duplicates and blanks dropped).

    Accepts the competition's Python-list strings (``"['a', 'b']"``, ``"[]"``, ``'["a"]'``), and the quirks seen in
    scraped metadata: empty or ``nan`` cells, a bare label, ``"['']"``, space-, comma- or semicolon-separated
    labels, a list missing its commas (``"['a' 'b']"``).

    Raises:
        ValueError: when the cell cannot be read as labels (e.g. an unbalanced bracket or a nested structure).
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    text = str(value).strip()
    if text.lower() in ("", "nan", "none", "[]"):
        return []
    bare = text
    if text[0] in "[(":
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            parsed = None
        quoted = [a or b for a, b in re.findall(r"'([^']*)'|\"([^\"]*)\"", text)]
        if isinstance(parsed, list | tuple | set) and len(parsed) == len(quoted):
            if not all(isinstance(v, str) for v in parsed):
                raise ValueError(f"secondary_labels {text!r}: every element must be a string")
            return _unique_labels(parsed)
        if text[-1] not in "])" or text.count("[") + text.count("(") != 1:
            raise ValueError(f"secondary_labels {text!r} is not a list of labels")
        # "['a' 'b']" (numpy-style: Python would glue the strings into 'ab') or "[a, b]": take the quoted or
        # bare words between the brackets.
        if quoted:
            return _unique_labels(quoted)
        bare = text[1:-1].strip()
    items = re.split(r"[\s,;]+", bare)
    if not all(re.fullmatch(r"[\w.-]*", item) for item in items):
        raise ValueError(f"secondary_labels {text!r} is not a list of labels")
    return _unique_labels(items)


def _unique_labels(items: Iterable[str]) -> list[str]:
    labels: list[str] = []
    for item in items:
        label = item.strip()
        if label and label not in labels:
            labels.append(label)
    return labels


def _relative_posix(filename: str) -> str | None:
    # Windows separators appear in hand-made CSVs; absolute paths and ".." would escape the audio folder.
    name = filename.strip().replace("\\", "/")
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or name.endswith("/"):
        return None
    return str(path)


def parse_metadata(df: pd.DataFrame, csv_name: str) -> tuple[pd.DataFrame, list[Problem]]:
    """Type the rows of a metadata CSV (train.csv or an extra source's) and report malformed values.

    Args:
        df: rows from ``read_csv_strings`` (must have primary_label, filename and ``_line``).
        csv_name: name used in ``Problem.row`` (e.g. ``"train.csv"``).

    Returns:
        A copy with: ``row`` (``"<csv_name>:<line>"``), primary_label and filename stripped (filename as a
        relative POSIX path), secondary_labels as ``list[str]`` (primary label removed), rating / latitude /
        longitude as float (empty rating = 0.0 "no rating", empty or ``nan`` lat/lon = NaN, malformed = NaN; a
        ``nan`` rating is malformed: it is not the competition's 0 for unrated), the other columns unchanged;
        plus one ``malformed`` Problem per bad row (all of its faults in one message).
    """
    out = df.copy()
    out["row"] = [f"{csv_name}:{line}" for line in out["_line"]]
    faults: dict[int, list[str]] = {}

    def fault(i: int, text: str) -> None:
        faults.setdefault(i, []).append(text)

    primary = out["primary_label"].str.strip()
    for i, label in enumerate(primary):
        if not label:
            fault(i, "empty primary_label")
    out["primary_label"] = primary
    filenames = []
    for i, name in enumerate(out["filename"]):
        rel = _relative_posix(name)
        if rel is None:
            fault(i, f"filename {name!r} is not a relative file path")
        filenames.append(rel or "")
    out["filename"] = filenames
    secondary: list[list[str]] = []
    raw_secondary = out["secondary_labels"] if "secondary_labels" in out else [""] * len(out)
    for i, (cell, label) in enumerate(zip(raw_secondary, primary, strict=True)):
        try:
            secondary.append([s for s in parse_secondary_labels(cell) if s != label])
        except ValueError as err:
            fault(i, str(err))
            secondary.append([])
    out["secondary_labels"] = secondary
    for col, (low, high) in NUMERIC_COLUMNS.items():
        values = []
        cells = out[col] if col in out else [""] * len(out)
        for i, cell in enumerate(cells):
            text = str(cell).strip()
            if text == "" or text.lower() == "nan" and col != "rating":
                values.append(0.0 if col == "rating" else math.nan)  # an empty rating is "not rated" (0)
                continue
            try:
                number = float(text)
            except ValueError:
                number = math.nan
            if not low <= number <= high:  # also catches NaN and inf
                # "nan" is not the competition's 0 for unrated: a broken export, reported rather than guessed at
                unrated = " (an unrated recording has rating 0 or an empty cell)" if col == "rating" else ""
                fault(i, f"{col} {text!r} is not a number in [{low:g}, {high:g}]{unrated}")
                number = math.nan
            values.append(number)
        out[col] = pd.Series(values, index=out.index, dtype="float64")
    for col in ("collection", "author"):
        out[col] = out[col].str.strip() if col in out else ""
    problems = [
        Problem("malformed", out["row"].iat[i], "", "; ".join(texts)) for i, texts in sorted(faults.items())
    ]
    return out, problems


def list_soundscapes(root: Path) -> pd.DataFrame:
    """Audio files of the soundscape folders: columns soundscape_id (file stem), path (relative), split."""
    rows = []
    for split, folder in SOUNDSCAPE_DIRS.items():
        base = root / folder
        if not base.is_dir():
            continue
        for path in sorted(base.iterdir()):
            if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES:
                rows.append((path.stem, f"{folder}/{path.name}", split))
    return pd.DataFrame(rows, columns=["soundscape_id", "path", "split"], dtype=str)


def extra_source_paths(root: Path, name: str) -> tuple[Path, str]:
    """Metadata CSV and audio folder (relative to ``root``) of the extra source ``name``.

    The source lives in ``<root>/extra/<name>/``: a metadata CSV (``EXTRA_METADATA_NAMES``) whose ``filename``
    column is relative to the source folder, or to its ``train_audio/`` sub-folder when there is one.

    Raises:
        LayoutError: naming the folder or the metadata names looked for.
    """
    folder = root / EXTRA_DIR / name
    if not folder.is_dir():
        raise LayoutError(f"extra source {name!r}: folder {folder} does not exist (add it with --extra)")
    csv_path = next((folder / n for n in EXTRA_METADATA_NAMES if (folder / n).is_file()), None)
    if csv_path is None:
        raise LayoutError(f"extra source {name!r}: {folder} has no metadata CSV ({', '.join(EXTRA_METADATA_NAMES)})")
    audio = f"{EXTRA_DIR}/{name}/train_audio" if (folder / "train_audio").is_dir() else f"{EXTRA_DIR}/{name}"
    return csv_path, audio
