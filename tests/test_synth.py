"""Tests of the SynthCLEF generator: layout, columns, truth tables, determinism and the CLI."""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from click.testing import CliRunner

from birdclef import SAMPLE_RATE
from birdclef.synth import generate, preset_config
from birdclef.synth.cli import synth_command
from birdclef.synth.generator import TRAIN_COLUMNS, window_labels
from birdclef.synth.plan import plan_recordings
from birdclef.synth.scenes import Event
from birdclef.synth.species import make_taxonomy

TAXONOMY_COLUMNS = ["primary_label", "inat_taxon_id", "scientific_name", "common_name", "class_name"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset made through the Python API, in this process."""
    out = tmp_path_factory.mktemp("synth") / "tiny_api"
    summary = generate("tiny", 0, out, workers=1, progress=False)
    assert summary["train_files"] == len(pd.read_csv(out / "train.csv"))
    return out


@pytest.fixture(scope="module")
def tiny_cli(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The same preset and seed made through the CLI with two worker processes."""
    out = tmp_path_factory.mktemp("synth") / "tiny_cli"
    result = CliRunner().invoke(synth_command, ["--preset", "tiny", "--seed", "0", "--out", str(out),
                                                "--workers", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    return out, result.output


def _md5s(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_cli_writes_dataset_and_prints_summary(tiny_cli: tuple[Path, str]) -> None:
    out, output = tiny_cli
    summary = json.loads(output)
    assert summary["preset"] == "tiny" and summary["workers"] == 2
    assert summary["test_soundscapes"] == len(list((out / "test_soundscapes").glob("*.ogg"))) == 2
    assert summary["audio_seconds"]["train_soundscapes"] == pytest.approx(120.0)


def test_same_seed_is_byte_identical_across_runs_and_worker_counts(tiny: Path, tiny_cli: tuple[Path, str]) -> None:
    api, cli = _md5s(tiny), _md5s(tiny_cli[0])
    assert api.keys() == cli.keys()
    assert [name for name in api if api[name] != cli[name]] == []
    assert sum(name.endswith(".ogg") for name in api) > 20


def test_other_seed_differs(tmp_path: Path, tiny: Path) -> None:
    out = tmp_path / "seed1"
    generate("tiny", 1, out, workers=1, progress=False,
             overrides={"train_soundscapes": 1, "test_soundscapes": 1, "focal_files": 8})
    assert (out / "taxonomy.csv").read_text() != (tiny / "taxonomy.csv").read_text()


def test_layout_and_columns_match_the_competition(tiny: Path) -> None:
    for name in ("taxonomy.csv", "train.csv", "sample_submission.csv", "test_labels.csv"):
        assert (tiny / name).is_file(), name
    for name in ("calls.csv", "voice.csv", "train_soundscape_labels.csv", "generator.json"):
        assert (tiny / "synth_truth" / name).is_file(), name
    assert list(pd.read_csv(tiny / "taxonomy.csv").columns) == TAXONOMY_COLUMNS
    train = pd.read_csv(tiny / "train.csv")
    assert list(train.columns) == list(TRAIN_COLUMNS)
    assert train.notna().all().all()
    assert set(train["collection"]) <= {"XC", "iNat", "CSA"}
    for row in train.itertuples():
        assert (tiny / "train_audio" / row.filename).is_file(), row.filename
        assert row.filename.split("/")[0] == row.primary_label
    calls = pd.read_csv(tiny / "synth_truth" / "calls.csv")
    assert list(calls.columns) == ["file", "start_s", "end_s", "label", "kind", "snr_db"]
    assert set(calls["kind"]) >= {"focal", "soundscape"}
    gen = json.loads((tiny / "synth_truth" / "generator.json").read_text())
    assert gen["preset"] == "tiny" and gen["seed"] == 0 and gen["parameters"]["name"] == "tiny"


def test_audio_is_32k_mono_vorbis_with_60s_soundscapes(tiny: Path) -> None:
    focal = sorted((tiny / "train_audio").rglob("*.ogg"))
    lengths = []
    for path in focal:
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.format, info.subtype) == (SAMPLE_RATE, 1, "OGG", "VORBIS")
        lengths.append(info.frames / SAMPLE_RATE)
    knobs = preset_config("tiny").focal
    assert min(lengths) >= knobs.duration_range_s[0] - 0.01 and max(lengths) <= knobs.duration_range_s[1] + 0.01
    assert len(set(np.round(lengths, 1))) > 3  # variable length
    for split in ("train_soundscapes", "test_soundscapes"):
        for path in (tiny / split).glob("*.ogg"):
            audio, sr = sf.read(path)
            assert sr == SAMPLE_RATE and audio.ndim == 1 and len(audio) == 60 * SAMPLE_RATE
            assert 1e-4 < float(np.sqrt(np.mean(audio**2))) < 0.5


def test_all_four_classes_and_unique_labels(tiny: Path) -> None:
    tax = pd.read_csv(tiny / "taxonomy.csv", dtype={"primary_label": str})
    assert set(tax["class_name"]) == {"Aves", "Amphibia", "Insecta", "Mammalia"}
    assert tax["primary_label"].is_unique and tax["inat_taxon_id"].is_unique
    assert list(tax["primary_label"]) == sorted(tax["primary_label"])
    birds = tax[tax["class_name"] == "Aves"]["primary_label"]
    others = tax[tax["class_name"] != "Aves"]["primary_label"]
    assert birds.str.fullmatch(r"[a-z]{6}\d*").all()  # eBird-style codes
    assert others.str.fullmatch(r"\d+").all()  # iNaturalist taxon ids
    train = pd.read_csv(tiny / "train.csv", dtype={"primary_label": str})
    assert set(train["primary_label"]) == set(tax["primary_label"])  # every species has a file


def test_secondary_labels_parse_and_are_in_the_taxonomy(tiny: Path) -> None:
    labels = set(pd.read_csv(tiny / "taxonomy.csv", dtype={"primary_label": str})["primary_label"])
    train = pd.read_csv(tiny / "train.csv", dtype={"primary_label": str})
    parsed = [ast.literal_eval(cell) for cell in train["secondary_labels"]]
    assert all(isinstance(p, list) for p in parsed)
    assert any(parsed), "tiny should hold at least one file with a secondary species"
    for primary, secondary in zip(train["primary_label"], parsed, strict=True):
        assert set(secondary) <= labels and primary not in secondary
    for cell in train["type"]:
        assert isinstance(ast.literal_eval(cell), list)


def test_ratings_are_half_steps_and_track_snr(tiny: Path) -> None:
    train = pd.read_csv(tiny / "train.csv")
    assert ((train["rating"] * 2) % 1 == 0).all() and train["rating"].between(0, 5).all()
    assert (train.loc[train["collection"] != "XC", "rating"] == 0).all()
    assert (train.loc[train["collection"] == "XC", "rating"] >= 0.5).all()


def test_ratings_track_the_planted_snr() -> None:
    config = preset_config("demo")
    species, _ = make_taxonomy(config, np.random.default_rng(0))
    recordings = [r for r in plan_recordings(config, species, np.random.default_rng(1)) if r.row["collection"] == "XC"]
    snr = np.array([r.plan.snr_db for r in recordings])
    rating = np.array([r.row["rating"] for r in recordings])
    assert len(recordings) > 100
    assert np.corrcoef(snr, rating)[0, 1] > 0.7


def test_sample_submission_and_test_labels_match_soundscapes_and_taxonomy(tiny: Path) -> None:
    labels = list(pd.read_csv(tiny / "taxonomy.csv", dtype={"primary_label": str})["primary_label"])
    sub = pd.read_csv(tiny / "sample_submission.csv")
    truth = pd.read_csv(tiny / "test_labels.csv")
    stems = sorted(p.stem for p in (tiny / "test_soundscapes").glob("*.ogg"))
    expected = [f"{stem}_{end}" for stem in stems for end in range(5, 65, 5)]
    assert list(sub["row_id"]) == expected == list(truth["row_id"])
    assert list(sub.columns) == ["row_id", *labels] == list(truth.columns)
    assert np.allclose(sub[labels].to_numpy(), 1 / len(labels))
    assert set(np.unique(truth[labels].to_numpy())) <= {0, 1}
    assert truth[labels].to_numpy().sum() > 0


def test_window_truth_agrees_with_planted_calls(tiny: Path) -> None:
    truth = pd.read_csv(tiny / "synth_truth" / "train_soundscape_labels.csv").set_index("row_id")
    calls = pd.read_csv(tiny / "synth_truth" / "calls.csv", dtype={"label": str})
    scape = calls[calls["file"].str.startswith("train_soundscapes/") & (calls["kind"] == "soundscape")]
    assert len(scape) > 0
    for ev in scape.itertuples():
        stem = Path(ev.file).stem
        middle = (ev.start_s + ev.end_s) / 2
        end = min(60, int(middle // 5) * 5 + 5)
        assert truth.loc[f"{stem}_{end}", ev.label] == 1, ev
    distractors = calls[calls["kind"] == "distractor"]["label"]
    assert not set(distractors) & set(truth.columns)


def test_window_labels_overlap_rule() -> None:
    events = {"s1": [Event(4.95, 7.0, "a", "soundscape", 0.0), Event(58.0, 60.0, "b", "soundscape", 0.0),
                     Event(20.0, 20.1, "a", "soundscape", 0.0), Event(1.0, 2.0, "zzz", "distractor", 0.0)]}
    table = window_labels(events, ["a", "b"], 60, 0.15).set_index("row_id")
    assert table.loc["s1_5", "a"] == 0  # 0.05 s of overlap is not enough
    assert table.loc["s1_10", "a"] == 1
    assert table.loc["s1_25", "a"] == 1  # a 0.1 s bout needs only half its length
    assert table.loc["s1_60", "b"] == 1 and table["b"].sum() == 1
    assert table.to_numpy().sum() == 3


def test_voice_segments_lie_within_their_files(tiny: Path) -> None:
    voice = pd.read_csv(tiny / "synth_truth" / "voice.csv")
    assert len(voice) > 0
    assert voice["file"].str.startswith("train_audio/").all()
    for row in voice.itertuples():
        duration = sf.info(tiny / row.file).frames / SAMPLE_RATE
        assert 0 <= row.start_s < row.end_s <= duration + 1e-3, row
    # primary calls never overlap the announcement, so trimming the voice loses no labelled call
    calls = pd.read_csv(tiny / "synth_truth" / "calls.csv")
    focal = calls[calls["kind"] == "focal"]
    for row in voice.itertuples():
        same = focal[focal["file"] == row.file]
        assert ((same["end_s"] <= row.start_s) | (same["start_s"] >= row.end_s)).all(), row


def test_existing_output_is_refused(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        generate("tiny", 0, tmp_path, workers=1, progress=False)
    result = CliRunner().invoke(synth_command, ["--preset", "tiny", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "not empty" in result.output
    assert (tmp_path / "keep.txt").read_text() == "x"
    with pytest.raises(FileExistsError, match="is a file"):
        generate("tiny", 0, tmp_path / "keep.txt", workers=1, progress=False)


def test_bad_preset_and_override_are_named() -> None:
    with pytest.raises(ValueError, match="unknown SynthCLEF preset 'huge'"):
        preset_config("huge")
    with pytest.raises(ValueError, match="soundscape.snr"):
        preset_config("tiny", {"soundscape.snr": [0, 1]})
    config = preset_config("demo", {"soundscape.snr_db": [-9, 3], "focal_files": 10})
    assert config.soundscape.snr_db == (-9, 3) and config.focal_files == 10
    assert preset_config("demo").soundscape.snr_db != (-9, 3)


def test_full_preset_has_the_competition_class_mix() -> None:
    classes = preset_config("full").classes
    assert dict(classes) == {"Aves": 146, "Amphibia": 34, "Insecta": 17, "Mammalia": 9}
    assert sum(classes.values()) == 206


def test_validation_soundscapes_are_labelled_from_their_own_sites_and_move_nothing_else(tmp_path: Path,
                                                                                         tiny: Path) -> None:
    """S3: val_soundscapes/ + val_labels.csv; without them (val_soundscapes: 0) every other file is the same."""
    val = sorted(p.stem for p in (tiny / "val_soundscapes").glob("*.ogg"))
    labels = pd.read_csv(tiny / "val_labels.csv")
    assert len(val) == 2 and sorted({r.rsplit("_", 1)[0] for r in labels["row_id"]}) == val
    species = pd.read_csv(tiny / "taxonomy.csv")["primary_label"].tolist()
    assert len(labels) == 24 and list(labels.columns[1:]) == species
    sites = pd.read_csv(tiny / "synth_truth" / "soundscapes.csv")
    by_split = sites.groupby("split")["site"].agg(set)
    assert by_split["val"].isdisjoint(by_split["train"] | by_split["test"])
    out = tmp_path / "no_val"
    generate("tiny", 0, out, workers=1, progress=False, overrides={"val_soundscapes": 0})
    with_val, without = _md5s(tiny), _md5s(out)
    kept = {k for k in with_val if not k.startswith(("val_", "synth_truth/"))}
    assert kept == set(without) - {k for k in without if k.startswith("synth_truth/")}
    assert [k for k in kept if with_val[k] != without[k]] == []
