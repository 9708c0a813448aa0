"""Resumable sharded maps (birdclef.dist): block files, resume, fingerprints, and 2 torchrun ranks == 1 process."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from birdclef import dist

ITEMS = [f"f{i:02d}" for i in range(11)]


def _square(block):
    return [{"value": np.array([int(name[1:]) ** 2], dtype=np.int64), "name": np.array(name)} for name in block]


def test_single_process_merges_blocks_in_item_order(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    out = dist.sharded_map(ITEMS, _square, tmp_path, "k1", block=4, progress=False)
    assert [int(r["value"][0]) for r in out] == [i * i for i in range(11)]
    assert [str(r["name"]) for r in out] == ITEMS
    assert sorted(p.name for p in (tmp_path / "k1").glob("*.npz")) == [f"block-{b:05d}.npz" for b in range(3)]
    dist.clear(tmp_path, "k1")
    assert not (tmp_path / "k1").exists() and tmp_path.exists()


def test_resume_skips_finished_blocks_and_redoes_torn_ones(tmp_path):
    dist.sharded_map(ITEMS, _square, tmp_path, "k", block=4, progress=False)
    (tmp_path / "k" / "block-00001.npz").write_bytes(b"torn")  # a write killed half-way (not via atomic_path)
    calls = []

    def counting(block):
        calls.append(block)
        return _square(block)

    out = dist.sharded_map(ITEMS, counting, tmp_path, "k", block=4, progress=False)
    assert calls == [ITEMS[4:8]]
    assert [int(r["value"][0]) for r in out] == [i * i for i in range(11)]


def test_blocks_of_another_fingerprint_are_not_reused(tmp_path):
    key_a = dist.fingerprint(ITEMS, {"teacher": "aaa"})
    key_b = dist.fingerprint(ITEMS, {"teacher": "bbb"})
    assert key_a != key_b and key_a == dist.fingerprint(ITEMS, {"teacher": "aaa"})
    dist.sharded_map(ITEMS, _square, tmp_path, key_a, block=4, progress=False)
    calls = []
    dist.sharded_map(ITEMS, lambda b: calls.append(b) or _square(b), tmp_path, key_b, block=4, progress=False)
    assert len(calls) == 3


def test_wrong_result_count_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="2 results for 4 items"):
        dist.sharded_map(ITEMS, lambda b: _square(b[:2]), tmp_path, "k", block=4, progress=False)


TEACHER_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import numpy as np
    import torch

    sys.path.insert(0, {tests!r})
    from train_fixtures import MemoryCache, TinyModel

    from birdclef import dist
    from birdclef.train.evaluate import model_predictor
    from birdclef.train.pseudo import teacher_predictions

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    waves = {{f"s{{i:02d}}": rng.normal(0, 0.1, 32000 * 20).astype(np.float32) for i in range(7)}}
    cache = MemoryCache(waves)
    torch.manual_seed(0)
    predictor = model_predictor(TinyModel(3, dropout=0.0).eval())
    ids = sorted(waves)

    def label(block):
        w, f = teacher_predictions([predictor], cache, block, 5.0, 2.5, progress=False)
        return [{{"windows": w[i], "frames": f[i]}} for i in range(len(block))]

    out = dist.sharded_map(ids, label, Path(sys.argv[1]), "key", block=2, progress=False)
    if out is not None:
        stack = {{name: np.stack([r[name] for r in out]) for name in ("windows", "frames")}}
        np.savez(sys.argv[2], **stack)
        if sys.argv[3] == "reference":  # the unsharded computation, in one call
            w, f = teacher_predictions([predictor], cache, ids, 5.0, 2.5, progress=False)
            np.savez(sys.argv[2] + ".ref.npz", windows=w, frames=f)
    dist.finish()
    """
)


@pytest.mark.integration
def test_two_torchrun_ranks_give_the_single_process_output(tmp_path):
    from pathlib import Path

    script = tmp_path / "teacher.py"
    script.write_text(TEACHER_SCRIPT.format(tests=str(Path(__file__).parent)))
    env_cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    subprocess.run([*env_cmd, str(script), str(tmp_path / "b2"), str(tmp_path / "two.npz"), "-"],
                   check=True, timeout=240)  # fmt: skip
    subprocess.run([sys.executable, str(script), str(tmp_path / "b1"), str(tmp_path / "one.npz"), "reference"],
                   check=True, timeout=240)  # fmt: skip
    two, one, ref = np.load(tmp_path / "two.npz"), np.load(tmp_path / "one.npz"), np.load(tmp_path / "one.npz.ref.npz")
    assert two["windows"].shape == (7, 4, 3)
    for name in ("windows", "frames"):
        np.testing.assert_array_equal(two[name], one[name])
        np.testing.assert_array_equal(one[name], ref[name])
    # Rank 1 owned blocks 1 and 3 (items s02, s03, s06): its files are there, written by another process.
    assert sorted(p.name for p in (tmp_path / "b2" / "key").glob("*.npz")) == [f"block-{b:05d}.npz" for b in range(4)]


def test_torch_device_auto_cpu_and_an_unavailable_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dist.torch_device("auto") == dist.torch_device("cpu") == "cpu"
    with pytest.raises(RuntimeError, match="no CUDA device"):
        dist.torch_device("cuda")
    with pytest.raises(ValueError, match="train.device must be one of"):
        dist.torch_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert dist.torch_device("auto") == dist.torch_device("cuda") == "cuda"
    assert dist.torch_device("cpu") == "cpu"



def test_one_fingerprint_for_blocks_and_resume_checkpoints():
    from birdclef.train import member

    assert member.fingerprint is dist.fingerprint  # the one function
    table = pd.DataFrame({"segment_id": ["a", "b"], "weight": [1.0, 1.0]})
    key = dist.fingerprint("it0_m", {"lr": 0.1}, table)
    assert key == dist.fingerprint("it0_m", {"lr": 0.1}, table.copy()) and len(key) == 16
    changed = table.assign(weight=[1.0, 0.5])
    assert dist.fingerprint("it0_m", {"lr": 0.1}, changed) != key  # a table counts by its contents
    assert dist.fingerprint("it0_m", {"lr": 0.2}, table) != key
    assert dist.fingerprint("ab", "c") != dist.fingerprint("a", "bc")
    assert dist.fingerprint({"x": 1, "y": 2}) == dist.fingerprint({"y": 2, "x": 1})  # dicts by sorted keys
    assert dist.fingerprint([Path("f1.ogg")], "s") == dist.fingerprint(["f1.ogg"], "s")  # paths by their text


def test_start_outside_torchrun_is_rank_zero_without_a_group(monkeypatch):
    import torch.distributed as tdist

    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert dist.start("cpu") == ("cpu", 0)
    assert not tdist.is_initialized()
    with pytest.raises(ValueError, match="train.device"):
        dist.start("tpu")
