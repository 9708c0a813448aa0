"""Standalone Kaggle inference: the bundled ONNX ensemble over test soundscapes -> submission.csv.

Needs only numpy, pandas, soundfile and onnxruntime (OpenVINO when installed and chosen at export): no torch,
no birdclef. ``birdclef bundle`` copies this file into the bundle as ``predict_kaggle.py``, next to
``birdclef_bundle/`` (the numpy-only windows, postprocess, ensemble, melspec, backends, teacher_member and
teacher_runtime modules of the repository) and ``model/`` (the ONNX graphs and export_spec.json, which embeds the
ensemble spec; ``model/teacher/`` the files of a teacher member).

It mirrors ``birdclef.infer.runner.infer`` step for step (decode, member predictions with member-level TTA,
combination, file-level post-processing, class-mean rows for files that fail, then a teacher member over every
file and its per-class blend over all rows), so its submission equals the `infer` stage's; a test checks that.
A teacher member (T2) also needs its runtime, which a Kaggle image has: a TFLite interpreter for BirdNET
(TensorFlow's ``tf.lite``, or ``tflite_runtime`` / ``ai-edge-litert``), onnxruntime for ONNX teachers, and soxr to
resample to the teacher's rate.

Usage, in a Kaggle notebook cell::

    !python /kaggle/input/<bundle>/predict_kaggle.py \\
        --soundscapes /kaggle/input/birdclef-2025/test_soundscapes \\
        --sample /kaggle/input/birdclef-2025/sample_submission.csv --out submission.csv
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf

HERE = Path(__file__).resolve().parent
if (HERE / "birdclef_bundle").is_dir():
    sys.path.insert(0, str(HERE))
try:
    from birdclef_bundle import backends, ensemble, postprocess, teacher_member, windows  # the bundle layout
except ImportError:  # run from the repository
    from birdclef.infer import backends, ensemble, postprocess, teacher_member, windows

log = logging.getLogger("predict_kaggle")
AUDIO_SUFFIXES = (".ogg", ".flac", ".wav", ".mp3")
WINDOW_SECONDS = 5


def load_wave(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode a 32 kHz file to float32 mono (channels averaged), as ``birdclef.audio.decode.load_audio`` does."""
    with sf.SoundFile(str(path)) as f:
        if f.samplerate != windows.SAMPLE_RATE:
            raise ValueError(f"{path}: {f.samplerate} Hz; this script reads {windows.SAMPLE_RATE} Hz audio only")
        data = f.read(dtype="float32", always_2d=True)
    if data.shape[0] == 0:
        raise ValueError(f"{path}: no audio frames")
    wave = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    if not np.isfinite(wave).all():
        raise ValueError(f"{path}: NaN/inf samples")
    return np.ascontiguousarray(wave, dtype=np.float32)


class MemberRunner:
    """The bundled ensemble's member predictions for one file (built once per worker process)."""

    def __init__(self, model_dir: Path, backend: str | None, threads: int) -> None:
        self.ensemble = backends.ExportedEnsemble(model_dir, backend, threads)
        spec = self.spec = self.ensemble.ensemble_spec
        self.post = spec.get("postprocess")
        # Chunking: the ensemble's, overridden per member (as members.member_predict_cfg does); members with the
        # same chunking share one pass (one batch stack, each mel config once), as in runner._init_worker.
        chunkings = [{**spec["predict"], **(m.get("predict") or {})} for m in spec["members"]]
        self.groups = []
        for chunking, positions in windows.group_by_chunking(chunkings):
            predict = self.ensemble.group_predictor([spec["members"][i]["name"] for i in positions])
            self.groups.append((postprocess.wrap_predictor(predict, self.post), chunking, positions))
        self.frame_transform = postprocess.frame_transform(self.post)

    def __call__(self, path: str, n_windows: int) -> list[np.ndarray]:
        """Window probabilities (n_windows, C_m) of every member for the file at ``path``."""
        return windows.predict_members(self.groups, load_wave(path), n_windows, self.frame_transform)


_WORKER: dict[str, Any] = {}


def _init_worker(model_dir: Path, backend: str | None, threads: int) -> None:
    _WORKER["predict"] = MemberRunner(model_dir, backend, threads)


def _predict_one(job: tuple[str, int, str]) -> tuple[list[np.ndarray] | None, str | None]:
    path, n_windows, on_error = job
    try:
        return _WORKER["predict"](path, n_windows), None
    except (OSError, ValueError, RuntimeError) as err:  # soundfile's errors are RuntimeErrors
        if on_error == "raise":
            raise
        log.warning("%s: prediction failed, its rows get the class means: %s", path, err)
        return None, f"{type(err).__name__}: {err}"


