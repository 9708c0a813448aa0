"""The bad-audio campaign of ``benchmarks/faults.py``: every case of ``faults_cases`` in one tiny dataset, through
acquire (``on_bad: fail``, the default, then ``skip``), clean, features, ensemble, infer (one ``dvc repro``) and
``birdclef predict``; a row per case and stage saying what happened."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd
from faults_cases import CASES, Case, place
from faults_common import Clone, make_clone, set_params, stage_sections

STAGES = ("acquire (on_bad: fail)", "acquire", "clean", "features", "ensemble", "infer", "predict")
_MAX = 110  # characters of a message kept in the table


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX else text[: _MAX - 3] + "..."


def _naming(lines: list[str], names: list[str]) -> list[str]:
    """The lines that name one of ``names`` (a file name, or a soundscape id not followed by more of a name)."""
    pats = [re.compile(re.escape(n) + r"(?![\w-])") for n in names if n]
    return [ln for ln in lines if any(p.search(ln) for p in pats)]


def _crash(lines: list[str]) -> str | None:
    """The error line of a crashed stage (a traceback, or DVC's "failed to reproduce"), else None."""
    if not any("Traceback (most recent call last)" in ln or "failed to reproduce" in ln for ln in lines):
        return None
    errors = [ln for ln in lines if re.match(r"^\w*(Error|Exception)\b", ln) or "ERROR" in ln]
    return _short(errors[-1] if errors else lines[-1])


def _table(path: Path, column: str, value: str) -> list[dict[str, Any]]:
    """The rows of CSV ``path`` whose ``column`` is ``value``, or whose text names the file ``value`` (a row
    whose path was unusable, such as one escaping data/, keeps it only in its message); none if no file."""
    if not path.is_file():
        return []
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if column not in df:
        return []
    names = df.apply(lambda row: Path(value).name in " ".join(row.to_numpy(str)), axis=1) if len(df) else False
    return df[(df[column] == value) | names].to_dict("records")


class _Outcomes:
    """The table being filled: ``(case, stage) -> (status, outcome)``."""

    def __init__(self) -> None:
        self.cells: dict[tuple[str, str], tuple[str, str]] = {}

    def set(self, case: Case, stage: str, status: str, outcome: str) -> None:
        self.cells[(case.key, stage)] = (status, _short(outcome))

    def seen(self, case: Case, stage: str, lines: list[str], used: str, crash: str | None = None) -> None:
        """A stage that processed the case: crashed, said something about it, or used it without a word."""
        if crash is not None and (lines or case.needs_message):
            self.set(case, stage, "CRASH", crash)
        elif lines:
            self.set(case, stage, "handled", lines[0])
        else:
            self.set(case, stage, "SILENT" if case.needs_message else "ok", used)


def _acquire_fail(clone: Clone, work: Path, cases: list[Case], placed: dict, out: _Outcomes) -> int:
    """acquire with the default ``on_bad: fail``: it must stop, naming every bad file."""
    log = work / "acquire_fail.log"
    scratch = work / "acquire_fail"
    rc = clone.run(["python", "stages/acquire.py", "--data", "data", "--params", "params.yaml",
                    "--out", str(scratch / "out"), "--metrics", str(scratch / "dq.json"),
                    "--timings", str(scratch / "t.json"), "--report", str(scratch / "docs")], log, 900)  # fmt: skip
    lines = log.read_text(errors="replace").splitlines()
    crash = _crash(lines)
    for case in cases:
        said = _naming(lines, [Path(p).name for p in placed[case.key].values()])
        if crash:
            out.set(case, STAGES[0], "CRASH", crash)
        elif said:
            out.set(case, STAGES[0], "handled", f"refused: {said[0]}")
        else:
            out.set(case, STAGES[0], "SILENT" if case.needs_message and rc else "ok", "accepted by the probe")
    return rc


def _pipeline(clone: Clone, cases: list[Case], placed: dict, sections: dict[str, list[str]], out: _Outcomes) -> None:
    """Fill acquire .. infer from one ``dvc repro`` log and the tables the stages wrote."""
    root = clone.root
    for case in cases:
        train, test = placed[case.key]["train"], placed[case.key].get("test")
        names = {w: Path(p).name for w, p in placed[case.key].items()}
        quarantined = {w: _table(root / "build/acquire/quarantine.csv", "file", p) for w, p in placed[case.key].items()}
        acq = _naming(sections.get("acquire", []), list(names.values()))
        rows = [f"{w}: {r[0]['kind']}: {r[0]['problem']}" for w, r in quarantined.items() if r]
        if "acquire" not in sections:
            out.set(case, "acquire", "not run", "acquire did not run")
        elif rows or acq:
            out.set(case, "acquire", "handled", f"quarantined {'; '.join(rows)}" if rows else acq[0])
        else:
            out.seen(case, "acquire", [], "accepted", _crash(sections["acquire"]))
        # clean meets the train copy only, when acquire let it through
        clean_rows = _table(root / "build/clean/quarantine.csv", "path", train)
        said = _naming(sections.get("clean", []), [names["train"]])
        if quarantined["train"]:
            out.set(case, "clean", "not reached", "quarantined by acquire")
        elif "clean" not in sections:
            out.set(case, "clean", "not run", "clean did not run")
        elif clean_rows:
            out.set(case, "clean", "handled", f"quarantined: {clean_rows[0]['reason']}: {clean_rows[0]['detail']}")
        else:
            out.seen(case, "clean", said, "kept as segments", _crash(sections["clean"]))
        # features caches the clean segments and the acquired soundscapes
        failed = [r for p in placed[case.key].values() for r in _table(root / "build/features/failed.csv", "path", p)]
        reached = (not quarantined["train"] and not clean_rows) or (test is not None and not quarantined["test"])
        if "features" not in sections:
            out.set(case, "features", "not run", "features did not run")
        elif failed:
            out.set(case, "features", "handled", f"left out: {failed[0]['reason']}")
        elif not reached:
            out.set(case, "features", "not reached", "quarantined upstream")
        else:
            said = _naming(sections["features"], list(names.values()))
            out.seen(case, "features", said, "cached", _crash(sections["features"]))
        # ensemble and infer read test_soundscapes/ itself
        for stage in ("ensemble", "infer"):
            if test is None:
                out.set(case, stage, "n/a", "no test copy")
            elif stage not in sections:
                out.set(case, stage, "not run", f"{stage} did not run (an upstream stage failed)")
            else:
                said = _naming(sections[stage], [names["test"], Path(test).stem])
                used = _submission_rows(root, Path(test).stem) if stage == "infer" else "used, no message"
                out.seen(case, stage, said, used, _crash(sections[stage]))


def _submission_rows(root: Path, stem: str) -> str:
    path = root / "submission.csv"
    if not path.is_file():
        return "no submission.csv"
    ids = pd.read_csv(path, usecols=["row_id"], dtype=str)["row_id"]
    return f"{int(ids.str.startswith(stem + '_').sum())} rows in submission.csv"


def _predict(clone: Clone, work: Path, cases: list[Case], placed: dict, model: Path | None, out: _Outcomes) -> None:
    """``birdclef predict`` over every test copy at once; per file, its messages or its output."""
    todo = [c for c in cases if "test" in placed[c.key]]
    if model is None or not model.is_dir():
        for case in todo:
            out.set(case, "predict", "not run", "no export folder to predict with")
        return
    log, dest = work / "predict.log", work / "predictions"
    files = [placed[c.key]["test"] for c in todo]
    cmd = ["birdclef", "predict", *[f"data/{f}" for f in files], "--model", str(model), "--out", str(dest)]
    rc = clone.run([*cmd, "--threads", "2"], log, 1800)
    lines = log.read_text(errors="replace").splitlines()
    crash = _crash(lines) if rc not in (0, 1) or any("Traceback" in ln for ln in lines) else None
    for case in todo:
        name = Path(placed[case.key]["test"]).name
        csv = dest / f"{Path(name).stem}.csv"
        used = f"scored: {len(pd.read_csv(csv))} windows" if csv.is_file() else "no output, no message"
        out.seen(case, "predict", _naming(lines, [name]), used, crash)


def audio_campaign(
    work: Path, commit: str, data: Path, overrides: dict[str, Any], n_cases: int | None, model: Path | None
) -> dict[str, Any]:
    """Every case (or the first ``n_cases``) through the pipeline and ``predict``; the table and the verdict.

    Args:
        work: scratch folder (the clone goes under it; the generated audio, 3-hour file included, is deleted).
        commit: the committed code to clone.
        data: the tiny dataset (copied, then the cases are added).
        overrides: dotted params for the ``dvc repro`` (``acquire.on_bad: skip`` is added).
        n_cases: how many cases (None: all).
        model: an export folder for ``predict`` when this run's ``dvc repro`` did not get to one.

    Returns:
        The JSON-ready report: the repro's exit status, the rows (case, stage, status, outcome), counts, ok.
    """
    started = time.perf_counter()
    cases = list(CASES[:n_cases] if n_cases else CASES)
    clone = make_clone(work, "bad_audio", commit, data, {})
    placed = place(cases, clone.root / "data")
    out = _Outcomes()
    fail_rc = _acquire_fail(clone, work, cases, placed, out)
    set_params(clone.root / "params.yaml", {**overrides, "acquire.on_bad": "skip"})
    log = work / "bad_audio.log"
    t = time.perf_counter()
    rc = clone.run(["dvc", "repro"], log, 3600)
    repro_s = round(time.perf_counter() - t)
    _pipeline(clone, cases, placed, stage_sections(log.read_text(errors="replace")), out)
    own = clone.root / "build" / "export"
    _predict(clone, work, cases, placed, own if own.is_dir() else model, out)
    for case in cases:  # the generated audio goes (the 3-hour file is 75 MB a copy)
        for rel in placed[case.key].values():
            (clone.root / "data" / rel).unlink(missing_ok=True)
    shutil.rmtree(work / "predictions", ignore_errors=True)
    cells = [(c, s, *out.cells[(c.key, s)]) for c in cases for s in STAGES if (c.key, s) in out.cells]
    rows = [{"case": c.key, "problem": c.problem, "stage": s, "status": st, "outcome": o} for c, s, st, o in cells]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return {
        "cases": [c.key for c in cases],
        "acquire_on_bad_fail_rc": fail_rc,
        "repro_overrides": {**overrides, "acquire.on_bad": "skip"},
        "repro_rc": rc,
        "repro_s": repro_s,
        "rows": rows,
        "status_counts": counts,
        "ok": rc == 0 and not counts.get("CRASH") and not counts.get("SILENT"),
        "wall_s": round(time.perf_counter() - started),
    }
