"""Benchmark SynthCLEF: generation time and size of the tiny and demo presets, optionally a difficulty check.

Prints one JSON object. Examples:

    python benchmarks/synth.py                      # tiny (median of 3 runs) and demo, 2 workers
    python benchmarks/synth.py --skip-demo
    python benchmarks/synth.py --baseline           # + quick sklearn difficulty check on the demo data
    python benchmarks/synth.py --baseline --set soundscape.snr_db=[-3,15]   # retuning a knob
    python benchmarks/synth.py --skip-tiny --cnn    # + small-CNN proxy (about 5-10 min on 2 cores)

The difficulty check (--baseline) is a pooled log-mel + logistic-regression baseline: macro ROC-AUC on held-out
focal files, on the test soundscapes, after one round of pseudo labels on the train soundscapes, and when trained
on the true train-soundscape labels (an in-domain reference). The CNN proxy (--cnn) is closer to the pipeline: a
4-block CNN from scratch on 48-band log-mels (per-clip max normalisation), random 5 s crops of the focal files, 40
epochs; then the same trained again with the train soundscapes' windows as extra samples, soft labels = its own
predictions squared (one round of self-training); and once more with the true train-soundscape labels instead (the
headroom that pseudo-labelling can aim at).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf
import yaml

from birdclef import SAMPLE_RATE, WINDOW_SECONDS
from birdclef.synth import generate


def _run(preset: str, seed: int, workers: int, overrides: dict[str, Any], out: Path) -> dict[str, Any]:
    started = time.perf_counter()
    summary = generate(preset, seed, out, workers, overrides=overrides, overwrite=True, progress=False)
    summary["wall_s"] = round(time.perf_counter() - started, 2)
    return summary


def _features(x: np.ndarray, mel: Any) -> np.ndarray:
    """Pooled log-mel features (mean, std, max, 90th percentile per band) of every 5 s window of ``x``."""
    import torch

    width = WINDOW_SECONDS * SAMPLE_RATE
    n = max(1, int(np.ceil(len(x) / width)))
    frames = np.pad(x, (0, n * width - len(x))).reshape(n, width).astype(np.float32)
    m = torch.log(mel(torch.from_numpy(frames)) + 1e-8).numpy()
    m = m - np.median(m, axis=2, keepdims=True)  # remove each band's noise floor
    return np.concatenate([m.mean(2), m.std(2), m.max(2), np.percentile(m, 90, axis=2)], axis=1)


def _macro_auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    keep = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    return round(float(np.mean([roc_auc_score(y[:, j], p[:, j]) for j in keep])), 4)


def _fit(X: np.ndarray, Y: np.ndarray):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X)
    Xs = scaler.transform(X)
    models = [
        LogisticRegression(C=0.1, max_iter=300, class_weight="balanced").fit(Xs, Y[:, j] > 0.5)
        if 0 < Y[:, j].sum() < len(Y)
        else None
        for j in range(Y.shape[1])
    ]

    def predict(Z: np.ndarray) -> np.ndarray:
        Zs = scaler.transform(Z)
        return np.stack([m.predict_proba(Zs)[:, 1] if m else np.zeros(len(Z)) for m in models], axis=1)

    return predict


def difficulty(root: Path) -> dict[str, float]:
    """The sklearn difficulty check on a generated dataset (see the module docstring)."""
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(
        SAMPLE_RATE, n_fft=1024, hop_length=500, n_mels=64, f_min=50, f_max=14000
    )
    labels = list(pd.read_csv(root / "taxonomy.csv", dtype={"primary_label": str})["primary_label"])
    column = {label: j for j, label in enumerate(labels)}
    train = pd.read_csv(root / "train.csv", dtype={"primary_label": str})
    X, Y, files = [], [], []
    for row in train.itertuples():
        f = _features(sf.read(root / "train_audio" / row.filename, dtype="float32")[0], mel)
        y = np.zeros(len(labels))
        for label in [row.primary_label, *ast.literal_eval(row.secondary_labels)]:
            y[column[label]] = 1
        X.append(f)
        Y += [y] * len(f)
        files += [row.filename] * len(f)
    X, Y, files = np.concatenate(X), np.array(Y), np.array(files)
    rng = np.random.default_rng(0)
    held = [
        f
        for _, g in train.groupby("primary_label")
        if len(g) >= 3
        for f in rng.choice(g["filename"].to_numpy(), size=len(g) // 5 or 1, replace=False)
    ]
    heldout = np.isin(files, held)

    def soundscapes(folder: str, truth: Path) -> tuple[np.ndarray, np.ndarray]:
        table = pd.read_csv(truth)
        stems = sorted({r.rsplit("_", 1)[0] for r in table["row_id"]})
        feats = [_features(sf.read(root / folder / f"{s}.ogg", dtype="float32")[0], mel) for s in stems]
        return np.concatenate(feats), table[labels].to_numpy()

    X_test, Y_test = soundscapes("test_soundscapes", root / "test_labels.csv")
    X_scape, Y_scape = soundscapes("train_soundscapes", root / "synth_truth" / "train_soundscape_labels.csv")
    split = _fit(X[~heldout], Y[~heldout])
    full = _fit(X, Y)
    pseudo = (full(X_scape) > 0.5).astype(float)
    return {
        "focal_heldout_auc": _macro_auc(Y[heldout], split(X[heldout])),
        "test_auc": _macro_auc(Y_test, full(X_test)),
        "test_auc_self_trained": _macro_auc(
            Y_test, _fit(np.concatenate([X, X_scape]), np.concatenate([Y, pseudo]))(X_test)
        ),
        "test_auc_in_domain_reference": _macro_auc(Y_test, _fit(X_scape, Y_scape)(X_test)),
        "test_positive_rate": round(float(Y_test.mean()), 4),
        "test_windows_without_call": round(float((Y_test.sum(axis=1) == 0).mean()), 4),
    }


def difficulty_cnn(root: Path, epochs: int = 40, seed: int = 0) -> dict[str, float]:
    """The small-CNN proxy on a generated dataset (see the module docstring)."""
    import torch
    import torchaudio
    from torch import nn

    torch.manual_seed(seed)
    hop = 1024
    width = WINDOW_SECONDS * SAMPLE_RATE // hop
    mel = torchaudio.transforms.MelSpectrogram(
        SAMPLE_RATE, n_fft=2048, hop_length=hop, n_mels=48, f_min=50, f_max=14000
    )

    def logmel(path: Path) -> np.ndarray:
        with torch.no_grad():
            m = (10 * torch.log10(mel(torch.from_numpy(sf.read(path, dtype="float32")[0])) + 1e-10)).numpy()
        return np.pad(m, ((0, 0), (0, max(0, width - m.shape[1]))), constant_values=float(m.min()))

    def windows(m: np.ndarray) -> np.ndarray:
        return np.stack([m[:, k * width : (k + 1) * width] for k in range(max(1, m.shape[1] // width))])

    def norm(m: np.ndarray) -> torch.Tensor:
        m = m - m.max(axis=(1, 2), keepdims=True)
        return torch.from_numpy(((np.maximum(m, -80) + 80) / 80).astype(np.float32)).unsqueeze(1)

    labels = list(pd.read_csv(root / "taxonomy.csv", dtype={"primary_label": str})["primary_label"])
    column = {label: j for j, label in enumerate(labels)}
    train = pd.read_csv(root / "train.csv", dtype={"primary_label": str})
    mels, ys = [], []
    for row in train.itertuples():
        mels.append(logmel(root / "train_audio" / row.filename))
        y = np.zeros(len(labels), np.float32)
        for label in [row.primary_label, *ast.literal_eval(row.secondary_labels)]:
            y[column[label]] = 1
        ys.append(y)
    rng = np.random.default_rng(seed)
    held = {
        int(i)
        for _, g in train.groupby("primary_label")
        if len(g) >= 3
        for i in rng.choice(g.index.to_numpy(), size=len(g) // 5 or 1, replace=False)
    }
    fit_idx = [i for i in range(len(mels)) if i not in held]
    M_held = np.concatenate([windows(mels[i]) for i in sorted(held)])
    Y_held = np.concatenate([np.repeat(ys[i][None], len(windows(mels[i])), 0) for i in sorted(held)])

    def soundscapes(folder: str, truth: Path) -> tuple[np.ndarray, np.ndarray]:
        table = pd.read_csv(truth)
        stems = sorted({r.rsplit("_", 1)[0] for r in table["row_id"]})
        return (
            np.concatenate([windows(logmel(root / folder / f"{s}.ogg"))[:12] for s in stems]),
            table[labels].to_numpy(),
        )

    M_test, Y_test = soundscapes("test_soundscapes", root / "test_labels.csv")
    M_scape, Y_scape = soundscapes("train_soundscapes", root / "synth_truth" / "train_soundscape_labels.csv")

    def block(i: int, o: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(i, o, 3, padding=1),
            nn.BatchNorm2d(o),
            nn.ReLU(),
            nn.Conv2d(o, o, 3, padding=1),
            nn.BatchNorm2d(o),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(block(1, 16), block(16, 32), block(32, 64), block(64, 128))
            self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(128, len(labels)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.body(x).mean(2)
            return self.head(h.amax(2) + h.mean(2))

    def predict(net: nn.Module, M: np.ndarray) -> np.ndarray:
        net.eval()
        with torch.no_grad():
            return torch.cat([torch.sigmoid(net(norm(M[i : i + 128]))) for i in range(0, len(M), 128)]).numpy()

    def crop(m: np.ndarray) -> np.ndarray:
        start = int(rng.integers(0, m.shape[1] - width + 1))
        return m[:, start : start + width]

    def train_net(extra: tuple[np.ndarray, np.ndarray] | None = None) -> nn.Module:
        torch.manual_seed(seed)
        net = Net()
        opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-2)
        steps = len(fit_idx) // 32 + 1 + (len(extra[0]) // 32 + 1 if extra is not None else 0)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * steps)
        for _ in range(epochs):
            net.train()
            order = rng.permutation(fit_idx)
            batches = [
                (np.stack([crop(mels[i]) for i in part]), np.stack([ys[i] for i in part]))
                for part in (order[k : k + 32] for k in range(0, len(order), 32))
            ]
            if extra is not None:
                perm = rng.permutation(len(extra[0]))
                batches += [(extra[0][perm[k : k + 32]], extra[1][perm[k : k + 32]]) for k in range(0, len(perm), 32)]
                batches = [batches[i] for i in rng.permutation(len(batches))]
            for xb, yb in batches:
                loss = nn.functional.binary_cross_entropy_with_logits(net(norm(xb)), torch.from_numpy(yb).float())
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        return net

    net = train_net()
    result = {
        "cnn_focal_heldout_auc": _macro_auc(Y_held, predict(net, M_held)),
        "cnn_test_auc": _macro_auc(Y_test, predict(net, M_test)),
    }
    student = train_net((M_scape, (predict(net, M_scape) ** 2).astype(np.float32)))
    result["cnn_test_auc_self_trained"] = _macro_auc(Y_test, predict(student, M_test))
    oracle = train_net((M_scape, Y_scape.astype(np.float32)))
    result["cnn_test_auc_true_scape_labels"] = _macro_auc(Y_test, predict(oracle, M_test))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--baseline", action="store_true", help="run the difficulty check on the demo data")
    parser.add_argument("--cnn", action="store_true", help="run the small-CNN proxy on the demo data (slow)")
    parser.add_argument("--skip-tiny", action="store_true")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    overrides = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.overrides)}

    report: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "workers": args.workers,
        "overrides": overrides,
    }
    if not args.skip_tiny:
        with tempfile.TemporaryDirectory() as tmp:
            runs = [_run("tiny", args.seed, args.workers, overrides, Path(tmp) / f"tiny{i}") for i in range(3)]
        report["tiny"] = {
            "seconds_median": statistics.median(r["wall_s"] for r in runs),
            "seconds_runs": [r["wall_s"] for r in runs],
            "megabytes": runs[0]["megabytes"],
            "audio_seconds": sum(runs[0]["audio_seconds"].values()),
        }
    if not args.skip_demo:
        with tempfile.TemporaryDirectory() as tmp:
            demo = _run("demo", args.seed, args.workers, overrides, Path(tmp) / "demo")
            report["demo"] = {
                "seconds": demo["wall_s"],
                "megabytes": demo["megabytes"],
                "audio_seconds": round(sum(demo["audio_seconds"].values()), 1),
                "train_files": demo["train_files"],
                "species": demo["species"],
            }
            if args.baseline:
                started = time.perf_counter()
                report["demo_difficulty"] = difficulty(Path(tmp) / "demo")
                report["demo_difficulty"]["seconds"] = round(time.perf_counter() - started, 1)
            if args.cnn:
                started = time.perf_counter()
                report["demo_cnn_proxy"] = difficulty_cnn(Path(tmp) / "demo")
                report["demo_cnn_proxy"]["seconds"] = round(time.perf_counter() - started, 1)
    report["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
