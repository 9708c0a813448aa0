"""D1 pre-training: extra sources -> their own segment table and species list (competition species left out),
a member trained on it through train_member, a competition member fine-tuned from it with a fresh head, and the
`pretrain` stage on and off."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from birdclef import SAMPLE_RATE
from birdclef.models import load_checkpoint
from birdclef.train.member import MemberInputs, train_member
from birdclef.train.pretrain import PretrainConfig, pretrain_segments, run_pretrain

from audio_fixtures import write_audio
from train_fixtures import tone, toy_segments

REPO = Path(__file__).resolve().parents[1]
MEL = {"n_fft": 512, "hop_length": 320, "n_mels": 32, "fmin": 40, "fmax": 15000}
COMPETITION = ["a", "b", "c"]  # the toy competition taxonomy (train_fixtures.toy_segments)


def _params(sources: list[str]) -> dict:
    return {
        "models": {"tiny": {"head": "sed", "backbone": "test_efficientnet", "pretrained": False, "mel": "m"}},
        "mels": {"m": MEL},
        "train": {"crop_s": 1.0, "crop_policy": "random", "secondary_value": 0.5, "val_fold": 0, "threads": 1,
                  "loop": {"epochs": 1, "batch_size": 4, "progress": False}, "augment": {}, "loss": {"name": "bce"}},
        "features": {"workers": 1},
        "pretrain": {"sources": sources, "members": ["tiny"], "min_files": 2, "trim_s": 2.0, "n_folds": 2},
        "tracking": {"enabled": False},
    }  # fmt: skip


@pytest.fixture()
def extra_root(tmp_path):
    """data/extra/xc: species x1, x2 (3 files each), x3 (one file: rare), competition species a (2 files), a row
    naming a missing file and a malformed row (rating out of range); 44.1 kHz stereo for one file."""
    root = tmp_path / "data"
    folder = root / "extra" / "xc"
    rng = np.random.default_rng(0)
    rows = []
    for label, freq, n in (("x1", 700.0, 3), ("x2", 2100.0, 3), ("x3", 3000.0, 1), ("a", 500.0, 2)):
        for j in range(n):
            name = f"{label}/XC{j}.ogg"
            wave = tone(freq, 3.0 + j, rng)
            if label == "x1" and j == 0:  # a real-world quirk: 44.1 kHz stereo
                t = np.arange(int(3.0 * 44100)) / 44100
                mono = (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
                write_audio(folder / name, np.stack([mono, mono], axis=1), sr=44100)
            else:
                write_audio(folder / name, wave, sr=SAMPLE_RATE)
            rows.append({"primary_label": label, "filename": name, "rating": "4.0", "class_name": "Aves"})
    rows.append({"primary_label": "x2", "filename": "x2/missing.ogg", "rating": "3.0", "class_name": "Aves"})
    rows.append({"primary_label": "x2", "filename": "x2/XC0.ogg", "rating": "9.5", "class_name": "Aves"})
    rows.append({"primary_label": "x2", "filename": "x2/XC1.ogg", "rating": "3.0", "class_name": "Aves"})
    pd.DataFrame(rows).to_csv(folder / "metadata.csv", index=False)
    return root


def test_segments_leave_out_competition_rare_missing_and_malformed_rows(extra_root):
    cfg = PretrainConfig.from_params({"sources": ["xc"], "members": ["tiny"], "min_files": 2, "trim_s": 2.0})
    segments, taxonomy, report = pretrain_segments(extra_root, cfg, COMPETITION)
    assert taxonomy["primary_label"].tolist() == ["x1", "x2"]  # a: competition, x3: one file only
    assert sorted(segments["primary_label"].value_counts().to_dict().items()) == [("x1", 3), ("x2", 3)]
    assert segments["segment_id"].str.startswith("xc/").all() and (segments["path"].str.startswith("extra/xc/")).all()
    assert (segments["end_s"] <= 2.0 + 1e-9).all() and (segments["start_s"] == 0).all()
    assert segments["fold"].nunique() >= 2  # every species in more than one fold (assign_folds)
    assert report["competition_species_files"] == 2 and report["rare_species_dropped"] == 1
    reasons = {s["reason"] for s in report["skipped"]}
    assert reasons == {"missing", "malformed", "duplicate"}, report["skipped"]
    assert any("missing.ogg" in s["detail"] for s in report["skipped"])  # the file is named


def test_keeping_competition_species_and_config_errors(extra_root):
    cfg = PretrainConfig.from_params({"sources": ["xc"], "members": ["tiny"], "exclude_competition_species": False})
    _, taxonomy, _ = pretrain_segments(extra_root, cfg, COMPETITION)
    assert "a" in taxonomy["primary_label"].tolist()
    with pytest.raises(ValueError, match="unknown key"):
        PretrainConfig.from_params({"sources": ["xc"], "members": ["tiny"], "epochs": 3})
    with pytest.raises(ValueError, match="members is empty"):
        PretrainConfig.from_params({"sources": ["xc"]})
    with pytest.raises(ValueError, match="no species left"):
        pretrain_segments(extra_root, PretrainConfig.from_params({"sources": ["xc"], "members": ["t"],
                                                                  "min_files": 10}), COMPETITION)  # fmt: skip
    assert not PretrainConfig.from_params(None).enabled
    with pytest.raises(ValueError, match="sources is empty"):
        pretrain_segments(extra_root, PretrainConfig.from_params(None), COMPETITION)


def test_pretrained_backbone_is_fine_tuned_with_a_fresh_competition_head(extra_root, tmp_path):
    out, resume = tmp_path / "pretrain", tmp_path / "resume"
    metrics = run_pretrain(extra_root, _params(["xc"]), COMPETITION, out, resume)
    assert metrics["species"] == 2 and 0.0 <= metrics["tiny"]["val_auc"] <= 1.0
    assert not (resume / "cache").exists()  # the decoded audio is scratch
    donor, meta = load_checkpoint(out / "tiny" / "model.pt")
    assert donor.classes == ["x1", "x2"] and meta["iteration"] == -1
    assert pd.read_csv(out / "taxonomy.csv")["primary_label"].tolist() == ["x1", "x2"]

    # Fine-tune on the competition classes: zero epochs of learning would leave the backbone equal to the donor's,
    # so check right after initialisation through a frozen-backbone run (the backbone cannot move).
    segs, cache = toy_segments()
    taxonomy = pd.DataFrame({"primary_label": COMPETITION, "class_name": ["Aves"] * 3})
    inputs = MemberInputs(segments=segs, taxonomy=taxonomy, cache=cache, init_checkpoint=out / "tiny" / "model.pt")
    params = _params([])
    iteration = {"k": 0, "train": {"freeze_backbone": True}}
    train_member("it0_tiny", "tiny", params, iteration, inputs, tmp_path / "it0")
    student, _ = load_checkpoint(tmp_path / "it0" / "model.pt")
    assert student.classes == COMPETITION
    donor_state, student_state = donor.state_dict(), student.state_dict()
    backbone = [k for k in donor_state if k.startswith("backbone.")]
    assert backbone and all(torch.equal(donor_state[k], student_state[k]) for k in backbone)
    heads = [k for k in student_state if k not in donor_state or student_state[k].shape != donor_state[k].shape]
    assert heads  # the class layers were re-created for 3 classes


def _run_stage(root: Path, params: dict) -> subprocess.CompletedProcess:
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    acquire = root / "build" / "acquire"
    acquire.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"primary_label": COMPETITION, "class_name": ["Aves"] * 3}).to_parquet(acquire / "taxonomy.parquet")
    cmd = [sys.executable, str(REPO / "stages" / "pretrain.py"), "--data", "data", "--acquire", "build/acquire",
           "--params", "params.yaml", "--out", "build/pretrain", "--resume", "build/resume/pretrain",
           "--metrics", "metrics/pretrain.json", "--timings", "metrics/timing/pretrain.json"]  # fmt: skip
    return subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)


def test_stage_off_writes_a_fixed_marker(tmp_path):
    (tmp_path / "data").mkdir()
    proc = _run_stage(tmp_path, _params([]))
    assert proc.returncode == 0, proc.stderr
    marker = (tmp_path / "build" / "pretrain" / "pretrain.json").read_bytes()
    assert json.loads(marker) == {"enabled": False, "members": []}
    assert json.loads((tmp_path / "metrics" / "pretrain.json").read_text()) == {"enabled": 0}
    assert (tmp_path / "build" / "resume" / "pretrain").is_dir()  # every declared output exists (DVC checks)
    assert _run_stage(tmp_path, _params([])).returncode == 0
    assert (tmp_path / "build" / "pretrain" / "pretrain.json").read_bytes() == marker  # no spurious reruns


def test_stage_on_trains_and_reports(extra_root):
    root = extra_root.parent
    proc = _run_stage(root, _params(["xc"]))
    assert proc.returncode == 0, proc.stderr
    assert (root / "build" / "pretrain" / "tiny" / "model.pt").is_file()
    assert (root / "build" / "resume" / "pretrain").is_dir()
    metrics = json.loads((root / "metrics" / "pretrain.json").read_text())
    assert metrics["enabled"] == 1 and metrics["files"] == 6 and "val_auc" in metrics["tiny"]
    skipped = pd.read_csv(root / "build" / "pretrain" / "skipped.csv")
    assert set(skipped["reason"]) == {"missing", "malformed", "duplicate"}
    bad = _run_stage(root, _params(["nope"]))
    assert bad.returncode == 1 and "nope" in bad.stderr
    assert (root / "build" / "pretrain" / "tiny" / "model.pt").is_file()  # a failed run leaves the last output
