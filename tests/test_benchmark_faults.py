"""benchmarks/faults.py's helpers: the kill plan, the debris search, the case files, the log matching (fast)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the campaign's helpers import each other as top-level modules

import faults_audio  # noqa: E402
import faults_cases  # noqa: E402
import faults_common  # noqa: E402
import faults_kill  # noqa: E402

ORDER = ["acquire", "clean", "features", "pretrain", "train@0", "pseudo@0", "train@1", "ensemble", "export", "infer"]


def test_plan_puts_the_named_stages_first_in_pipeline_order() -> None:
    assert faults_kill.plan(4, ORDER) == ["train@0", "pseudo@0", "export", "infer"]
    many = faults_kill.plan(12, ORDER)
    assert len(many) == 12 and many == sorted(many, key=ORDER.index)
    assert set(ORDER) <= set(many)  # every stage gets one before any gets two


def test_stray_temps_finds_atomic_debris_but_not_dvc_own(tmp_path: Path) -> None:
    (tmp_path / "build" / "train" / ".it0.123.abcdefgh.tmp").mkdir(parents=True)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / ".infer.json.9.zzzzzzzz.tmp").write_text("{}")
    (tmp_path / ".dvc" / "tmp").mkdir(parents=True)
    (tmp_path / ".dvc" / "tmp" / ".lock.1.abcdefgh.tmp").write_text("")
    assert faults_common.stray_temps(tmp_path) == [
        "build/train/.it0.123.abcdefgh.tmp",
        "metrics/.infer.json.9.zzzzzzzz.tmp",
    ]


def test_mlflow_runs_reads_a_store_killed_mid_write(tmp_path: Path) -> None:
    """A SIGKILL inside an MLflow transaction leaves a hot journal: the count rolls it back instead of failing."""
    import sqlite3

    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE runs (status TEXT, lifecycle_stage TEXT, pad BLOB)")
        con.execute("INSERT INTO runs VALUES ('RUNNING', 'active', NULL), ('FAILED', 'deleted', NULL)")
    writer = (
        "import os, signal, sqlite3\n"
        f"con = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
        "con.execute('PRAGMA cache_size=1')\n"  # spill to the file before commit: a journal that is hot
        "con.execute('BEGIN')\n"
        "for _ in range(500):\n"
        "    con.execute(\"INSERT INTO runs VALUES ('FINISHED', 'active', zeroblob(4000))\")\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    assert subprocess.run([sys.executable, "-c", writer]).returncode == -signal.SIGKILL
    assert (tmp_path / "mlflow.db-journal").is_file()
    assert faults_common.mlflow_runs(tmp_path) == {"RUNNING": 1}


def test_long_ogg_repeats_the_source_audio(tmp_path: Path) -> None:
    src = tmp_path / "src.ogg"
    x = (np.random.default_rng(0).standard_normal(3 * faults_cases.RATE) * 0.1).astype(np.float32)
    faults_cases._ogg(src, x)
    faults_cases.long_ogg(tmp_path / "long.ogg", src.read_bytes(), 4)
    y, rate = sf.read(tmp_path / "long.ogg", dtype="float32")
    assert rate == faults_cases.RATE and len(y) == 4 * sf.info(src).frames and np.isfinite(y).all()


def test_every_case_file_is_written_and_the_escape_row_leaves_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "test_soundscapes").mkdir(parents=True)
    x = (np.random.default_rng(1).standard_normal(60 * faults_cases.RATE) * 0.05).astype(np.float32)
    faults_cases._ogg(data / "test_soundscapes" / "soundscape_1.ogg", x)
    (data / "train.csv").write_text("primary_label,filename,rating\nabc,abc/XC1.ogg,4.0\n")
    cases = [c for c in faults_cases.CASES if c.key != "three_hours"]  # 75 MB: the campaign makes it
    placed = faults_cases.place(cases, data)
    for case in cases:
        for rel in placed[case.key].values():
            assert (data / rel).exists(), case.key
    escape = placed["escape"]["train"]
    assert not (data / escape).resolve().is_relative_to(data.resolve())
    assert (data / "train.csv").read_text().count("\n") == 1 + 1 + len(cases)


def test_naming_does_not_take_one_soundscape_id_for_a_longer_one() -> None:
    lines = ["x: soundscape_fault_sr_8k: silent", "soundscape_fault_sr_8k_5 row", "soundscape_fault_sr_192k.wav ok"]
    assert faults_audio._naming(lines, ["soundscape_fault_sr_8k"]) == [lines[0]]
    assert faults_audio._crash(["Traceback (most recent call last):", "  x", "ValueError: boom"]) == "ValueError: boom"



def test_running_stage_reads_the_stage_from_a_child_command_line() -> None:
    # as DVC runs a stage: a shell whose -c argument is the whole command line, the stage below it
    code = "import subprocess, time; subprocess.run(['/bin/sh', '-c', 'sleep 30; : stages/train.py --iteration 1']); "
    code += "time.sleep(30)"
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        stage, age = None, 0.0
        for _ in range(200):
            stage, age = faults_kill.running_stage(parent.pid)
            if stage:
                break
            time.sleep(0.05)
        assert stage == "train@1" and 0 <= age < 30
    finally:
        for child in psutil.Process(parent.pid).children(recursive=True):
            os.kill(child.pid, signal.SIGKILL)
        parent.kill()
        parent.wait()