def predict_folder(
    files: list[Path],
    model_dir: Path,
    backend: str | None = None,
    workers: int = 1,
    threads: int = 1,
    on_error: str = "fallback",
) -> tuple[dict[str, Any], np.ndarray, dict[str, str]]:
    """Predict every file; return (ensemble spec, (len(files) * n_windows, C) final scores, failures)."""
    spec = backends.ensemble_spec(backends.read_spec(model_dir))
    n_windows = windows.n_windows_for(round(float(spec["file_seconds"]) * windows.SAMPLE_RATE))
    jobs = [(str(f), n_windows, on_error) for f in files]
    if workers <= 1:
        _init_worker(model_dir, backend, threads)
        outcomes = [_predict_one(job) for job in jobs]
    else:
        # Sessions are built inside each worker after the fork: no runtime thread pool crosses it.
        with mp.get_context("fork").Pool(workers, _init_worker, (model_dir, backend, threads)) as pool:
            outcomes = list(pool.imap(_predict_one, jobs, chunksize=1))
    failed = {Path(f).stem: err for f, (_, err) in zip(files, outcomes, strict=True) if err is not None}
    ok = [w for w, err in outcomes if err is None]
    if not ok:
        raise RuntimeError(f"every file failed, e.g. {list(failed.items())[:3]}")
    members = spec["members"]
    stacked = [np.concatenate([w[m] for w in ok]) for m in range(len(members))]
    combined = ensemble.combine(
        stacked, [m["weight"] for m in members], spec["classes"], [m["classes"] for m in members], spec["combination"]
    )
    counts = None if spec.get("class_counts") is None else np.asarray(spec["class_counts"], dtype=np.float64)
    scores = np.empty((len(files) * n_windows, len(spec["classes"])), dtype=np.float32)
    ok_rows = np.repeat([err is None for _, err in outcomes], n_windows)
    scores[ok_rows] = np.concatenate(
        [postprocess.apply_file(block, spec.get("postprocess"), counts) for block in np.split(combined, len(ok))]
    )
    scores[~ok_rows] = scores[ok_rows].mean(axis=0)
    if spec.get("teacher"):  # T2: over every file, then blended per class over all rows (a rank cannot stream)
        run = teacher_member.predict_files(
            spec["teacher"], files, [n_windows] * len(files), load=load_wave, root=model_dir, workers=workers,
            threads=threads, on_error=on_error, start_method="fork",
        )  # fmt: skip
        scores = teacher_member.blend_rows(spec["teacher"], scores, run.probs)
        log.info("teacher %s member: %s", spec["teacher"]["name"], run.speed())
    return spec, scores, failed


def submission(stems: list[str], n_windows: int, scores: np.ndarray, classes: list[str], sample: pd.DataFrame):
    """The Kaggle table: ``row_id`` = ``<stem>_<end second>``, species columns in sample_submission order."""
    columns = [c for c in sample.columns if c != "row_id"]
    missing = sorted(set(columns) - set(classes))
    if missing:
        raise ValueError(f"sample_submission.csv has species the ensemble does not predict: {missing[:10]}")
    index = {c: i for i, c in enumerate(classes)}
    frame = pd.DataFrame(scores[:, [index[c] for c in columns]], columns=columns)
    frame.insert(0, "row_id", [f"{s}_{WINDOW_SECONDS * (i + 1)}" for s in stems for i in range(n_windows)])
    return frame


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--soundscapes", type=Path, required=True, help="folder of test soundscapes")
    ap.add_argument("--sample", type=Path, required=True, help="sample_submission.csv (column order)")
    ap.add_argument("--out", type=Path, default=Path("submission.csv"))
    ap.add_argument("--model", type=Path, default=HERE / "model", help="the bundled export folder")
    ap.add_argument("--backend", default=None, help="onnxruntime | openvino (default: the export's choice)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per worker")
    ap.add_argument("--workers", type=int, default=0, help="processes (default: cores // threads)")
    ap.add_argument("--on-error", choices=("fallback", "raise"), default="fallback")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    start = time.perf_counter()
    files = sorted(p for p in args.soundscapes.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise SystemExit(f"{args.soundscapes}: no audio files")
    workers = args.workers or max(1, (os.cpu_count() or 1) // args.threads)
    spec, scores, failed = predict_folder(files, args.model, args.backend, workers, args.threads, args.on_error)
    n_windows = scores.shape[0] // len(files)
    frame = submission([f.stem for f in files], n_windows, scores, list(spec["classes"]), pd.read_csv(args.sample))
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    frame.to_csv(tmp, index=False, float_format="%.6g")
    os.replace(tmp, args.out)
    log.info("%d files (%d failed) -> %s in %.1f s", len(files), len(failed), args.out, time.perf_counter() - start)


if __name__ == "__main__":
    main()
