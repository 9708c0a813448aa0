"""Tests for birdclef.infer.ensemble_spec: the ensemble stage's member runs, weight fitting splits and spec."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from birdclef.infer import ensemble_spec as S

CLASSES = ["a", "b", "c"]
INFER = Path(S.__file__).parent
REPO = Path(__file__).resolve().parents[1]


def _infer_imports(path: Path) -> set[str]:
    """birdclef.infer modules that one module imports anywhere in its body (function-level imports too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: inside birdclef.infer
                base = ".".join(["birdclef.infer", *([base] if base else [])])
            names |= {base, *(f"{base}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return {
        n.split(".")[2]
        for n in names
        if n.startswith("birdclef.infer.") and (INFER / f"{n.split('.')[2]}.py").is_file()
    }


def test_no_import_circle_among_the_infer_modules():
    """runner -> ensemble and ensemble_spec -> runner, never back (ensemble and runner used to import each other)."""
    graph = {p.stem: _infer_imports(p) - {p.stem} for p in INFER.glob("*.py")}
    assert "ensemble" in graph["runner"] and {"runner", "ensemble"} <= graph["ensemble_spec"]
    assert graph["ensemble"] == set()  # numpy only: the bundle copies it

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph.get(start, ()))

    assert [m for m in graph if reaches(m, m)] == []


def test_load_oof_aligns_shared_segments_and_one_hot_truth(tmp_path: Path):
    members = []
    for name, cols, ids in (("m1", CLASSES, ["s1", "s2", "s3"]), ("m2", ["c"], ["s3", "s2", "s9"])):
        (tmp_path / name).mkdir()
        frame = pd.DataFrame(np.arange(len(ids) * len(cols)).reshape(len(ids), len(cols)) / 10, columns=cols)
        frame.insert(0, "segment_id", ids)
        frame.to_parquet(tmp_path / name / "val_predictions.parquet")
        members.append({"name": name, "checkpoint": str(tmp_path / name / "model.pt"), "classes": None})
    members[1]["classes"] = ["c"]
    segments = pd.DataFrame({"segment_id": ["s1", "s2", "s3", "s9"], "primary_label": ["a", "c", "b", "a"]})
    preds, solution = S.load_oof(members, segments, CLASSES)
    assert solution["row_id"].tolist() == ["s2", "s3"]
    assert solution[CLASSES].to_numpy().tolist() == [[0, 0, 1], [0, 1, 0]]
    np.testing.assert_allclose(preds[0], [[0.3, 0.4, 0.5], [0.6, 0.7, 0.8]])
    np.testing.assert_allclose(preds[1], [[0.1], [0.0]])
    (tmp_path / "m2" / "val_predictions.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="m2"):
        S.load_oof(members, segments, CLASSES)


# ---------------------------------------------------------------- the fit split (S3): val, soundscapes, oof

SR = 32_000
TWO = ["a", "b"]
MEL = {"n_fft": 512, "hop_length": 320, "n_mels": 32, "fmin": 40, "fmax": 15000}
SPLIT_FILES = {"val": 2, "test": 3}  # 24 and 36 windows: the row counts tell the splits apart


def level_factory(member, threads):
    """Stand-in members: ``it0_up`` scores every class by the chunk's level, ``it0_down`` by one minus it."""
    up = member["name"] == "it0_up"

    def predict(wave):
        level = np.clip(np.abs(wave).mean(axis=1), 0, 1)
        clip = np.stack([level if up else 1 - level] * 2, axis=-1)
        return {"clip": clip, "frame": clip[:, None, :]}

    return predict


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two checkpoints (only their class lists matter) and val / test soundscapes whose labels disagree: a window
    is positive on val when its level is above 0.3, on test when it is below (so ``up`` wins val, ``down`` test)."""
    import soundfile as sf
    import torch

    from birdclef.infer.submission import row_ids
    from birdclef.models import create_model, save_checkpoint

    root = tmp_path_factory.mktemp("splits")
    for name in ("up", "down"):
        torch.manual_seed(0)
        model = create_model({"head": "cnn", "backbone": "test_efficientnet"}, len(TWO), MEL)
        save_checkpoint(root / "train" / "it0" / name / "model.pt", model, {"classes": TWO})
    rng = np.random.default_rng(0)
    out = {"train": root / "train", "root": root}
    for split, n in SPLIT_FILES.items():
        folder = root / f"{split}_soundscapes"
        folder.mkdir()
        ids, truth = [], []
        for i in range(n):
            levels = rng.uniform(0.05, 0.6, 12)
            sign = np.where(np.arange(12 * 5 * SR) % 2 == 0, 1.0, -1.0)
            sf.write(folder / f"{split}_{i}.wav", (np.repeat(levels, 5 * SR) * sign).astype(np.float32), SR)
            ids += row_ids(f"{split}_{i}", 12)
            truth += list((levels > 0.3) if split == "val" else (levels < 0.3))
        labels = pd.DataFrame({c: np.asarray(truth, dtype=int) for c in TWO})
        labels.insert(0, "row_id", ids)
        labels.to_csv(root / f"{split}_labels.csv", index=False)
        out[split] = S.read_split(split, folder, root / f"{split}_labels.csv")
    return out


def cfg(**fit):
    return {
        "members": [{"iteration": 0, "model": "up"}, {"iteration": 0, "model": "down"}],
        "postprocess": {"smoothing": {"enabled": False}},
        "fit": {"method": "coordinate", "grid": [0.0, 0.5, 1.0, 2.0], "rounds": 2, **fit},
    }


def build(splits, config, val="val"):
    return S.build_spec(config, splits["train"], splits["test"], TWO, level_factory, val=splits.get(val))


def test_weights_fitted_on_val_differ_from_those_fitted_on_test(splits):
    spec, on_val, _ = build(splits, cfg(source="val"))
    assert on_val["weight_it0_up"] == pytest.approx(2 / 3, abs=1e-4) and on_val["weight_it0_down"] == pytest.approx(
        1 / 3, abs=1e-4
    )
    assert on_val["fit_score_val"] == on_val["val_score"] == 1.0  # the level ranks val perfectly ...
    assert on_val["score"] == 0.0 and on_val["weights_fitted_in_sample"] == 0  # ... and test backwards
    assert on_val["n_val_soundscapes"] == 2 and spec["weights"] == {"method": "coordinate", "fitted_on": "val"}
    spec, in_sample, _ = build(splits, cfg(source="soundscapes"), val=None)  # the val split is not needed
    assert in_sample["weight_it0_up"] == 0.0 and in_sample["weight_it0_down"] == 1.0
    assert (
        in_sample["score"] == in_sample["fit_score_soundscapes"] == 1.0 and in_sample["weights_fitted_in_sample"] == 1
    )
    assert not any(k.startswith("val_") for k in in_sample) and spec["weights"]["fitted_on"] == "soundscapes"
    assert in_sample["score_hand_weights"] == on_val["score_hand_weights"] == 0.5  # equal weights: all ties


def test_fitting_on_val_never_hands_the_test_labels_to_fit_weights(splits, monkeypatch):
    seen = []
    real = S.ensemble.fit_weights

    def spy(preds, score_fn, *args, **kwargs):
        seen.append((preds[0].shape[0], score_fn))
        return real(preds, score_fn, *args, **kwargs)

    monkeypatch.setattr(S.ensemble, "fit_weights", spy)
    build(splits, cfg(source="val"))
    [(rows, score_fn)] = seen
    val_truth = splits["val"].labels[TWO].to_numpy(np.float32)
    assert rows == 24 == len(val_truth)  # the val windows, not the 36 test ones
    assert score_fn(val_truth) == 1.0 and score_fn(1 - val_truth) == 0.0  # scored against the val labels


def test_score_val_scores_the_hand_weighted_ensemble_on_val(splits):
    config = cfg()
    config["fit"]["method"] = "none"
    config["members"][1]["weight"] = 0.5  # up outweighs down: the level's order on both splits
    _, metrics, _ = build(splits, config)
    assert not any(k.startswith("val_") for k in metrics)  # off by default: the members never ran over val
    _, metrics, _ = build(splits, {**config, "score_val": True})
    assert metrics["val_score"] == 1.0 and metrics["score"] == 0.0 and "fit_score_val" not in metrics
    assert metrics["val_n_scored_classes"] == 2 and metrics["weight_it0_up"] == pytest.approx(2 / 3, abs=1e-4)


def test_every_competition_score_has_its_bootstrap_interval_and_the_fit_objective_none(splits):
    _, metrics, _ = build(splits, cfg(source="val"))
    for key in ("score", "member_it0_up_score", "member_it0_down_score", "score_hand_weights", "val_score"):
        assert metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"], key
    assert (metrics["score_ci_low"], metrics["score_ci_high"]) == (0.0, 0.0)  # test ranked backwards in every file
    assert "fit_score_val_ci_low" not in metrics and "score_aves_ci_low" not in metrics


def test_a_val_split_that_is_needed_but_unusable_is_an_error_naming_the_setting(splits, tmp_path):
    (tmp_path / "empty").mkdir()
    cases = [
        (None, "none was given"),
        (S.read_split("val", tmp_path / "gone", tmp_path / "x.csv"), "gone does not exist"),
        (S.read_split("val", tmp_path / "empty", tmp_path / "x.csv"), "empty holds no audio files"),
        (S.read_split("val", splits["val"].files[0].parent, tmp_path / "x.csv"), "x.csv does not exist"),
    ]
    for val, why in cases:
        splits_ = {**splits, "val": val}
        with pytest.raises(
            ValueError, match=f"ensemble.fit.source: val needs labelled validation soundscapes, but .*{why}"
        ):
            build(splits_, cfg(source="val"))
        with pytest.raises(ValueError, match=f"ensemble.score_val: true needs labelled .*{why}"):
            build(splits_, {**cfg(), "fit": {"method": "none"}, "score_val": True})
    _, metrics, _ = build({**splits, "val": cases[1][0]}, {**cfg(), "fit": {"method": "none"}})  # not needed: fine
    assert metrics["n_soundscapes"] == 3
    with pytest.raises(ValueError, match="the val and test splits share 3 soundscape"):
        build({**splits, "val": splits["test"]}, cfg(source="val"))


def test_read_split_lists_the_audio_and_reads_the_labels(splits):
    val = splits["val"]
    assert val.split == "val" and val.missing == "" and [f.name for f in val.files] == ["val_0.wav", "val_1.wav"]
    assert val.labels["row_id"].tolist()[:2] == ["val_0_5", "val_0_10"] and val.labels.shape == (24, 3)


def test_the_ensemble_section_is_strict_and_params_yaml_fits_on_val():
    committed = yaml.safe_load((REPO / "params.yaml").read_text())["ensemble"]
    checked = S.check_cfg(committed)
    assert checked["fit"]["source"] == "val" and checked["score_val"] is False and checked["fit"]["method"] == "none"
    bad = {
        "members": [],
        "fitt": {},
        "fit": {"sorce": "val", "method": "grid"},
        "combination": "median",
        "score_val": 1,
    }
    with pytest.raises(ValueError) as err:
        S.check_cfg(bad)
    for part in ("unknown key(s) ensemble.fitt (ensemble takes: members, combination, fit,",
                 "unknown key(s) ensemble.fit.sorce (ensemble.fit takes: method, source, grid, rounds)",
                 "ensemble.fit.method must be one of none, coordinate, got 'grid'",
                 "ensemble.combination must be one of mean, minmax, rank, got 'median'",
                 "ensemble.score_val must be true or false, got 1"):  # fmt: skip
        assert part in str(err.value), part
    with pytest.raises(ValueError, match="ensemble.fit.source must be one of val, soundscapes, oof, got 'test'"):
        S.check_cfg({"fit": {"source": "test"}})


def test_the_teacher_weight_fitted_on_val_never_sees_test(splits, monkeypatch):
    """ensemble.teacher.fit: a stand-in teacher scoring by level ranks val perfectly (and test backwards) against a
    students' ``down`` member that ranks val backwards, so on val a rank blend wins from w = 0.6 (w = 0.5 is flat):
    the fit takes 0.6 (the winner nearest the hand 0.2) from the val rows alone, and test pays for it."""
    import soundfile as sf

    from birdclef.infer.teacher_member import TeacherRun

    seen = []

    def teacher_run(entry, files, n_windows, workers=1, threads=None):
        seen.append(sorted(Path(f).stem.split("_")[0] for f in files))
        levels = [np.abs(sf.read(f, dtype="float32")[0]).reshape(12, -1).mean(axis=1) for f in files]
        return TeacherRun(probs=np.repeat(np.concatenate(levels)[:, None], 2, axis=1), audio_seconds=60.0 * len(files))

    monkeypatch.setattr(S.teacher_member, "predict_files", teacher_run)
    monkeypatch.setattr(S.teacher_spec, "predict_files", teacher_run)
    config = {"members": [{"iteration": 0, "model": "down"}], "postprocess": {"smoothing": {"enabled": False}},
              "teacher": {"enabled": True, "fit": True}}  # fmt: skip
    entry = {"weight": 0.2, "method": "rank", "index": [0, 1]}
    spec, metrics, _ = S.build_spec(config, splits["train"], splits["test"], TWO, level_factory, teacher=entry,
                                    val=splits["val"])  # fmt: skip
    assert metrics["teacher_weight_hand"] == 0.2 and metrics["teacher_weight"] == spec["teacher"]["weight"] == 0.6
    assert metrics["fit_val_teacher_w0.4"] == 0.0 and metrics["fit_val_teacher_w0.5"] == 0.5
    assert metrics["fit_score_val_teacher"] == metrics["val_score"] == 1.0
    assert metrics["score"] == 0.0 and metrics["students_score"] == 1.0
    assert seen[0] == ["val", "val"] and ["test"] * 3 in seen and len(seen) == 2  # val ran once, for fit and score
    entry = {"weight": 0.2, "method": "rank", "index": [0, 1]}
    with pytest.raises(ValueError, match="ensemble.teacher.fit: true needs labelled validation soundscapes"):
        S.build_spec(config, splits["train"], splits["test"], TWO, level_factory, teacher=entry, val=None)
    # per_class: each species fitted on its own val column; both are alike here, so both keep the global 0.6
    config["teacher"]["per_class"] = True
    spec, metrics, _ = S.build_spec(config, splits["train"], splits["test"], TWO, level_factory, teacher=entry,
                                    val=splits["val"])  # fmt: skip
    assert spec["teacher"]["class_weights"] == [0.6, 0.6] and metrics["teacher_class_weights_fitted"] == 0
    assert metrics["fit_score_val_teacher_per_class"] == metrics["val_score"] == 1.0 and metrics["score"] == 0.0
    assert metrics["score_teacher_one_weight"] == 0.0  # the same weights: the same test score


# ---------------------------------------------------------------- files that cannot be scored (ensemble.on_bad)


def _scorable_mess(splits, tmp_path: Path) -> tuple[Path, Path, Path]:
    """The test split plus a corrupt file, a cut file, a file without labels, one labelled for half its windows and
    one acquire quarantined (labelled, so only the quarantine keeps it out)."""
    import shutil

    import soundfile as sf

    from birdclef.infer.submission import row_ids

    folder = Path(shutil.copytree(splits["test"].files[0].parent, tmp_path / "test_soundscapes"))
    level = (np.full(60 * SR, 0.2) * np.where(np.arange(60 * SR) % 2 == 0, 1.0, -1.0)).astype(np.float32)
    (folder / "test_bad.ogg").write_bytes(b"OggS" + bytes(100))
    sf.write(folder / "test_cut.ogg", level, SR)
    data = (folder / "test_cut.ogg").read_bytes()
    (folder / "test_cut.ogg").write_bytes(data[: len(data) // 2])
    for stem in ("test_nolabel", "test_half", "test_quarantined"):
        sf.write(folder / f"{stem}.wav", level, SR)
    extra = row_ids("test_half", 6) + [rid for s in ("quarantined", "cut", "bad") for rid in row_ids(f"test_{s}", 12)]
    labels = pd.concat([splits["test"].labels, pd.DataFrame({"row_id": extra, "a": 1, "b": 0})], ignore_index=True)
    labels.to_csv(tmp_path / "test_labels.csv", index=False)
    pd.DataFrame(
        {"kind": ["truncated"], "row": [""], "file": ["test_soundscapes/test_quarantined.wav"], "problem": ["cut"]}
    ).to_csv(tmp_path / "quarantine.csv", index=False)
    return folder, tmp_path / "test_labels.csv", tmp_path / "quarantine.csv"


def test_bad_cut_unlabelled_and_quarantined_test_files_are_left_out_and_counted(splits, tmp_path, caplog):
    import logging

    folder, labels, quarantine = _scorable_mess(splits, tmp_path)
    config = {**cfg(), "fit": {"method": "none"}}
    config["members"][1]["weight"] = 2.0  # down outweighs up: test's labels are ranked right
    test = S.read_split("test", folder, labels, quarantine)
    assert [f.name for f in test.files if "quarantined" in f.name] == []
    with caplog.at_level(logging.WARNING):
        _, metrics, tables = S.build_spec(config, splits["train"], test, TWO, level_factory)
    _, clean, clean_tables = build(splits, config, val=None)
    assert metrics["score"] == clean["score"] == 1.0 and metrics["n_soundscapes"] == 3
    assert (metrics["n_soundscapes_failed"], metrics["n_soundscapes_unlabelled"]) == (2, 2)  # bad, cut; no, half
    assert metrics["n_soundscapes_quarantined"] == 1 and clean["n_soundscapes_failed"] == 0
    pd.testing.assert_frame_equal(tables["ensemble"], clean_tables["ensemble"])
    for name in ("test_bad.ogg", "test_cut.ogg", "test_nolabel.wav", "test_half.wav", "test_quarantined.wav"):
        [line] = [r.getMessage() for r in caplog.records if name in r.getMessage()]  # one message per file ...
        assert line.count(name) == 1 and "left out of the test scores" in line  # ... naming it once
    fail = {**config, "on_bad": "fail"}
    with pytest.raises(ValueError, match=r"test_nolabel.wav: no label row names it \(set ensemble.on_bad: skip"):
        S.build_spec(fail, splits["train"], test, TWO, level_factory)
    (folder / "test_nolabel.wav").unlink()
    with pytest.raises(ValueError, match="test_bad.ogg: unreadable: File contains data in an unimplemented format"):
        S.build_spec(fail, splits["train"], S.read_split("test", folder, labels, quarantine), TWO, level_factory)
    with pytest.raises(ValueError, match="ensemble.on_bad must be one of skip, fail, got 'ignore'"):
        S.check_cfg({"on_bad": "ignore"})


def test_a_split_with_nothing_to_score_is_an_error_naming_why(splits, tmp_path):
    folder, labels, quarantine = _scorable_mess(splits, tmp_path)
    for f in splits["test"].files:
        (folder / f.name).unlink()
    test = S.read_split("test", folder, labels, quarantine)
    with pytest.raises(ValueError, match=r"no test soundscape can be scored: .*test_bad.ogg"):
        S.build_spec({**cfg(), "fit": {"method": "none"}}, splits["train"], test, TWO, level_factory)


def test_peak_tta_on_gain_invariant_members_is_an_error_naming_them(splits):
    config = {**cfg(method="none"), "postprocess": {"smoothing": {"enabled": False}, "peak_tta": {"enabled": True}}}
    with pytest.raises(ValueError, match=r"ensemble\.postprocess\.peak_tta cannot apply.*it0_up \(norm ref_max\)"):
        build(splits, config, val=None)
