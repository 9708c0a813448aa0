"""The real-audio benchmark (benchmarks/real_task.py, real_task_build.py, real_task_sources.py) on the real recordings
(skipped where ../shared/real-audio is absent)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdclef import SAMPLE_RATE
from birdclef.audio.decode import load_audio
from birdclef.data.layout import check_layout, read_species_columns, read_taxonomy
from birdclef.synth.config import SoundscapeKnobs
from birdclef.synth.generator import TRAIN_COLUMNS, window_labels
from birdclef.synth.scenes import Event

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the benchmark's modules import each other as top-level modules
import real_task  # noqa: E402
import real_task_build  # noqa: E402
import real_task_sources  # noqa: E402
import real_task_stats  # noqa: E402

pytestmark = pytest.mark.skipif(not real_task.AUDIO.is_dir(), reason=f"{real_task.AUDIO} is absent")
COUNTS = {"train": 2, "test": 2, "val": 1}  # fewer soundscapes than the benchmark: encoding ogg is the cost


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("real") / "data"
    return out, real_task_build.build_task(out, seed=3, counts=COUNTS)


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return min(a[1], b[1]) - max(a[0], b[0])


def test_the_task_is_in_the_competition_layout(task):
    root, summary = task
    check_layout(root)
    train = pd.read_csv(root / "train.csv", keep_default_na=False)
    assert list(train.columns) == list(TRAIN_COLUMNS)
    assert set(train["collection"]) == {"XC"} and set(train["rating"]) == {4.0}
    taxonomy = read_taxonomy(root / "taxonomy.csv")
    names = dict(zip(taxonomy["primary_label"], taxonomy["scientific_name"], strict=True))
    assert sorted(names.values()) == sorted(s.scientific_name for s in real_task_sources.SPECIES)
    assert dict(zip(taxonomy["primary_label"], taxonomy["class_name"], strict=True))["grptoa1"] == "Amphibia"
    assert train.groupby("primary_label").size().min() >= 1 and set(train["primary_label"]) == set(names)
    for name in train["filename"]:
        info = sf.info(root / "train_audio" / name)
        assert (info.samplerate, info.channels, info.format) == (SAMPLE_RATE, 1, "OGG")
    for split, n in COUNTS.items():
        files = sorted((root / f"{split}_soundscapes").glob("*.ogg"))
        assert len(files) == n and summary["soundscapes"][split] == n
        assert {round(sf.info(f).duration, 2) for f in files} == {60.0}
    sample = pd.read_csv(root / "sample_submission.csv")
    labels = pd.read_csv(root / "test_labels.csv")
    assert read_species_columns(root / "sample_submission.csv") == list(taxonomy["primary_label"])
    assert list(sample["row_id"]) == list(labels["row_id"]) and len(labels) == 12 * COUNTS["test"]
    assert not (root / "synth_truth" / "voice.csv").exists()  # nothing to score the voice cleaner against


def test_held_out_calls_never_appear_in_train_audio(task):
    root, _ = task
    focal = pd.read_csv(root / "synth_truth" / "focal.csv")
    calls = pd.read_csv(root / "synth_truth" / "calls.csv")
    held = calls[calls["part"] == "held"]
    assert len(held) and set(held["file"].str.split("/").str[0]) == {"test_soundscapes", "val_soundscapes"}
    for row in held.itertuples():
        mine = focal[focal["source"] == row.source]
        assert all(_overlap((row.source_start_s, row.source_end_s), (a, b)) <= 0
                   for a, b in zip(mine["source_start_s"], mine["source_end_s"], strict=True))  # fmt: skip
    tit = set(focal["source"][focal["source"].str.startswith("great_tit/")])
    assert tit and not tit & set(held["source"])  # a held-out song is a different song
    # the training soundscapes' calls come from the training part: inside a focal piece of their source
    for row in calls[calls["part"] == "train"].itertuples():
        mine = focal[focal["source"] == row.source]
        assert any(a - 1e-3 <= row.source_start_s and row.source_end_s <= b + 1e-3
                   for a, b in zip(mine["source_start_s"], mine["source_end_s"], strict=True))  # fmt: skip
    # and train_audio holds what focal.csv says: each focal file is its source piece (Vorbis is lossy: r > 0.95)
    for name in ("grptoa1/real_opensoundscape_great_plains_toad_2.ogg", "refspi1/real_maad_spinetail_2.ogg"):
        piece = focal[focal["filename"] == name].iloc[0]
        src = load_audio(real_task.AUDIO / piece["source"], piece["source_start_s"], piece["source_end_s"])
        got = load_audio(root / "train_audio" / name)
        n = min(len(src), len(got))
        assert abs(len(src) - len(got)) < 0.01 * SAMPLE_RATE
        assert np.corrcoef(src[:n], got[:n])[0, 1] > 0.95
        held_src = load_audio(real_task.AUDIO / piece["source"], real_task_sources.TIME_SPLITS[name.split("/")[0]][1])
        assert piece["source_end_s"] <= real_task_sources.TIME_SPLITS[name.split("/")[0]][1]
        m = min(n, len(held_src))
        assert abs(np.corrcoef(held_src[:m], got[:m])[0, 1]) < 0.3  # not the held-out part


def test_labels_are_the_windows_of_the_planted_calls(task):
    root, _ = task
    calls = pd.read_csv(root / "synth_truth" / "calls.csv")
    labels = [s.label for s in real_task_sources.SPECIES]
    for split, path in (("test", "test_labels.csv"), ("val", "val_labels.csv"),
                        ("train", "synth_truth/train_soundscape_labels.csv")):  # fmt: skip
        files = sorted((root / f"{split}_soundscapes").glob("*.ogg"))
        mine = calls[calls["file"].str.startswith(f"{split}_soundscapes/")]
        events = {f.stem: [Event(r.start_s, r.end_s, r.label, "soundscape", r.snr_db)
                           for r in mine[mine["file"] == f"{split}_soundscapes/{f.name}"].itertuples()]
                  for f in files}  # fmt: skip
        want = window_labels(events, labels, 60, SoundscapeKnobs().label_min_overlap_s)
        got = pd.read_csv(root / path)
        pd.testing.assert_frame_equal(got, want, check_dtype=False)
        assert got[labels].to_numpy().sum() > 0
    # each planted call is in the audio where calls.csv puts it: in the call's band, the soundscape there
    # correlates with the source piece (best lag within the ms that calls.csv rounds to), and not 7 s away
    test = calls[calls["file"].str.startswith("test_soundscapes/")].drop_duplicates(["file", "placed_s", "label"])
    band = {s.label: s.band_hz for s in real_task_sources.SPECIES}
    mixes = {f: load_audio(root / f) for f in set(test["file"])}
    for row in test.itertuples():
        source = load_audio(real_task.AUDIO / row.source, row.source_start_s, row.source_end_s)
        piece = real_task_sources._bandpass(source, band[row.label])
        i = int(round(row.placed_s * SAMPLE_RATE))
        j = (i + 7 * SAMPLE_RATE) % (SAMPLE_RATE * 60 - len(piece) - 64)
        span = slice(min(i, j), max(i, j) + len(piece) + 64)  # filter only the stretch both comparisons read
        x = np.zeros(60 * SAMPLE_RATE)
        x[span] = real_task_sources._bandpass(mixes[row.file][span], band[row.label])
        here, there = _best_corr(x, i, piece), _best_corr(x, j, piece)
        assert here > 0.15 and here > there + 0.1, row  # -5 dB calls reach ~0.4; a wrong place ~0 +- 0.03


def _best_corr(x: np.ndarray, at: int, piece: np.ndarray, lags: int = 48) -> float:
    """Highest correlation of ``piece`` with ``x`` starting within ``lags`` samples of ``at``."""
    n = len(piece) - 2 * lags
    core = piece[lags : lags + n]
    return max(np.corrcoef(x[at + k : at + k + n], core)[0, 1] for k in range(2 * lags + 1))


def test_snrs_and_species_per_minute_are_as_declared(task):
    root, _ = task
    calls = pd.read_csv(root / "synth_truth" / "calls.csv")
    assert calls["snr_db"].between(*real_task_build.SNR_DB).all()
    per_minute = calls.groupby("file")["label"].nunique()
    assert per_minute.between(*real_task_build.SPECIES_PER_MINUTE).all()
    scapes = pd.read_csv(root / "synth_truth" / "soundscapes.csv")
    offsets = scapes.groupby("split")["forest_offset_s"].apply(set)
    assert not offsets["train"] & offsets["test"] and not offsets["val"] & (offsets["train"] | offsets["test"])


def test_dotted_overrides_reach_nested_params():
    params = {"models": {"sed_mnv3s": {"pretrained": False}}, "train": {"loop": {"seed": 0}}}
    real_task._set_dotted(params, "models.sed_mnv3s.pretrained", "/w.pth")
    real_task._set_dotted(params, "ensemble.teacher", {"enabled": True})
    assert params["models"]["sed_mnv3s"]["pretrained"] == "/w.pth" and params["ensemble"]["teacher"]["enabled"]
    with pytest.raises(ValueError, match="train.loop.seed.x"):
        real_task._set_dotted(params, "train.loop.seed.x", 1)


def _run_folder(root: Path, variant: str, seed: int, tables: dict[str, pd.DataFrame], truth: pd.DataFrame) -> dict:
    """A finished run as the runner leaves it: a clone with build/ outputs, the predictions copied out of it."""
    repo = root / f"{variant}_s{seed}" / "repo"
    scores = repo / "build" / "ensemble" / "member_scores"
    scores.mkdir(parents=True)
    for name, table in tables.items():
        if name == "teacher_alone":
            (repo / "build" / "teacher" / "test_soundscape").mkdir(parents=True)
            table.to_parquet(repo / "build" / "teacher" / "test_soundscape" / "probs.parquet")
        else:
            table.to_parquet(scores / f"{name}.parquet")
    (repo / "data").mkdir()
    truth.to_csv(repo / "data" / "test_labels.csv", index=False)
    saved = real_task_stats.save_predictions(repo, repo.parent)
    return {"variant": variant, "seed": seed, "score": 0.0, "predictions": str(saved)}


@pytest.fixture
def scored():
    """8 soundscapes x 12 windows, 3 species; a perfect, a noisy and a worse prediction set; a teacher lacking c."""
    rng = np.random.default_rng(0)
    rows = [f"s{f}_{5 * (w + 1)}" for f in range(8) for w in range(12)]
    y = (rng.random((len(rows), 3)) < 0.3).astype(int)
    truth = pd.DataFrame(y, columns=["a", "b", "c"])
    truth.insert(0, "row_id", rows)

    def table(values: np.ndarray) -> pd.DataFrame:
        out = pd.DataFrame(values, columns=["a", "b", "c"])
        out.insert(0, "row_id", rows)
        return out

    noisy = table(np.clip(y + rng.normal(0, 0.6, y.shape), 0, 1))
    worse = table(np.clip(y + rng.normal(0, 1.2, y.shape), 0, 1))
    perfect = table(y.astype(float))
    teacher = perfect.copy()
    teacher["c"] = np.nan
    return truth, noisy, worse, perfect, teacher


def test_saved_predictions_name_what_the_summary_reports(tmp_path, scored):
    truth, noisy, worse, perfect, teacher = scored
    member = _run_folder(tmp_path, "teacher", 0, {"ensemble": noisy, "students": worse, "teacher_alone": teacher},
                         truth)  # fmt: skip
    blended = _run_folder(tmp_path / "old", "teacher", 0, {"ensemble": worse, "teacher_alone": teacher}, truth)
    plain = _run_folder(tmp_path, "default", 0, {"ensemble": noisy}, truth)
    files = {k: p.name for k, p in real_task_stats.prediction_files(member).items()}
    assert files == {"teacher_recipe": "ensemble.parquet", "teacher_students_only": "students.parquet",
                     "teacher_alone": "teacher_alone.parquet"}  # fmt: skip
    # without the T2 member the stage's ensemble is the students; the recipe was blended by the benchmark itself
    assert {k: p.name for k, p in real_task_stats.prediction_files(blended).items()} == {
        "teacher_students_only": "ensemble.parquet", "teacher_alone": "teacher_alone.parquet"}
    assert {k: p.name for k, p in real_task_stats.prediction_files(plain).items()} == {"default": "ensemble.parquet"}
    assert real_task_stats.prediction_files({"variant": "default", "seed": 0}) == {}
    assert real_task_stats.save_predictions(tmp_path / "nothing", tmp_path / "nothing") is None


def test_intervals_and_paired_deltas_match_the_metric(tmp_path, scored):
    from birdclef.metric import paired_bootstrap, score, score_interval

    truth, noisy, worse, perfect, teacher = scored
    runs = [
        _run_folder(tmp_path, "teacher", 1, {"ensemble": noisy, "students": worse, "teacher_alone": teacher}, truth),
        _run_folder(tmp_path, "default", 1, {"ensemble": worse}, truth),
        {"variant": "pretrained", "seed": 1, "error": "failed"},  # no score: left out
    ]
    out = real_task_stats.uncertainty(runs)
    assert set(out["intervals"]) == {"teacher_recipe", "teacher_students_only", "teacher_alone", "default"}
    iv = out["intervals"]["default"]["1"]
    ref = score_interval(truth, worse)
    assert iv["score"] == round(score(truth, worse), 4) and (iv["low"], iv["high"]) == (round(ref.low, 4),
                                                                                         round(ref.high, 4))
    assert iv["n_files"] == 8 and iv["low"] <= iv["score"] <= iv["high"]
    # the teacher covers a and b only: it is scored, and compared, on those two species
    assert out["intervals"]["teacher_alone"]["1"]["score"] == 1.0
    pair = out["paired"]["teacher_recipe_minus_teacher_alone"]["1"]
    two = truth[["row_id", "a", "b"]]
    ref = paired_bootstrap(two, teacher[["row_id", "a", "b"]], noisy[["row_id", "a", "b"]])
    assert pair["species"] == 2 and pair["diff"] == round(score(two, noisy[["row_id", "a", "b"]]) - 1.0, 4)
    assert (pair["low"], pair["high"]) == (round(ref.low, 4), round(ref.high, 4)) and pair["diff"] < 0
    students = out["paired"]["teacher_students_only_minus_default"]["1"]  # worse vs worse: the same predictions
    assert students == {"diff": 0.0, "low": 0.0, "high": 0.0, "share_b_better": 0.0, "verdict": "within noise",
                        "species": 3}  # fmt: skip
    assert set(out["paired"]) == {"teacher_recipe_minus_teacher_alone", "teacher_students_only_minus_default"}


def test_per_class_scores_are_read_for_the_recipe_students_and_teacher():
    ensemble = {"score": 0.81, "score_aves": 0.86, "score_amphibia": 0.6, "students_score_aves": 0.857,
                "teacher_score_amphibia": 0.844, "score_ci_low": 0.7, "val_score_aves": 0.9, "score_insecta": None}
    assert real_task_stats.per_class(ensemble) == {"score_amphibia": 0.6, "score_aves": 0.86,
                                                   "students_score_aves": 0.857, "teacher_score_amphibia": 0.844}


def test_the_summary_averages_each_reported_name_and_its_classes_over_seeds():
    runs = [{"variant": "teacher", "seed": s, "score": r, "wall_s": 10.0, "teacher_recipe": r, "teacher_alone": 0.83,
             "teacher_students_only": r - 0.03, "it1_soundscape_auc": 0.7 + s / 10,
             "per_class": {"score_aves": r, "students_score_aves": r - 0.03, "teacher_score_aves": 0.8}}
            for s, r in ((0, 0.80), (1, 0.82))]  # fmt: skip
    runs.append({"variant": "default", "seed": 0, "error": "failed", "wall_s": 1.0})
    rows = real_task_stats.summarise(runs)
    assert set(rows) == {"teacher_recipe", "teacher_students_only", "teacher_alone"}
    assert rows["teacher_recipe"]["mean"] == 0.81 and rows["teacher_recipe"]["std"] == 0.01
    assert rows["teacher_recipe"]["per_class_mean"] == {"aves": 0.81}
    assert rows["teacher_students_only"]["per_class_mean"] == {"aves": 0.78}
    assert rows["teacher_students_only"]["it1_mean"] == 0.75 and "it1_mean" not in rows["teacher_recipe"]
    assert rows["teacher_alone"]["per_class_mean"] == {"aves": 0.8}
    assert real_task_stats.checks(rows) == {"teacher_recipe_at_least_teacher_alone": False}
