"""Tests for birdclef.infer.precision: INT8 (static QDQ, and NNCF's OpenVINO IR) and OpenVINO FP16 member bodies,
their parity with the fp32 graphs, and the refusal of settings that cannot apply."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from birdclef.infer.backends import ExportedEnsemble, available_backends, load_graph
from birdclef.infer.export import export_ensemble
from birdclef.infer.parity import synthetic_audio
from birdclef.infer.precision import (
    WINDOWS_PER_FILE,
    calibration_windows,
    check_precision_params,
    choose_reduced_backend,
    quantized_nodes,
)

from export_fixtures import EXPORT_PARAMS, SR, ensemble_spec, make_members, write_soundscapes

needs_openvino = pytest.mark.skipif("openvino" not in available_backends(), reason="openvino not installed")
HAS_NNCF = importlib.util.find_spec("nncf") is not None


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("precision")
    write_soundscapes(root / "calibration", ["c0", "c1", "c2"], seconds=30.0)
    return root, make_members(root)


def _export(members, precision: str) -> tuple[Path, dict]:
    root, entries = members
    params = {**EXPORT_PARAMS, "precision": precision, "calibration_audio": str(root / "calibration")}
    metrics = export_ensemble(entries, root / f"export_{precision}", params, ensemble_spec(entries))
    return root / f"export_{precision}", metrics


@pytest.fixture(scope="module")
def int8(members):
    return _export(members, "int8")


@pytest.fixture(scope="module")
def fp16(members):
    if "openvino" not in available_backends():
        pytest.skip("openvino not installed")
    return _export(members, "fp16")


@pytest.fixture(scope="module")
def int8_nncf(members):
    if "openvino" not in available_backends() or not HAS_NNCF:
        pytest.skip("openvino or nncf not installed")
    return _export(members, "int8_nncf")


def test_int8_bodies_are_quantised_graphs_served_on_onnxruntime_next_to_the_fp32_ones(int8):
    folder, metrics = int8
    spec = json.loads((folder / "export_spec.json").read_text())
    assert spec["precision"] == "int8" and spec["backend"] == "onnxruntime" == metrics["backend"]
    for member in spec["members"]:
        assert member["body"] == f"member_{member['name']}_int8.onnx"
        assert member["body_fp32"] == f"member_{member['name']}.onnx"
        assert quantized_nodes(folder / member["body_fp32"]) == 0
        assert quantized_nodes(folder / member["body"]) == metrics[f"int8_nodes_{member['name']}"] > 10
        # int8 weights: the graph is well under the fp32 one's size
        assert (folder / member["body"]).stat().st_size < 0.7 * (folder / member["body_fp32"]).stat().st_size
    assert not list(folder.glob(".*.pre.onnx"))  # the pre-processed temporary is gone


def test_int8_outputs_follow_fp32_within_the_tolerance_but_are_not_the_fp32_numbers(int8):
    folder, metrics = int8
    wave = synthetic_audio(3, seed=4)
    fp32 = ExportedEnsemble(folder, "onnxruntime", precision="fp32").member_outputs(wave)
    served = ExportedEnsemble(folder, "onnxruntime").member_outputs(wave)
    for name, want in fp32.items():
        diff = max(float(np.abs(want[k] - served[name][k]).max()) for k in ("clip", "frame"))
        assert 1e-6 < diff < 0.05, (name, diff)  # quantised (not the fp32 numbers), yet close
        assert 0 < metrics[f"parity_int8_onnxruntime_{name}"] <= 0.05


@needs_openvino
def test_openvino_runs_the_int8_graph_like_onnxruntime(int8):
    folder, metrics = int8
    wave = synthetic_audio(2, seed=5)
    ort = ExportedEnsemble(folder, "onnxruntime").member_outputs(wave)
    ov = ExportedEnsemble(folder, "openvino").member_outputs(wave)
    for name in ort:
        assert np.abs(ort[name]["clip"] - ov[name]["clip"]).max() < 0.05
        assert metrics[f"parity_int8_openvino_{name}"] <= 0.05


def test_fp16_ir_stores_half_precision_weights_and_serves_on_openvino(fp16):
    folder, metrics = fp16
    spec = json.loads((folder / "export_spec.json").read_text())
    assert spec["precision"] == "fp16" and spec["backend"] == "openvino" == metrics["backend"]
    for member in spec["members"]:
        xml = folder / member["body"]
        assert xml.suffix == ".xml" and xml.with_suffix(".bin").is_file()
        types = re.findall(r'element_type="(\w+)"', xml.read_text())
        assert types.count("f16") > 5  # the weight constants, decompressed at load
        # FP16 weights: about half the bytes of the fp32 ONNX graph
        assert xml.with_suffix(".bin").stat().st_size < 0.6 * (folder / member["body_fp32"]).stat().st_size
        assert 0 < metrics[f"parity_fp16_openvino_{member['name']}"] < 1e-2
    assert "parity_fp16_onnxruntime_it0_sed_tiny" not in metrics  # onnxruntime cannot load an IR


def test_fp16_export_falls_back_to_the_fp32_body_on_onnxruntime(fp16):
    folder, _ = fp16
    wave = synthetic_audio(2, seed=6)
    fallback = ExportedEnsemble(folder, "onnxruntime").member_outputs(wave)
    fp32 = ExportedEnsemble(folder, "onnxruntime", precision="fp32").member_outputs(wave)
    for name in fp32:
        np.testing.assert_array_equal(fallback[name]["clip"], fp32[name]["clip"])
    with pytest.raises(ValueError, match="only the openvino backend"):
        spec = json.loads((folder / "export_spec.json").read_text())
        load_graph("onnxruntime", folder / spec["members"][0]["body"])


def test_nncf_bodies_are_int8_openvino_irs_next_to_the_fp32_ones(int8_nncf):
    folder, metrics = int8_nncf
    spec = json.loads((folder / "export_spec.json").read_text())
    assert spec["precision"] == "int8_nncf" and spec["backend"] == "openvino" == metrics["backend"]
    for member in spec["members"]:
        name = member["name"]
        assert member["body"] == f"member_{name}_int8_nncf.xml" and member["body_fp32"] == f"member_{name}.onnx"
        assert (folder / member["body"]).with_suffix(".bin").is_file()
        # every Conv and MatMul input gets a quantiser: dozens of FakeQuantize ops in the tiny model
        assert quantized_nodes(folder / member["body"]) == metrics[f"int8_nodes_{name}"] > 10
        assert 0 < metrics[f"parity_int8_nncf_openvino_{name}"] <= 0.05
    assert not any(k.startswith("parity_int8_nncf_onnxruntime") for k in metrics)  # onnxruntime cannot load an IR


@pytest.mark.skipif(not HAS_NNCF or "openvino" not in available_backends(), reason="openvino or nncf not installed")
def test_nncf_keeps_stdout_clean(members, tmp_path, capfd):
    from birdclef.infer.precision import quantize_nncf

    root, entries = members
    folder, _ = _export(members, "fp32") if not (root / "export_fp32").exists() else (root / "export_fp32", None)
    body = folder / json.loads((folder / "export_spec.json").read_text())["members"][0]["body"]
    capfd.readouterr()
    calibration = np.random.default_rng(0).standard_normal((2, *_mel_shape(folder))).astype(np.float32)
    quantize_nncf(body, tmp_path / "q.xml", calibration)
    assert capfd.readouterr().out == ""  # a benchmark's JSON or a stage's stdout stays parseable


def _mel_shape(folder: Path) -> tuple[int, ...]:
    import onnx

    spec = json.loads((folder / "export_spec.json").read_text())
    graph = onnx.load(str(folder / spec["members"][0]["body"]), load_external_data=False).graph
    return tuple(d.dim_value or 1 for d in graph.input[0].type.tensor_type.shape.dim)[1:]


def test_nncf_outputs_follow_fp32_but_are_not_the_fp32_numbers(int8_nncf):
    folder, _ = int8_nncf
    wave = synthetic_audio(2, seed=7)
    served = ExportedEnsemble(folder, "openvino").member_outputs(wave)
    fp32 = ExportedEnsemble(folder, "onnxruntime", precision="fp32").member_outputs(wave)
    for name, want in fp32.items():
        diff = max(float(np.abs(want[k] - served[name][k]).max()) for k in ("clip", "frame"))
        assert 1e-6 < diff < 0.05, (name, diff)  # quantised (not the fp32 numbers), yet close
    # the fp32 fallback on onnxruntime is the fp32 body, bit for bit
    fallback = ExportedEnsemble(folder, "onnxruntime").member_outputs(wave)
    for name in fp32:
        np.testing.assert_array_equal(fallback[name]["clip"], fp32[name]["clip"])


@pytest.mark.parametrize(
    ("cfg", "installed", "match"),
    [
        ({"precision": "bf16"}, ["onnxruntime"], "must be one of"),
        ({"precision": "fp16", "backend": "onnxruntime"}, ["onnxruntime", "openvino"], "cannot serve"),
        ({"precision": "fp16"}, ["onnxruntime"], "install openvino"),
        ({"precision": "int8_nncf", "calibration_audio": "x"}, ["onnxruntime"], "install openvino"),
        ({"precision": "int8_nncf", "backend": "onnxruntime"}, ["onnxruntime", "openvino"], "cannot serve"),
        ({"precision": "int8_nncf", "calibration_audio": None}, ["openvino"], "calibration_audio"),
        ({"precision": "int8", "calibration_audio": None}, ["onnxruntime"], "calibration_audio"),
        ({"precision": "int8", "calibration_audio": "x", "calibration_windows": 0}, ["onnxruntime"], ">= 1"),
        ({"precision": "int8", "calibration_audio": "x", "precision_tolerance": 0}, ["onnxruntime"], r"\(0, 1\]"),
    ],
)
def test_impossible_precision_settings_are_refused(cfg, installed, match):
    with pytest.raises(ValueError, match=match):
        check_precision_params(cfg, installed)


def test_int8_nncf_without_nncf_names_the_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else real(name, *a))
    with pytest.raises(ValueError, match=r"pip install nncf"):
        check_precision_params({"precision": "int8_nncf", "calibration_audio": "x"}, ["openvino"])


def test_valid_precision_settings_pass():
    check_precision_params({"precision": "fp32", "backend": "onnxruntime"}, ["onnxruntime"])
    check_precision_params({"precision": "int8", "calibration_audio": "x", "backend": "openvino"}, ["onnxruntime"])


def test_a_reduced_export_past_its_tolerance_is_refused():
    parity = {"onnxruntime": {"a": 0.01, "b": 0.2}, "openvino": {"a": 0.01, "b": 0.03}}
    cfg = {"precision": "int8", "precision_tolerance": 0.05, "backend": "auto"}
    assert choose_reduced_backend(parity, cfg) == "openvino"  # onnxruntime first, but it drifts on b
    with pytest.raises(ValueError, match="precision_tolerance 0.05"):
        choose_reduced_backend(parity, {**cfg, "backend": "onnxruntime"})
    with pytest.raises(ValueError, match="no backend"):
        choose_reduced_backend(parity, {**cfg, "precision_tolerance": 0.001})


def test_calibration_takes_spread_windows_from_each_recording_in_turn(tmp_path):
    for i, seconds in enumerate((60, 12, 3)):  # 12, 2 and 0 whole windows
        sf.write(tmp_path / f"r{i}.wav", np.full(seconds * SR, 0.1 * (i + 1), np.float32), SR)
    got = calibration_windows(tmp_path, 100)
    assert got.shape == (WINDOWS_PER_FILE + 2, 5 * SR) and got.dtype == np.float32
    np.testing.assert_allclose(got[:, 0], [0.1] * WINDOWS_PER_FILE + [0.2, 0.2], atol=1e-4)
    assert calibration_windows(tmp_path, 3).shape[0] == 3
    with pytest.raises(FileNotFoundError, match="no recording"):
        calibration_windows(tmp_path / "missing", 4)
