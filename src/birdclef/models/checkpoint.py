"""Model checkpoints: one self-describing file (weights, configs, classes, meta) that rebuilds offline."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from birdclef.features.frontend import MelConfig
from birdclef.io import atomic_path
from birdclef.models.backbone import ModelConfig
from birdclef.models.model import BirdModel

_FORMAT = "birdclef-model"
_VERSION = 1


def save_checkpoint(path: str | os.PathLike[str], model: BirdModel, meta: dict[str, Any]) -> None:
    """Write ``model`` and ``meta`` to ``path`` atomically.

    The class list is ``meta["classes"]`` when given, else ``model.classes``; its length must match the
    model's outputs.

    Args:
        path: output file (``.pt``).
        model: the model to save.
        meta: plain JSON-like data (str, int, float, bool, None, lists, dicts; tensors allowed): epoch, fold,
            metrics, ... It is returned unchanged by ``load_checkpoint``.
    """
    classes = meta.get("classes", model.classes)
    if classes is not None:
        classes = [str(c) for c in classes]
        if len(classes) != model.num_classes:
            raise ValueError(f"{len(classes)} class names for a model with {model.num_classes} outputs")
    payload = {
        "format": _FORMAT,
        "version": _VERSION,
        "model_cfg": model.cfg.to_dict(),
        "mel_cfg": model.mel_cfg.to_dict(),
        "num_classes": model.num_classes,
        "classes": classes,
        "frozen": model._frozen,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": dict(meta),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[BirdModel, dict[str, Any]]:
    """Rebuild the model saved by ``save_checkpoint`` without network access.

    ``pretrained`` is forced off (the saved weights replace any pretrained ones), so no hub download or
    weights file is needed. The model comes back in eval mode on ``map_location`` with ``classes`` set.

    Returns:
        (model, meta) with ``meta`` as it was saved.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a birdclef model checkpoint, or its weights do not fit its config.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: not a readable torch checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ValueError(f"{path}: not a birdclef model checkpoint (no format tag {_FORMAT!r})")
    if payload.get("version", 0) > _VERSION:
        raise ValueError(f"{path}: checkpoint version {payload['version']} is newer than this code ({_VERSION})")
    cfg = ModelConfig.from_dict(payload["model_cfg"]).offline()
    model = BirdModel(cfg, int(payload["num_classes"]), MelConfig.from_dict(payload["mel_cfg"]))
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit the saved model config: {err}") from err
    model.classes = payload.get("classes")
    if payload.get("frozen"):
        model.freeze_backbone(True)
    model.to(map_location)
    model.eval()
    return model, payload.get("meta", {})
