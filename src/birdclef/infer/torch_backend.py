"""The torch backend's predictors: one ``BirdModel`` (``TorchPredictor``), or several sharing their mel front ends
(``TorchGroup``); the reference the ONNX backends (``backends``) are checked against. Repository only: the Kaggle
bundle runs numpy and onnxruntime.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np


class TorchPredictor:
    """Predictor on a torch model (``birdclef.models.BirdModel``): sigmoid of its clip and frame logits.

    Args:
        model: the model (put in eval mode), or a checkpoint path for ``birdclef.models.load_checkpoint``.
        threads: torch intra-op threads; ``None`` leaves torch's setting alone.
    """

    def __init__(self, model: Any, threads: int | None = None) -> None:
        import torch

        from birdclef.models import InferenceWrapper, load_checkpoint

        if isinstance(model, str | os.PathLike):
            model, _ = load_checkpoint(model)
        if threads is not None:
            torch.set_num_threads(int(threads))
        self.wrapper = InferenceWrapper(model)

    def __call__(self, wave: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            clip, frame = self.wrapper(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)))
        return {"clip": clip.numpy(), "frame": frame.numpy()}


class TorchGroup:
    """Several torch models fed the same batch, each distinct mel config computed once (a ``GroupPredictor``).

    The front end has no weights (``MelFrontEnd``: STFT, mel filters, dB and a per-input normalisation), so members
    whose ``mel_cfg`` is equal get the very same mel image from one pass; only the backbones and heads run per
    member. Outputs equal ``[TorchPredictor(m)(wave) for m in models]``.

    Args:
        models: ``BirdModel`` instances or checkpoint paths, in output order.
        threads: torch intra-op threads; ``None`` leaves torch's setting alone.
    """

    def __init__(self, models: Sequence[Any], threads: int | None = None) -> None:
        import torch

        from birdclef.models import load_checkpoint

        if threads is not None:
            torch.set_num_threads(int(threads))
        self.models = [load_checkpoint(m)[0] if isinstance(m, str | os.PathLike) else m for m in models]
        if not self.models:
            raise ValueError("TorchGroup needs at least one model")
        for model in self.models:
            model.eval()
        # One front end per distinct mel config: position of the first model that uses it.
        self.frontend_of: list[int] = []
        for i, model in enumerate(self.models):
            first = next(j for j in range(i + 1) if self.models[j].mel_cfg == model.mel_cfg)
            self.frontend_of.append(first)

    def __call__(self, wave: np.ndarray) -> list[dict[str, np.ndarray]]:
        import torch

        outputs = []
        mels: dict[int, torch.Tensor] = {}
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
            for model, first in zip(self.models, self.frontend_of, strict=True):
                if first not in mels:
                    mels[first] = self.models[first].frontend(x)
                out = model.forward_mel(mels[first])
                outputs.append({key: torch.sigmoid(out[key]).numpy() for key in ("clip", "frame")})
        return outputs
