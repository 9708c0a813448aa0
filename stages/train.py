"""DVC stage `train@k`: train every member of iteration k (supervised for k = 0, students of pseudo labels after)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd
import torch

from birdclef import dist
from birdclef.features.cache import WaveCache
from birdclef.io import atomic_path, load_params, scratch_dir, write_csv, write_json
from birdclef.track import stage_run
from birdclef.train.member import MemberInputs, iteration_config, train_member
from birdclef.train.params import TRAIN_STAGE, check_params, teacher_checkpoint
from birdclef.train.teacher_data import load_teacher_segments
from birdclef.train.voice import voice_clips


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iteration", type=int, required=True, help="index k into params `iterations`")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", type=Path, required=True, help="raw data root (voiced spans are read from it)")
    ap.add_argument("--acquire", type=Path, required=True, help="acquire stage output folder")
    ap.add_argument("--clean", type=Path, required=True, help="clean stage output folder")
    ap.add_argument("--features", type=Path, required=True, help="waveform cache folder")
    ap.add_argument(
        "--labels",
        type=Path,
        required=True,
        help="what the iteration learns from: the segment table (k = 0) or a pseudo stage output folder",
    )
    ap.add_argument("--teacher-outputs", type=Path, required=True,
                    help="the teacher stage's folder (D4 segments when train.teacher_segments.enabled)")
    ap.add_argument("--train-root", type=Path, required=True, help="parent of the it<k> train folders (teacher init)")
    ap.add_argument("--out", type=Path, required=True, help="this iteration's output folder (one subfolder a member)")
    ap.add_argument("--resume", type=Path, required=True, help="resume checkpoints (persist across a kill)")
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--history", type=Path, required=True, help="per-epoch CSV of every member (DVC plots)")
    args = ap.parse_args()

    params = load_params(args.params)
    check_params(params, TRAIN_STAGE)
    iteration = params["iterations"][args.iteration]
    nproc = int(params["train"].get("nproc", 1))
    dist.relaunch(nproc)  # train.nproc > 1: this very command again under torchrun (DDP)
    torch.set_num_threads(int(params["train"].get("threads", os.cpu_count() or 1)))
    device = dist.torch_device(params["train"].get("device", "auto"))
    rank = 0
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        torch.distributed.init_process_group("nccl" if device == "cuda" else "gloo")
        rank = torch.distributed.get_rank()
        if device == "cuda":
            device = f"cuda:{os.environ['LOCAL_RANK']}"
            torch.cuda.set_device(device)
    labels = pd.read_parquet(args.acquire / "soundscape_labels.parquet")
    teacher = iteration.get("teacher")
    if teacher is not None and not (args.labels / "labels.parquet").exists():
        raise SystemExit(f"iteration {iteration['k']} has teacher {teacher} but {args.labels} holds no labels.parquet")
    pseudo = pd.read_parquet(args.labels / "labels.parquet") if teacher is not None else None
    weights = pd.read_parquet(args.labels / "soundscapes.parquet") if teacher is not None else None
    taxonomy = pd.read_parquet(args.acquire / "taxonomy.parquet")
    try:
        extra = load_teacher_segments(args.teacher_outputs, iteration_config(params, iteration)[0], taxonomy)
    except ValueError as err:
        raise SystemExit(f"iteration {iteration['k']}: {err}") from err
    inputs = MemberInputs(
        segments=pd.read_parquet(args.clean / "segments.parquet"),
        taxonomy=taxonomy,
        cache=WaveCache(args.features),
        soundscape_labels=labels[labels["split"] == "test"].drop(columns=["split", "soundscape_id"]),
        pseudo_labels=pseudo,
        pseudo_weights=dict(zip(weights["soundscape_id"], weights["sampler_weight"], strict=True))
        if weights is not None
        else None,
        voice_clips=voice_clips(args.data, pd.read_parquet(args.clean / "voice_spans.parquet")),
        extra_segments=extra,
    )
    section = {k: params[k] for k in ("train", "selftrain", "models", "mels") if k in params}
    tracking = params.get("tracking", {}) if rank == 0 else {"enabled": False}
    metrics: dict[str, dict[str, float]] = {}
    # Only rank 0 publishes outputs; other DDP ranks write into a scratch folder that is thrown away.
    with atomic_path(args.out) if rank == 0 else scratch_dir() as out:
        for model_name in iteration["members"]:
            name = f"it{iteration['k']}_{model_name}"
            ckpt = args.train_root / f"it{teacher}" / model_name / "model.pt" if teacher is not None else None
            inputs.teacher_checkpoint = teacher_checkpoint(ckpt, params, iteration)  # missing + needed: an error
            init_from = iteration.get("init_from")  # D1 / D3: fine-tune a checkpoint, `{model}` = this member
            inputs.init_checkpoint = Path(str(init_from).format(model=model_name)) if init_from else None
            if inputs.init_checkpoint is not None and not inputs.init_checkpoint.is_file():
                raise SystemExit(f"iteration {iteration['k']}: init_from {inputs.init_checkpoint} does not exist")
            with stage_run(f"train@{args.iteration}", {**section, "member": name}, tracking) as run:
                metrics[model_name] = train_member(
                    name,
                    model_name,
                    params,
                    iteration,
                    inputs,
                    out / model_name,
                    args.resume / model_name,
                    run,
                    device,
                )
            print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in metrics[model_name].items()))
    if rank == 0:
        write_json(args.metrics, metrics)
        histories = [pd.read_csv(args.out / m / "history.csv") for m in iteration["members"]]
        write_csv(pd.concat(histories, ignore_index=True), args.history)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
