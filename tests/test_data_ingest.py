"""Tests of birdclef.data.ingest: a competition zip or folder (with quirks) lands atomically in the data root."""

import shutil
import zipfile

import pytest
from test_data_fixture import make_competition_layout, write_audio, write_csv

from birdclef.data.ingest import ingest_kaggle
from birdclef.data.layout import LayoutError, check_layout
from birdclef.data.manifest import build_manifest
from birdclef.data.params import AcquireParams


def _zip(folder, path, top=""):
    with zipfile.ZipFile(path, "w") as archive:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                archive.write(f, top + f.relative_to(folder).as_posix())
    return path


def _extra(tmp_path):
    src = tmp_path / "xc_extra"
    write_audio(src / "train_audio" / "frog1" / "XC700.ogg", seed=7)
    write_csv(src / "train_metadata.csv", ["primary_label", "filename", "rating"], [["frog1", "frog1/XC700.ogg", "4"]])
    return src


def test_zip_with_a_top_folder_and_an_extra_source(tmp_path):
    comp = make_competition_layout(tmp_path / "download")
    shutil.rmtree(comp / "test_soundscapes")  # Kaggle ships it empty; zips drop empty folders
    archive = _zip(comp, tmp_path / "birdclef-2025.zip", top="birdclef-2025/")
    dest = tmp_path / "data"
    summary = ingest_kaggle(archive, dest, [_extra(tmp_path)])
    assert summary == {"dest": str(dest), "source": "zip", "species": 5, "train_rows": 8, "train_audio_files": 8,
                       "train_soundscapes": 2, "test_soundscapes": 0, "val_soundscapes": 0,
                       "extra": {"xc_extra": 1}}
    check_layout(dest)
    assert (dest / "test_soundscapes").is_dir() and (dest / "extra/xc_extra/train_audio/frog1/XC700.ogg").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".data.")]  # no temp folder left
    m = build_manifest(dest, AcquireParams(sources=("train_audio", "xc_extra"), n_folds=2), progress=False)
    assert "xc_extra/frog1/XC700.ogg" in set(m.recordings["recording_id"]) and len(m.recordings) == 9


def test_folder_copy_refuses_a_full_destination_unless_forced(tmp_path):
    comp = make_competition_layout(tmp_path / "download")
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "old.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="pass --force"):
        ingest_kaggle(comp, dest, [])
    assert (dest / "old.txt").exists()
    assert ingest_kaggle(comp, dest, [], force=True)["source"] == "folder"
    assert not (dest / "old.txt").exists() and (dest / "train_audio/bkcdon/XC5.mp3").is_file()


def test_missing_pieces_are_named_and_nothing_is_written(tmp_path):
    comp = make_competition_layout(tmp_path / "download")
    (comp / "taxonomy.csv").unlink()
    shutil.rmtree(comp / "train_audio")
    dest = tmp_path / "data"
    with pytest.raises(LayoutError, match=r"missing taxonomy\.csv, train_audio/"):
        ingest_kaggle(_zip(comp, tmp_path / "c.zip"), dest, [])
    with pytest.raises(LayoutError, match=r"missing taxonomy\.csv, train_audio/"):
        ingest_kaggle(comp, dest, [])
    assert not dest.exists()
    extra = _extra(tmp_path)
    (extra / "train_audio/frog1/XC700.ogg").unlink()
    with pytest.raises(LayoutError, match=r"1 file\(s\) named in train_metadata.csv are missing .*frog1/XC700.ogg"):
        ingest_kaggle(make_competition_layout(tmp_path / "d2"), dest, [extra])
    assert not dest.exists()


def test_val_labels_move_their_soundscapes_to_the_validation_split(tmp_path):
    comp = make_competition_layout(tmp_path / "download")
    labels = tmp_path / "labelled.csv"
    write_csv(labels, ["row_id", "amerob", "frog1"], [["H02_20230420_074000_5", "1", "0"],
                                                      ["H02_20230420_074000_10", "0", "1"]])
    summary = ingest_kaggle(comp, tmp_path / "data", val_labels=labels)
    data = tmp_path / "data"
    assert summary["val_soundscapes"] == 1 and summary["train_soundscapes"] == 1
    assert (data / "val_soundscapes" / "H02_20230420_074000.ogg").is_file()
    assert not (data / "train_soundscapes" / "H02_20230420_074000.ogg").exists()
    assert (data / "val_labels.csv").read_text() == labels.read_text()
    manifest = build_manifest(data, AcquireParams())
    splits = dict(zip(manifest.soundscapes["soundscape_id"], manifest.soundscapes["split"], strict=True))
    assert splits["H02_20230420_074000"] == "val" and splits["H02_20230420_080000"] == "train"


@pytest.mark.parametrize("rows, message", [
    ([["H02_20230420_074000_5", "1", "0"], ["H02_end", "0", "1"]], "row 3: row_id 'H02_end'"),
    ([["H09_missing_5", "1", "0"]], "not in train_soundscapes"),
])
def test_bad_val_labels_are_named_and_nothing_is_written(tmp_path, rows, message):
    comp = make_competition_layout(tmp_path / "download")
    labels = tmp_path / "labelled.csv"
    write_csv(labels, ["row_id", "amerob", "frog1"], rows)
    with pytest.raises(LayoutError, match=message):
        ingest_kaggle(comp, tmp_path / "data", val_labels=labels)
    assert not (tmp_path / "data").exists()
    write_csv(labels, ["row_id", "notaspecies"], [["H02_20230420_074000_5", "1"]])
    with pytest.raises(LayoutError, match="notaspecies"):
        ingest_kaggle(comp, tmp_path / "data", val_labels=labels)
