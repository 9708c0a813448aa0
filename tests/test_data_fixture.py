"""A tiny dataset in the Kaggle BirdCLEF+ 2025 layout with real-world quirks, shared by the data tests."""

from __future__ import annotations

import atexit
import csv
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

TRAIN_COLUMNS = ["primary_label", "secondary_labels", "type", "filename", "collection", "rating", "url",
                 "latitude", "longitude", "scientific_name", "common_name", "author", "license"]
TAXONOMY = [  # primary_label, inat_taxon_id, scientific_name, common_name, class_name
    ("amerob", "12727", "Turdus migratorius", "American Robin", "Aves"),
    ("bkcdon", "3", "Donacobius atricapilla", "Black-capped Donacobius", "Aves"),
    ("1139490", "1139490", "Ragoniella pulchella", "Ragoniella pulchella", "Insecta"),
    ("frog1", "22", "Boana faber", "Smith Frog", "Amphibia"),
    ("nofile1", "41", "Cerdocyon thous", "Crab-eating Fox", "Mammalia"),  # a species with no files
]
SUBMISSION_ORDER = ["1139490", "amerob", "bkcdon", "frog1", "nofile1"]  # differs from taxonomy.csv's order
# filename, secondary_labels cell, rating, (sample rate, channels, format), latitude, longitude
RECORDINGS = [
    ("amerob/XC1.ogg", "[]", "4.5", (32000, 1, "OGG"), "-21.5", "-48.2"),
    ("amerob/XC2.ogg", "['bkcdon', 'frog1']", "3.0", (44100, 2, "OGG"), "", ""),  # 44.1 kHz stereo
    ("amerob/iNat3.ogg", "['']", "0.0", (32000, 1, "OGG"), "4.6", "-74.1"),  # unrated
    ("bkcdon/XC4.ogg", '["amerob"]', "5.0", (32000, 1, "OGG"), "-10", "-50"),
    ("bkcdon/XC5.mp3", "['amerob' 'frog1']", "2.5", (44100, 2, "MP3"), "-11", "-51"),  # mp3, numpy-style list
    ("1139490/CSA6.ogg", "[]", "0", (32000, 1, "OGG"), "5.0", "-73.0"),
    ("frog1/XC7.wav", "[]", "1.0", (32000, 1, "WAV"), "-20", "-45"),
    ("frog1/XC8.ogg", "['amerob', 'bkcdon']", "3.5", (32000, 1, "OGG"), "-20.1", "-45.2"),
]
SOUNDSCAPES = {"train_soundscapes": ["H02_20230420_074000.ogg", "H02_20230420_080000.ogg"],
               "test_soundscapes": ["soundscape_8123.ogg"]}


def _tone(seconds: float, sr: int, channels: int, freq: float, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32)


def write_audio(path: Path, seconds: float = 1.5, sr: int = 32000, channels: int = 1, fmt: str = "OGG",
                seed: int = 0) -> None:
    """Write a short tone with noise (the format's default subtype)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, _tone(seconds, sr, channels, 440.0 + 100 * seed, seed), sr, format=fmt)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def train_row(filename: str, secondary: str = "[]", rating: str = "3.0", lat: str = "0", lon: str = "0") -> list[str]:
    """A train.csv row (all 13 competition columns) for ``filename`` ("label/file.ogg")."""
    label, base = filename.split("/")
    collection = re.match(r"[A-Za-z]+", base).group(0)  # XC, iNat, CSA
    return [label, secondary, "['song']", filename, collection, rating,
            f"https://xeno-canto.org/{filename}", lat, lon, "Sci name", "Common name", "A. Recordist",
            "cc-by-nc-sa 4.0"]


_PRISTINE: list[Path] = []


def make_competition_layout(root: Path) -> Path:
    """Write the quirky tiny dataset at ``root`` (a new folder) and return ``root``.

    The first call in a session encodes the audio; later calls copy that pristine tree (encoding MP3 is slow).
    """
    if not _PRISTINE:
        pristine = Path(tempfile.mkdtemp(prefix="birdclef-data-fixture-")) / "data"
        atexit.register(shutil.rmtree, pristine.parent, True)
        _write_layout(pristine)
        _PRISTINE.append(pristine)
    shutil.copytree(_PRISTINE[0], root)
    return root


def _write_layout(root: Path) -> None:
    root.mkdir(parents=True)
    write_csv(root / "taxonomy.csv", ["primary_label", "inat_taxon_id", "scientific_name", "common_name",
                                      "class_name"], [list(t) for t in TAXONOMY])
    rows = []
    for i, (name, secondary, rating, (sr, ch, fmt), lat, lon) in enumerate(RECORDINGS):
        write_audio(root / "train_audio" / name, seconds=1.0 + 0.25 * i, sr=sr, channels=ch, fmt=fmt, seed=i)
        rows.append(train_row(name, secondary, rating, lat, lon))
    write_csv(root / "train.csv", TRAIN_COLUMNS, rows)
    for i, (folder, names) in enumerate(SOUNDSCAPES.items()):
        for j, name in enumerate(names):
            write_audio(root / folder / name, seconds=2.0, seed=10 + 3 * i + j)
    stem = Path(SOUNDSCAPES["test_soundscapes"][0]).stem
    write_csv(root / "sample_submission.csv", ["row_id", *SUBMISSION_ORDER],
              [[f"{stem}_{end}"] + ["0.2"] * len(SUBMISSION_ORDER) for end in (5, 10)])


def append_train_rows(root: Path, rows: list[list[str]]) -> None:
    """Append raw rows to train.csv (each a list of cells; any field count)."""
    with (root / "train.csv").open("a", newline="") as f:
        csv.writer(f).writerows(rows)


def truncate_file(path: Path, keep: float = 0.5) -> None:
    """Cut a file to ``keep`` of its bytes, as an interrupted download does."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_fixture_has_the_quirks(tmp_path):
    root = make_competition_layout(tmp_path / "data")
    infos = {name: sf.info(root / "train_audio" / name) for name, *_ in RECORDINGS}
    assert infos["amerob/XC2.ogg"].samplerate == 44100 and infos["amerob/XC2.ogg"].channels == 2
    assert infos["bkcdon/XC5.mp3"].format == "MP3"
    assert not (root / "train_audio" / "nofile1").exists()
    assert (root / "train.csv").read_text().count('"[\'bkcdon\', \'frog1\']"') == 1  # a quoted list cell
