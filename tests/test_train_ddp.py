"""fit() under torch.distributed: 2 gloo processes reach the weights of one process with the same global batch."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from birdclef.train.datasets import FocalDataset
from birdclef.train.fit import FitConfig, fit

from train_fixtures import TinyModel, toy_segments

CLASSES = ["a", "b", "c"]
LOOP = {"epochs": 2, "batch_size": 4, "progress": False, "ema": {"enabled": True, "decay": 0.9}}


class BCE(nn.Module):
    def forward(self, out, target, mask=None, weight=None):
        return nn.functional.binary_cross_entropy_with_logits(out["clip"], target)


def _train() -> dict[str, torch.Tensor]:
    segs, cache = toy_segments()
    ds = FocalDataset(segs, cache, CLASSES, crop_s=1.0)
    torch.manual_seed(0)
    model = TinyModel(len(CLASSES), dropout=0.0)  # dropout masks would differ between 1 and 2 processes
    return fit(model, ds, FitConfig.from_dict(LOOP), BCE()).state_dict


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        state = _train()
        if rank == 0:
            torch.save(state, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.integration
def test_two_gloo_processes_match_one_process(tmp_path):
    out = tmp_path / "ddp.pt"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    single = _train()
    ddp = torch.load(out)
    for key in single:
        assert torch.allclose(single[key], ddp[key], atol=1e-6), key
