"""Foundation-model teachers (BirdNET V2.4, Perch v2, any ONNX model): adapters by name, label mapping onto the
competition species, windowed prediction, the teacher stage's outputs and per-class blending with students."""

from birdclef.teachers import birdnet as _birdnet  # noqa: F401  (registers birdnet)
from birdclef.teachers import onnx_teacher as _onnx  # noqa: F401  (registers onnx and perch_v2)
from birdclef.teachers._registry import create_teacher, get_teacher_class, list_teachers, register_teacher
from birdclef.teachers.base import Teacher, read_labels
from birdclef.teachers.birdnet import BirdNetTeacher
from birdclef.teachers.blend import blend, mean_with_teacher
from birdclef.teachers.labels import LabelMap, map_labels
from birdclef.teachers.onnx_teacher import OnnxTeacher, PerchV2Teacher
from birdclef.teachers.outputs import TeacherOutputs, confident_segments, load_outputs, teacher_info
from birdclef.teachers.params import TeacherParams
from birdclef.teachers.windows import predict_windows, tile_offsets

__all__ = [
    "BirdNetTeacher",
    "LabelMap",
    "OnnxTeacher",
    "PerchV2Teacher",
    "Teacher",
    "TeacherOutputs",
    "TeacherParams",
    "blend",
    "confident_segments",
    "create_teacher",
    "get_teacher_class",
    "list_teachers",
    "load_outputs",
    "map_labels",
    "mean_with_teacher",
    "predict_windows",
    "read_labels",
    "register_teacher",
    "teacher_info",
    "tile_offsets",
]
