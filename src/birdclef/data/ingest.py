"""Bring a Kaggle competition download (zip or folder) and extra sources into the data root, atomically."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path, PurePosixPath

from birdclef.data.layout import (
    AUDIO_SUFFIXES,
    EXTRA_CSV_REQUIRED,
    EXTRA_DIR,
    EXTRA_METADATA_NAMES,
    REQUIRED_DIRS,
    REQUIRED_FILES,
    SOUNDSCAPE_DIRS,
    LayoutError,
    check_layout,
    parse_metadata,
    read_csv_strings,
)
from birdclef.data.params import COMPETITION_SOURCE
from birdclef.io import atomic_path


def _zip_root(names: list[str]) -> str:
    """Prefix ("" or "top/") under which the zip holds the competition files."""
    for prefix in ["", *sorted({n.split("/")[0] + "/" for n in names if "/" in n})]:
        if f"{prefix}taxonomy.csv" in names:
            return prefix
    return ""


def _check_zip(archive: zipfile.ZipFile, src: Path) -> str:
    names = archive.namelist()
    prefix = _zip_root(names)
    missing = [f for f in REQUIRED_FILES if f"{prefix}{f}" not in names]
    missing += [f"{d}/" for d in REQUIRED_DIRS if not any(n.startswith(f"{prefix}{d}/") for n in names)]
    if missing:
        raise LayoutError(f"{src}: not a BirdCLEF competition archive; missing {', '.join(missing)}")
    bad = [n for n in names if PurePosixPath(n).is_absolute() or ".." in PurePosixPath(n).parts]
    if bad:
        raise LayoutError(f"{src}: refusing archive members that escape the folder: {bad[:5]}")
    return prefix


def _extract(archive: zipfile.ZipFile, prefix: str, dest: Path) -> None:
    for info in archive.infolist():
        if not info.filename.startswith(prefix) or info.is_dir():
            continue
        target = dest / info.filename[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as fin, target.open("wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)


def _folder_root(src: Path) -> Path:
    """``src``, or its only sub-folder holding taxonomy.csv (an archive extracted into a named folder)."""
    if (src / "taxonomy.csv").is_file():
        return src
    inner = [d for d in src.iterdir() if d.is_dir() and (d / "taxonomy.csv").is_file()]
    return inner[0] if len(inner) == 1 else src


def check_extra_source(folder: Path) -> int:
    """Check an extra source folder: a metadata CSV with primary_label and filename, every file present.

    Returns:
        The number of metadata rows.

    Raises:
        LayoutError: naming the folder and what is missing (up to 10 missing files, then a count).
    """
    if not folder.is_dir():
        raise LayoutError(f"extra source {folder}: not a folder")
    csv_path = next((folder / n for n in EXTRA_METADATA_NAMES if (folder / n).is_file()), None)
    if csv_path is None:
        raise LayoutError(f"extra source {folder}: no metadata CSV (looked for {', '.join(EXTRA_METADATA_NAMES)})")
    raw, _ = read_csv_strings(csv_path, EXTRA_CSV_REQUIRED)
    rows, _ = parse_metadata(raw, csv_path.name)
    audio = folder / "train_audio" if (folder / "train_audio").is_dir() else folder
    missing = [f for f in rows["filename"] if f and not (audio / f).is_file()]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise LayoutError(f"extra source {folder}: {len(missing)} file(s) named in {csv_path.name} are missing "
                          f"under {audio}: {shown}")
    return len(rows)


def _count_audio(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    return sum(1 for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def move_labelled_soundscapes(root: Path, labels_csv: Path) -> int:
    """Make the soundscapes of a labelled-soundscape CSV the validation split of the data root ``root``.

    Returns:
        The number of soundscapes moved to val_soundscapes/.

    Raises:
        LayoutError: the CSV has no ``row_id`` column, a malformed row id (row number named), a species column
            outside taxonomy.csv, or names a soundscape that is not in train_soundscapes/.
    """
    import pandas as pd

    try:
        table = pd.read_csv(labels_csv)
    except (OSError, ValueError) as err:
        raise LayoutError(f"{labels_csv}: not a readable CSV ({err})") from err
    if "row_id" not in table.columns:
        raise LayoutError(f"{labels_csv}: no row_id column (expected the submission format)")
    parts = table["row_id"].astype(str).str.rsplit("_", n=1)
    bad = [i for i, p in enumerate(parts) if len(p) != 2 or not p[1].isdigit()]
    if bad:
        row_id = table["row_id"].iat[bad[0]]
        raise LayoutError(f"{labels_csv}: row {bad[0] + 2}: row_id {row_id!r} is not <soundscape stem>_<end s>")
    species = set(read_csv_strings(root / "taxonomy.csv")[0]["primary_label"])
    unknown = [c for c in table.columns if c != "row_id" and c not in species]
    if unknown:
        raise LayoutError(f"{labels_csv}: column(s) not in taxonomy.csv: {', '.join(unknown[:10])}")
    train_dir, val_dir = root / SOUNDSCAPE_DIRS["train"], root / SOUNDSCAPE_DIRS["val"]
    files = {p.stem: p for p in train_dir.iterdir() if p.is_file()} if train_dir.is_dir() else {}
    stems = sorted({p[0] for p in parts})
    missing = [s for s in stems if s not in files]
    if missing:
        raise LayoutError(f"{labels_csv}: soundscape(s) not in {SOUNDSCAPE_DIRS['train']}/: {', '.join(missing[:10])}")
    val_dir.mkdir(exist_ok=True)
    for stem in stems:
        files[stem].rename(val_dir / files[stem].name)
    shutil.copyfile(labels_csv, root / "val_labels.csv")
    return len(stems)


def ingest_kaggle(
    src: Path, dest: Path, extra: list[Path] | None = None, force: bool = False, val_labels: Path | None = None
) -> dict:
    """Copy (folder) or extract (zip) a competition download into ``dest``, with extra sources under extra/.

    The result appears at ``dest`` only when complete (built in a temporary sibling folder, then renamed).

    Args:
        src: the competition zip, or its extracted folder (the files at its top or in its only sub-folder).
        dest: the data root to create.
        extra: extra source folders (metadata CSV + audio, see ``check_extra_source``); each lands in
            ``dest/extra/<folder name>/`` and is read when its name is listed in ``acquire.sources``.
        force: replace a non-empty ``dest``.
        val_labels: a labelled-soundscape CSV in submission format (``row_id`` = ``<soundscape stem>_<end s>``,
            one 0/1 column per species; BirdCLEF+ 2026 shipped one). The soundscapes it names move from
            train_soundscapes/ to val_soundscapes/ (so pseudo-labelling never trains on them) and the CSV becomes
            val_labels.csv: the split for per-epoch scores and ensemble weights (S3).

    Returns:
        Summary: dest, source kind, species, train rows, audio and soundscape counts, extra source rows by name.

    Raises:
        LayoutError: ``src`` lacks a required competition file (all missing ones named) or an extra source is bad.
        FileExistsError: ``dest`` is not empty and ``force`` is False.
    """
    src, dest = Path(src), Path(dest)
    extra = [Path(e) for e in extra or []]
    if not src.exists():
        raise LayoutError(f"{src}: does not exist")
    if src.resolve() == dest.resolve():
        raise ValueError(f"{src}: source and destination are the same folder")
    names = [e.name for e in extra]
    clash = sorted({n for n in names if names.count(n) > 1} | ({COMPETITION_SOURCE} & set(names)))
    if clash:
        raise ValueError(f"extra source names must be distinct and not {COMPETITION_SOURCE!r}: {clash}")
    extra_rows = {e.name: check_extra_source(e) for e in extra}
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())) and not force:
        raise FileExistsError(f"{dest}: exists and is not empty; pass --force to replace it")

    with atomic_path(dest) as tmp:
        if zipfile.is_zipfile(src):
            kind = "zip"
            with zipfile.ZipFile(src) as archive:
                _extract(archive, _check_zip(archive, src), tmp)
        elif src.is_dir():
            kind = "folder"
            root = _folder_root(src)
            check_layout(root)
            shutil.copytree(root, tmp, ignore=shutil.ignore_patterns(".dvc", ".git", "*.dvc"))
        else:
            raise LayoutError(f"{src}: neither a zip archive nor a folder")
        for folder in SOUNDSCAPE_DIRS.values():  # Kaggle's test_soundscapes/ is empty, and zips drop empty folders
            (tmp / folder).mkdir(exist_ok=True)
        check_layout(tmp)
        for folder in extra:
            shutil.copytree(folder, tmp / EXTRA_DIR / folder.name)
        if val_labels is not None:
            move_labelled_soundscapes(tmp, Path(val_labels))
        summary = {
            "dest": str(dest),
            "source": kind,
            "species": len(read_csv_strings(tmp / "taxonomy.csv")[0]),
            "train_rows": len(read_csv_strings(tmp / "train.csv")[0]),
            "train_audio_files": _count_audio(tmp / "train_audio"),
            **{f"{split}_soundscapes": _count_audio(tmp / d) for split, d in SOUNDSCAPE_DIRS.items()},
            "extra": extra_rows,
        }
    return summary
