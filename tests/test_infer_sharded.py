"""Sharded inference (birdclef.infer.sharded): 2 torchrun ranks give the single-process submission scores."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from birdclef.infer.members import make_factory
from birdclef.infer.runner import infer

from export_fixtures import ensemble_spec, make_members, write_soundscapes

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch
    from birdclef.infer.members import make_factory
    from birdclef.infer.sharded import infer_ranks

    torch.set_num_threads(1)
    spec = json.load(open(sys.argv[1]))
    files = sorted(p for p in json.load(open(sys.argv[2])))
    # the infer stage's path: infer_sharded with the infer params, the process group closed, rank 0 merges
    cfg = {"block": 1, "threads": 1, "on_error": "fallback"}
    done = infer_ranks(spec, files, make_factory("torch"), sys.argv[3], cfg)
    if done is not None:
        preds, scores = done
        np.savez(sys.argv[4], scores=scores, stems=np.array(preds.stems), failed=np.array(sorted(preds.failed)),
                 cores=preds.cores)
    assert not torch.distributed.is_initialized()  # infer_ranks closed the process group on every rank
    """
)


@pytest.mark.integration
def test_two_ranks_match_one_process_with_a_corrupt_file(tmp_path):
    spec = {**ensemble_spec(make_members(tmp_path)), "file_seconds": 20}
    files = write_soundscapes(tmp_path / "sc", ["S01_20250101_000000", "S02_20250101_000500", "S03_20250101_001000"],
                              seconds=20.0)  # fmt: skip
    bad = tmp_path / "sc" / "S04_20250101_001500.ogg"
    bad.write_bytes(b"OggS not really")  # fails to decode: both runs must fall back the same way
    files = sorted([*files, bad])
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "files.json").write_text(json.dumps([str(f) for f in files]))
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    args = [str(tmp_path / n) for n in ("spec.json", "files.json", "blocks", "two.npz")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script), *args]
    subprocess.run(cmd, check=True, timeout=300)

    _, scores = infer(spec, files, make_factory("torch"), workers=1, threads=1, on_error="fallback")
    two = np.load(tmp_path / "two.npz")
    assert two["stems"].tolist() == [Path(f).stem for f in files]
    assert two["failed"].tolist() == [bad.stem]
    assert int(two["cores"]) == 2
    np.testing.assert_array_equal(two["scores"], scores)
    assert not (tmp_path / "blocks").exists() or not any((tmp_path / "blocks").iterdir())  # blocks cleared
