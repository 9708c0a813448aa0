"""`birdclef predict`: per-window species scores of any recordings, as CSV tables and Raven selection tables."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np
import pandas as pd
from tqdm import tqdm

from birdclef import SAMPLE_RATE, WINDOW_SECONDS
from birdclef.audio.decode import AudioError, StreamStats, stream_audio
from birdclef.infer import blockwise, ensemble, postprocess, teacher_member
from birdclef.infer.backends import SPEC_FILE, ExportedEnsemble
from birdclef.infer.members import member_predict_cfg
from birdclef.infer.runner import AUDIO_SUFFIXES
from birdclef.infer.torch_backend import TorchPredictor
from birdclef.infer.windows import group_by_chunking, predict_members, stack_predictors
from birdclef.io import write_csv

log = logging.getLogger(__name__)

RAVEN_COLUMNS = (
    "Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)",
    "Species", "Confidence",
)  # fmt: skip
_MIN_TAIL_S = 0.1
BLOCK_S = 60.0
"""Seconds of audio decoded and scored per step: a recording of any length costs the memory of one block."""
CSV_SUFFIX = ".csv"
RAVEN_SUFFIX = ".selections.txt"


class Scorer:
    """Ensemble window scores for one recording of any length: (n_windows, C) probabilities.

    Members are combined by the weighted mean of probabilities whatever the ensemble's ``combination`` (min-max
    and rank scaling are relative to a whole test set, meaningless for one file); member-level TTA applies, and
    the file-level steps (smoothing, boosts) only with ``file_postprocess`` (boosts rescale scores per file).
    A teacher member (T2) joins per file against the reference distribution the ensemble stage stored
    (``teacher_member.blend_file``: percentile mapping onto the students' scale), not by a set-wide rank.
    Recordings are scored in blocks of ``BLOCK_S`` with context on both sides (``blockwise``): the scores equal a
    whole-file pass and memory does not grow with the duration.

    Args:
        model: an export folder, a bundle (its ``model/`` folder is used) or a checkpoint file (``.pt``, torch).
        backend: ``onnxruntime`` / ``openvino`` for exports (default: the export's choice); ignored for a
            checkpoint.
        threads: intra-op threads.
        file_postprocess: apply the ensemble's file-level post-processing.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        backend: str | None = None,
        threads: int = 1,
        file_postprocess: bool = False,
    ) -> None:
        model = Path(model)
        self.teacher = None
        if model.is_file():
            self._from_checkpoint(model, threads)
        else:
            folder = model / "model" if (model / "model" / SPEC_FILE).is_file() else model
            exported = ExportedEnsemble(folder, backend, threads)
            spec = exported.ensemble_spec
            self.classes = list(spec["classes"])
            self.members = spec["members"]
            self.post = spec.get("postprocess")
            self.counts = None if spec.get("class_counts") is None else np.asarray(spec["class_counts"], float)
            self.freq_range = (
                min(m["config"].get("fmin", 0.0) for m in exported.spec["mels"].values()),
                max(m["config"].get("fmax", SAMPLE_RATE / 2) for m in exported.spec["mels"].values()),
            )
            # Members with the same chunking share one pass (one batch stack, each mel config once).
            chunkings = [member_predict_cfg(m, spec["predict"]) for m in self.members]
            self._groups = []
            for chunking, positions in group_by_chunking(chunkings):
                predict = exported.group_predictor([self.members[i]["name"] for i in positions])
                self._groups.append((postprocess.wrap_predictor(predict, self.post), chunking, positions))
            if spec.get("teacher"):  # its files: absolute, or under a bundle's model/ folder
                self.teacher = teacher_member.TeacherMember(spec["teacher"], folder, threads)
        self.file_postprocess = file_postprocess
        self._frame_transform = postprocess.frame_transform(self.post)
        self._plan = blockwise.plan([chunking for _, chunking, _ in self._groups], BLOCK_S)

    def _from_checkpoint(self, path: Path, threads: int) -> None:
        predictor = TorchPredictor(path, threads)
        model = predictor.wrapper.model
        self.classes = list(model.classes or [str(i) for i in range(model.num_classes)])
        self.members = [{"name": path.stem, "weight": 1.0, "classes": None}]
        self.post, self.counts = None, None
        self.freq_range = (model.mel_cfg.fmin, model.mel_cfg.fmax)
        self._groups = [(stack_predictors([predictor]), member_predict_cfg(self.members[0]), [0])]

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """Args: wave (samples,) float32 mono at 32 kHz. Returns: (n_windows, C) float32 scores.

        Windows cover the whole recording (the last one zero-padded), unlike Kaggle's rounding to the nearest
        window, which would drop up to 2.5 s of a recording's tail; a tail under 0.1 s is dropped.
        """
        outs, _ = blockwise.score_blocks([wave], self._span, *self._plan, _MIN_TAIL_S)
        return self._finish(outs)

    def score_file(self, path: str | os.PathLike[str]) -> tuple[np.ndarray, float, StreamStats]:
        """Scores of an audio file of any length, decoded block by block (memory flat in the duration).

        Returns:
            ``((n_windows, C) float32 scores as ``__call__``, duration in seconds, what the decode found)``.

        Raises:
            AudioError: the file cannot be decoded (a cut file only warns: what decodes is scored).
        """
        stats = StreamStats()
        outs, n_samples = blockwise.score_blocks(
            stream_audio(path, self._plan[0] * WINDOW_SECONDS, stats=stats), self._span, *self._plan, _MIN_TAIL_S
        )
        return self._finish(outs), n_samples / SAMPLE_RATE, stats

    def _span(self, wave: np.ndarray, n_windows: int) -> list[np.ndarray]:
        # One span's member-combined scores (combination is per window) and, with a teacher, its rows.
        preds = predict_members(self._groups, wave, n_windows, self._frame_transform)
        weights = [m["weight"] for m in self.members]
        scores = ensemble.combine(preds, weights, self.classes, [m["classes"] for m in self.members], "mean")
        return [scores] if self.teacher is None else [scores, self.teacher(wave, n_windows)]

    def _finish(self, outs: list[np.ndarray]) -> np.ndarray:
        # The file-level steps, over all the file's windows.
        scores = outs[0]
        if self.file_postprocess:
            scores = postprocess.apply_file(scores, self.post, self.counts)
        if self.teacher is not None:
            scores = teacher_member.blend_file(self.teacher.entry, scores, outs[1])
        return scores


def find_audio(paths: Sequence[str | os.PathLike[str]]) -> list[tuple[Path, Path]]:
    """(audio file, output stem) pairs: files as given, folders searched recursively for wav/flac/ogg/mp3.

    A folder's files keep their relative path in the output stem, so same-named files in sub-folders do not
    collide.

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: two inputs would write the same outputs.
    """
    found: list[tuple[Path, Path]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            found += [(f, f.relative_to(path).with_suffix("")) for f in files]
        elif path.is_file():
            found.append((path, Path(path.stem)))
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    seen: dict[Path, Path] = {}
    for file, stem in found:
        if stem in seen and seen[stem] != file:
            raise ValueError(f"{seen[stem]} and {file} would both write {stem}{CSV_SUFFIX}; predict them separately")
        seen[stem] = file
    return list(dict.fromkeys(found))


def window_table(
    label: str, scores: np.ndarray, classes: Sequence[str], duration_s: float, top_k: int = 3, all_columns: bool = False
) -> pd.DataFrame:
    """Per-window rows: ``file, start, end`` (seconds) then the top-k ``species_i, prob_i`` or every class column."""
    n = scores.shape[0]
    starts = np.arange(n, dtype=float) * WINDOW_SECONDS
    table = pd.DataFrame({"file": label, "start": starts, "end": np.minimum(starts + WINDOW_SECONDS, duration_s)})
    if all_columns:
        return pd.concat([table, pd.DataFrame(scores, columns=list(classes))], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, : max(1, min(top_k, len(classes)))]
    names = np.asarray(classes, dtype=object)
    for k in range(order.shape[1]):
        table[f"species_{k + 1}"] = names[order[:, k]]
        table[f"prob_{k + 1}"] = scores[np.arange(n), order[:, k]]
    return table


def raven_table(
    scores: np.ndarray, classes: Sequence[str], duration_s: float, threshold: float, freq_range: tuple[float, float]
) -> pd.DataFrame:
    """A Raven selection table: one selection per (window, species) scoring at least ``threshold``."""
    rows, cols = np.nonzero(scores >= threshold)
    starts = rows * float(WINDOW_SECONDS)
    table = pd.DataFrame(
        {
            "Begin Time (s)": starts,
            "End Time (s)": np.minimum(starts + WINDOW_SECONDS, duration_s),
            "Species": [classes[c] for c in cols],
            "Confidence": scores[rows, cols].round(4),
        }
    ).sort_values(["Begin Time (s)", "Confidence"], ascending=[True, False], kind="stable")
    table.insert(0, "Selection", np.arange(1, len(table) + 1))
    table.insert(1, "View", "Spectrogram 1")
    table.insert(2, "Channel", 1)
    table.insert(5, "Low Freq (Hz)", float(freq_range[0]))
    table.insert(6, "High Freq (Hz)", float(freq_range[1]))
    return table[list(RAVEN_COLUMNS)]


@dataclass
class PredictReport:
    """What a ``predict_paths`` call did: files written, skipped (outputs existed) and failed (with reasons)."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: dict[Path, str] = field(default_factory=dict)


def predict_paths(
    paths: Sequence[str | os.PathLike[str]],
    scorer: Scorer,
    out: str | os.PathLike[str],
    top_k: int = 3,
    threshold: float = 0.5,
    all_columns: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
) -> PredictReport:
    """Score every recording and write ``<out>/<stem>.csv`` and ``<out>/<stem>.selections.txt`` per file.

    Each file's outputs are written atomically as soon as it is done, so an interruption keeps the finished
    files; files whose outputs exist are skipped unless ``overwrite``. A file that cannot be decoded or scored
    is logged and recorded in the report; the others go on. Digital silence and a cut file (scored as far as it
    decodes) are warned about. Files are decoded block by block, so their length does not raise memory.
    """
    out = Path(out)
    report = PredictReport()
    disable = None if progress is None else not progress  # None: a bar only on a terminal
    for file, stem in tqdm(find_audio(paths), desc="predict", unit="file", disable=disable):
        csv_path, raven_path = out / f"{stem}{CSV_SUFFIX}", out / f"{stem}{RAVEN_SUFFIX}"
        if not overwrite and csv_path.is_file() and raven_path.is_file():
            report.skipped.append(file)
            continue
        try:
            scores, duration, stats = scorer.score_file(file)
        except (AudioError, ValueError, RuntimeError) as err:
            why = f"{err.reason}: {err.detail}" if isinstance(err, AudioError) else str(err)  # names the file once
            log.error("%s: skipped: %s", file, why)
            report.failed[file] = why
            continue
        if stats.silent:
            log.warning("%s: silent (all samples are zero)", file)
        table = window_table(str(file), scores, scorer.classes, duration, top_k, all_columns)
        write_csv(table, csv_path, float_format="%.5f")
        # Written last: a file counts as done only when both tables exist.
        write_csv(raven_table(scores, scorer.classes, duration, threshold, scorer.freq_range), raven_path, sep="\t")
        report.written.append(file)
    return report


MMAP_THRESHOLD_BYTES = 128 * 1024
"""Buffers above this size are mapped and unmapped one by one (glibc's initial threshold, here held fixed)."""


def fix_mmap_threshold(nbytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Hold glibc's mmap threshold fixed, so freed large buffers go back to the system; False off glibc.

    glibc raises the threshold each time a mapped buffer is freed, after which the per-block buffers of a long
    recording (audio, mel, model outputs: a few MB each, sizes varying) come from the heap and fragment it: a
    3-hour file then peaked 72 MB (1.22x) above a 1-minute one, 52 MB (1.16x) with the threshold held.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return bool(libc is not None and libc.mallopt(-3, int(nbytes)))  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc (musl, macOS): their allocators need no such hint
        return False


@click.command("predict")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--model", "--bundle", "model", type=click.Path(exists=True, path_type=Path), default=Path("build/export"),
    show_default=True, help="export folder, Kaggle bundle, or a checkpoint (.pt, runs on torch)",
)  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("predictions"), show_default=True)
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True, help="species per window in the CSV")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="Raven table cut-off")
@click.option("--all-columns", is_flag=True, help="CSV with one column per species instead of the top k")
@click.option("--overwrite", is_flag=True, help="redo files whose outputs exist")
@click.option("--backend", type=click.Choice(["onnxruntime", "openvino"]), default=None, help="default: the export's")
@click.option("--threads", type=click.IntRange(min=1), default=os.cpu_count() or 1, show_default="all cores")
@click.option("--file-postprocess", is_flag=True, help="also smooth/boost over each file's windows, as on Kaggle")
def predict_command(
    paths: tuple[Path, ...], model: Path, out: Path, top_k: int, threshold: float, all_columns: bool,
    overwrite: bool, backend: str | None, threads: int, file_postprocess: bool,
) -> None:  # fmt: skip
    """Score recordings (files or folders of wav/flac/ogg/mp3, any sample rate, mono or stereo) per 5-s window.

    Writes OUT/<name>.csv (file, start, end, top-k species and probabilities) and OUT/<name>.selections.txt
    (a Raven selection table of the species at or above --threshold). Files already done are skipped; a file
    that cannot be read is reported and the others are processed (exit status 1 if any failed).
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    fix_mmap_threshold()  # memory flat in the recording's length (see there)
    scorer = Scorer(model, backend, threads, file_postprocess)
    report = predict_paths(paths, scorer, out, top_k, threshold, all_columns, overwrite)
    written, skipped, failed = len(report.written), len(report.skipped), len(report.failed)
    click.echo(f"{written} written, {skipped} skipped (done before), {failed} failed")
    for file, reason in report.failed.items():
        click.echo(f"  failed: {file}: {reason}", err=True)
    if report.failed:
        sys.exit(1)
