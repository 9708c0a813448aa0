"""The ensemble's members at inference: the spec that lists them, each one's chunking, and the factories that build
their predictors (eager torch from the checkpoints, or an export folder on onnxruntime / OpenVINO).

Split from ``runner`` (which streams files through whatever these build) so that the ensemble stage, export, infer,
``birdclef predict`` and the sharded runner share one definition of a spec and of a member's chunking.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from birdclef.infer.windows import GroupPredictor, Predictor, stack_predictors

log = logging.getLogger(__name__)

PredictorFactory = Callable[[Mapping[str, Any], int], Predictor]
"""``(member spec, intra-op threads) -> Predictor``; called once per member inside each worker."""

PREDICT_DEFAULTS = {"chunk_s": 5.0, "stride_s": 5.0, "window_s": 5.0, "pool": "mean", "pad": True, "batch_size": 16}
SPEC_FORMAT = "birdclef-ensemble"


def load_spec(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check an ensemble spec (written by the ensemble stage, see ``ensemble_spec.build_spec``)."""
    spec = json.loads(Path(path).read_text())
    if spec.get("format") != SPEC_FORMAT:
        raise ValueError(f"{path}: not an ensemble spec (format {spec.get('format')!r}, expected {SPEC_FORMAT!r})")
    for key in ("classes", "members", "combination", "postprocess", "predict"):
        if key not in spec:
            raise ValueError(f"{path}: ensemble spec has no {key!r}")
    if not spec["members"]:
        raise ValueError(f"{path}: ensemble spec has no members")
    for i, m in enumerate(spec["members"]):
        missing = [k for k in ("name", "checkpoint", "weight", "classes") if k not in m]
        if missing:
            raise ValueError(f"{path}: member {i} lacks {missing}")
    return spec


def member_predict_cfg(member: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Chunking config of one member: ``PREDICT_DEFAULTS`` < ensemble ``predict`` < the member's ``predict``."""
    cfg = {**PREDICT_DEFAULTS, **(defaults or {}), **(member.get("predict") or {})}
    unknown = set(cfg) - set(PREDICT_DEFAULTS)
    if unknown:
        raise ValueError(f"member {member.get('name')!r}: unknown predict key(s) {sorted(unknown)}")
    return cfg


@dataclass(frozen=True)
class TorchFactory:
    """Eager torch predictors from the members' checkpoints, a picklable ``PredictorFactory``.

    ``group`` runs each mel config once per batch for all the members that use it (``backends.TorchGroup``), as
    ``ExportFactory`` does for exported graphs: two members of one mel config cost one front end, not two.
    """

    def __call__(self, member: Mapping[str, Any], threads: int) -> Predictor:
        # Imported here: onnxruntime workers never need torch.
        from birdclef.infer.torch_backend import TorchPredictor

        return TorchPredictor(member["checkpoint"], threads)

    def group(self, members: Sequence[Mapping[str, Any]], threads: int) -> GroupPredictor:
        """The members as one group predictor sharing the front end of each mel config."""
        from birdclef.infer.torch_backend import TorchGroup

        return TorchGroup([m["checkpoint"] for m in members], threads)


torch_factory = TorchFactory()
"""The eager torch ``PredictorFactory`` (the ensemble stage's, and ``make_factory("torch")``)."""


_EXPORTED: dict[tuple[str, str | None, int], Any] = {}


@dataclass(frozen=True)
class ExportFactory:
    """Member predictors from an export folder (``backends.ExportedEnsemble``), a picklable ``PredictorFactory``.

    One ``ExportedEnsemble`` is built per worker process, so members sharing a mel config compute it once.
    ``backend=None`` takes the backend the export stage chose (the faster one whose parity held).
    """

    export_dir: str
    backend: str | None = None

    def __call__(self, member: Mapping[str, Any], threads: int) -> Predictor:
        predict = self.group([member], threads)
        return lambda wave: predict(wave)[0]

    def group(self, members: Sequence[Mapping[str, Any]], threads: int) -> GroupPredictor:
        """The members as one group predictor: each mel config they use runs once per batch."""
        from birdclef.infer.backends import ExportedEnsemble

        key = (self.export_dir, self.backend, int(threads))
        if key not in _EXPORTED:
            _EXPORTED[key] = ExportedEnsemble(self.export_dir, self.backend, int(threads))
        return _EXPORTED[key].group_predictor([m["name"] for m in members])


def group_predictor(factory: PredictorFactory, members: Sequence[Mapping[str, Any]], threads: int) -> GroupPredictor:
    """Members that share a chunking as one ``windows.GroupPredictor``: the factory's own ``group`` when it has
    one (``ExportFactory``: one front end per mel config for all of them), else their predictors side by side."""
    group = getattr(factory, "group", None)
    if group is not None:
        return group(members, threads)
    return stack_predictors([factory(m, threads) for m in members])


def make_factory(backend: str, export_dir: str | os.PathLike[str] | None = None) -> PredictorFactory:
    """Predictor factory by backend name.

    ``torch`` runs the checkpoints; ``onnxruntime`` / ``openvino`` the export folder; ``auto`` the export
    folder on the backend the export stage chose when ``export_dir`` holds an export, else torch (warning).
    """
    exported = export_dir is not None and (Path(export_dir) / "export_spec.json").is_file()
    if backend == "auto" and not exported:
        log.warning("no export folder with export_spec.json (%s): falling back to the torch backend", export_dir)
        return torch_factory
    if backend == "torch":
        return torch_factory
    if backend not in ("auto", "onnxruntime", "openvino"):
        raise ValueError(f"infer backend must be auto, torch, onnxruntime or openvino, not {backend!r}")
    if not exported:
        raise FileNotFoundError(f"backend {backend} needs an export folder with export_spec.json, got {export_dir}")
    return ExportFactory(str(export_dir), None if backend == "auto" else backend)
