"""Tiny stand-in teachers built by the tests: an ONNX graph and a TFLite flatbuffer with the declared outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SR = 32_000
FRAMES = 4
# logits = W @ energy + b: class q lights when quarter q of the teacher window is loud, class "all" when any is.
WEIGHT = np.concatenate([100.0 * np.eye(FRAMES), 100.0 * np.ones((1, FRAMES))]).astype(np.float32)
BIAS = np.full(FRAMES + 1, -5.0, dtype=np.float32)
LABELS = ["Alpha prima_Alpha", "Beta secunda_Beta", "Gamma tertia_Gamma", "Delta quarta_Delta", "Omnia sonora_All"]
REAL_AUDIO = Path(__file__).resolve().parents[2] / "shared" / "real-audio"


def energy_onnx(
    path: Path,
    samples: int,
    *,
    input_name: str = "inputs",
    logits: str = "label",
    embedding: str = "embedding",
    extra_outputs: bool = False,
    static: bool = True,
) -> Path:
    """A stand-in ONNX teacher: embedding = mean energy of each quarter of the window, logits = WEIGHT @ it + BIAS."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(np.array([-1, FRAMES, samples // FRAMES], np.int64), "shape"),
        numpy_helper.from_array(np.ascontiguousarray(WEIGHT.T), "w"),
        numpy_helper.from_array(BIAS, "b"),
    ]
    nodes = [
        helper.make_node("Reshape", [input_name, "shape"], ["framed"]),
        helper.make_node("Mul", ["framed", "framed"], ["squared"]),
        helper.make_node("ReduceMean", ["squared"], [embedding], axes=[2], keepdims=0),
        helper.make_node("MatMul", [embedding, "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], [logits]),
    ]
    outputs = [helper.make_tensor_value_info(embedding, TensorProto.FLOAT, ["batch", FRAMES if static else "d"])]
    if extra_outputs:  # Perch v2's export also has these; the adapter must ignore them
        nodes += [helper.make_node("Identity", ["squared"], ["spectrogram"]),
                  helper.make_node("Identity", [embedding], ["spatial_embedding"])]  # fmt: skip
        outputs += [helper.make_tensor_value_info("spatial_embedding", TensorProto.FLOAT, ["batch", FRAMES]),
                    helper.make_tensor_value_info("spectrogram", TensorProto.FLOAT, ["b", FRAMES, "n"])]  # fmt: skip
    outputs.append(helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["batch", len(LABELS)]))
    graph = helper.make_graph(
        nodes, "energy_teacher",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", samples if static else "n"])],
        outputs, inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def energy_tflite(path: Path, samples: int = 144_000) -> Path:
    """The same stand-in as a TFLite flatbuffer with BirdNET's layout: the embedding tensor sits right before the
    logits output (index output - 1)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as S

    def buffer(a: np.ndarray | None = None):
        b = S.BufferT()
        if a is not None:
            b.data = np.frombuffer(np.ascontiguousarray(a).tobytes(), np.uint8)
        return b

    def tensor(name: str, shape: list[int], buf: int = 0, kind: int = S.TensorType.FLOAT32):
        t = S.TensorT()
        t.name, t.shape, t.buffer, t.type = name, shape, buf, kind
        return t

    def op(code: int, ins: list[int], outs: list[int], kind: int, opts):
        o = S.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs, o.builtinOptionsType, o.builtinOptions = code, ins, outs, kind, opts
        return o

    codes = []
    for builtin in (S.BuiltinOperator.RESHAPE, S.BuiltinOperator.MUL, S.BuiltinOperator.MEAN,
                    S.BuiltinOperator.FULLY_CONNECTED):  # fmt: skip
        c = S.OperatorCodeT()
        c.builtinCode = c.deprecatedBuiltinCode = builtin
        c.version = 1
        codes.append(c)
    per = samples // FRAMES
    reshape, reducer = S.ReshapeOptionsT(), S.ReducerOptionsT()
    reshape.newShape, reducer.keepDims = [-1, FRAMES, per], False
    sub = S.SubGraphT()
    sub.tensors = [
        tensor("input", [1, samples]), tensor("shape", [3], 1, S.TensorType.INT32), tensor("framed", [1, FRAMES, per]),
        tensor("squared", [1, FRAMES, per]), tensor("axis", [1], 2, S.TensorType.INT32),
        tensor("w", [len(LABELS), FRAMES], 3), tensor("b", [len(LABELS)], 4),
        tensor("model/GLOBAL_AVG_POOL/Mean", [1, FRAMES]), tensor("Identity", [1, len(LABELS)]),
    ]  # fmt: skip
    sub.operators = [
        op(0, [0, 1], [2], S.BuiltinOptions.ReshapeOptions, reshape),
        op(1, [2, 2], [3], S.BuiltinOptions.MulOptions, S.MulOptionsT()),
        op(2, [3, 4], [7], S.BuiltinOptions.ReducerOptions, reducer),
        op(3, [7, 5, 6], [8], S.BuiltinOptions.FullyConnectedOptions, S.FullyConnectedOptionsT()),
    ]
    sub.inputs, sub.outputs = [0], [8]
    model = S.ModelT()
    model.version, model.operatorCodes, model.subgraphs = 3, codes, [sub]
    model.buffers = [buffer(), buffer(np.array([-1, FRAMES, per], np.int32)), buffer(np.array([2], np.int32)),
                     buffer(WEIGHT), buffer(BIAS)]  # fmt: skip
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path


def write_txt_labels(path: Path, labels: list[str] = LABELS) -> Path:
    path.write_text("\n".join(labels))  # no trailing newline, as BirdNET's file
    return path


def expected(energies: np.ndarray) -> np.ndarray:
    return energies @ WEIGHT.T + BIAS


def burst(seconds: float, start_s: float, stop_s: float, sr: int = SR, amp: float = 0.8) -> np.ndarray:
    """Silence with a 1 kHz tone between start_s and stop_s."""
    wave = np.zeros(round(seconds * sr), np.float32)
    t = np.arange(round(start_s * sr), round(stop_s * sr))
    wave[t] = amp * np.sin(2 * np.pi * 1000 * t / sr)
    return wave


def stand_in_section(folder: Path, samples: int = 144_000, sample_rate: int = 48_000) -> dict:
    """A params ``teacher`` section for the stand-in ONNX teacher (default: BirdNET's 48 kHz, 3-s geometry)."""
    folder.mkdir(parents=True, exist_ok=True)
    return {"name": "onnx", "model_path": str(energy_onnx(folder / "energy.onnx", samples)),
            "labels_path": str(write_txt_labels(folder / "labels.txt")), "sample_rate": sample_rate,
            "window_s": samples / sample_rate, "logits_output": "label", "embedding_output": "embedding"}  # fmt: skip


def stand_in_entry(folder: Path, classes: list[str], scientific: dict[str, str], **cfg) -> dict:
    """The ensemble spec's teacher entry (``teacher_spec.describe``) of the stand-in, covering ``scientific``'s
    species (their scientific names are stand-in labels, e.g. ``Omnia sonora`` = class 4)."""
    import pandas as pd

    from birdclef.infer.teacher_spec import describe

    taxonomy = pd.DataFrame({"primary_label": classes, "scientific_name": [scientific.get(c, "") for c in classes]})
    return describe({"enabled": True, **cfg}, stand_in_section(folder), classes, taxonomy)
