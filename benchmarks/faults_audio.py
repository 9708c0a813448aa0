"""The bad-audio campaign of ``benchmarks/faults.py``: every case of ``faults_cases`` in one tiny dataset, through
acquire (``on_bad: fail``, then ``skip``, the default), clean, features, ensemble, infer (one ``dvc repro``) and
``birdclef predict``; a row per case and stage saying what happened."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd
from faults_cases import CASES, Case, place
from faults_common import Clone, make_clone, set_params, stage_seconds, stage_sections

STAGES = ("acquire (on_bad: fail)", "acquire", "clean", "features", "ensemble", "infer", "predict")
# The stages whose output a bad file would spoil unnoticed: clean (training segments), ensemble, infer, predict.
# acquire checks containers and features caches what clean kept; contents (NaN, silence, rate) are clean's to judge.
CONSUMERS = ("clean", "ensemble", "infer", "predict")
_MAX = 110  # characters of a message kept in the table


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX else text[: _MAX - 3] + "..."


def _naming(lines: list[str], names: list[str]) -> list[str]:
    """The lines that name one of ``names`` (a file name, or a soundscape id not followed by more of a name)."""
    pats = [re.compile(re.escape(n) + r"(?![\w-])") for n in names if n]
    # "$ <command>" is the campaign's own echo of what it ran (birdclef predict names every file)
    return [ln for ln in lines if not ln.startswith("$ ") and any(p.search(ln) for p in pats)]


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
        """A stage that processed the case: crashed on it, crashed on another file, said something about it, or
        used it without a word (SILENT where bad audio would reach a model or a prediction that way)."""
        if crash is not None:
            self.set(case, stage, "CRASH" if lines else "stage crashed", crash)
        elif lines:
            self.set(case, stage, "handled", lines[0])
        else:
            self.set(case, stage, "SILENT" if case.needs_message and stage in CONSUMERS else "ok", used)


def _acquire_fail_run(clone: Clone, work: Path) -> int:
    """acquire with ``on_bad: fail`` (it must stop, naming every bad file); its exit status.

    The clone's params are set to ``fail`` for this run: the default is ``skip``, which would quarantine instead.
    """
    scratch = work / "acquire_fail"
    return clone.run(["python", "stages/acquire.py", "--data", "data", "--params", "params.yaml",
                      "--out", str(scratch / "out"), "--metrics", str(scratch / "dq.json"),
                      "--timings", str(scratch / "t.json"), "--report", str(scratch / "docs")],
                     work / "acquire_fail.log", 900)  # fmt: skip


def _acquire_fail(work: Path, rc: int, cases: list[Case], placed: dict, out: _Outcomes) -> None:
    """The ``on_bad: fail`` column, from its log."""
    lines = (work / "acquire_fail.log").read_text(errors="replace").splitlines()
    crash = _crash(lines)
    for case in cases:
        said = _naming(lines, [Path(p).name for p in placed[case.key].values()])
        if crash:
            out.set(case, STAGES[0], "CRASH", crash)
        elif said:
            out.set(case, STAGES[0], "handled", f"refused: {said[0]}")
        else:
            out.set(case, STAGES[0], "ok", "accepted by the probe (containers only; contents are clean's)")


def _pipeline(root: Path, cases: list[Case], placed: dict, sections: dict[str, list[str]], out: _Outcomes) -> None:
    """Fill acquire .. infer from one ``dvc repro`` log and the tables the stages wrote in the clone ``root``."""
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


def _predict_run(clone: Clone, work: Path, cases: list[Case], placed: dict, model: Path | None) -> int | None:
    """``birdclef predict`` over every test copy at once (None: no export folder to predict with)."""
    if model is None or not model.is_dir():
        return None
    files = [f"data/{placed[c.key]['test']}" for c in cases if "test" in placed[c.key]]
    cmd = ["birdclef", "predict", *files, "--model", str(model), "--out", str(work / "predictions")]
    return clone.run([*cmd, "--threads", "2"], work / "predict.log", 1800)


def _predict(work: Path, rc: int | None, cases: list[Case], placed: dict, out: _Outcomes) -> None:
    """The predict column: per file, its messages or its output."""
    todo = [c for c in cases if "test" in placed[c.key]]
    if rc is None:
        for case in todo:
            out.set(case, "predict", "not run", "no export folder to predict with")
        return
    lines = (work / "predict.log").read_text(errors="replace").splitlines()
    crash = _crash(lines) if rc not in (0, 1) or any("Traceback" in ln for ln in lines) else None
    for case in todo:
        name = Path(placed[case.key]["test"]).name
        csv = work / "predictions" / f"{Path(name).stem}.csv"
        used = f"scored: {len(pd.read_csv(csv))} windows" if csv.is_file() else "no output, no message"
        out.seen(case, "predict", _naming(lines, [name]), used, crash)


def analyse(work: Path) -> dict[str, Any]:
    """The bad-audio report from a campaign's kept work folder (``run.json``, the logs, the clone's tables)."""
    run = json.loads((work / "bad_audio.json").read_text())
    cases = [c for c in CASES if c.key in run["cases"]]
    placed, out = run["placed"], _Outcomes()
    root = work / "bad_audio"
    _acquire_fail(work, run["acquire_on_bad_fail_rc"], cases, placed, out)
    sections = stage_sections((work / "bad_audio.log").read_text(errors="replace"))
    _pipeline(root, cases, placed, sections, out)
    _predict(work, run["predict_rc"], cases, placed, out)
    cells = [(c, s, *out.cells[(c.key, s)]) for c in cases for s in STAGES if (c.key, s) in out.cells]
    rows = [{"case": c.key, "problem": c.problem, "stage": s, "status": st, "outcome": o} for c, s, st, o in cells]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    report = {k: v for k, v in run.items() if k != "placed"}
    ok = run["repro_rc"] == 0 and not any(counts.get(k) for k in ("CRASH", "stage crashed", "SILENT"))
    # with the 3-hour file in train_audio and test_soundscapes; stages that did not run keep the clone's committed
    # timing files, so only those the log shows running count
    seconds = {k: v for k, v in stage_seconds(root).items() if k in sections}
    return {**report, "stage_seconds": seconds, "rows": rows, "status_counts": counts, "ok": ok}


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
    set_params(clone.root / "params.yaml", {"acquire.on_bad": "fail"})
    fail_rc = _acquire_fail_run(clone, work)
    set_params(clone.root / "params.yaml", {**overrides, "acquire.on_bad": "skip"})
    t = time.perf_counter()
    rc = clone.run(["dvc", "repro"], work / "bad_audio.log", 3600)
    repro_s = round(time.perf_counter() - t)
    own = clone.root / "build" / "export"
    predict_rc = _predict_run(clone, work, cases, placed, own if own.is_dir() else model)
    for case in cases:  # the generated audio goes (the 3-hour file is 75 MB a copy)
        for rel in placed[case.key].values():
            (clone.root / "data" / rel).unlink(missing_ok=True)
    run = {
        "cases": [c.key for c in cases],
        "placed": placed,
        "acquire_on_bad_fail_rc": fail_rc,
        "repro_overrides": {**overrides, "acquire.on_bad": "skip"},
        "repro_rc": rc,
        "repro_s": repro_s,
        "predict_rc": predict_rc,
        "predict_model": str(own if own.is_dir() else model),
        "wall_s": round(time.perf_counter() - started),
    }
    (work / "bad_audio.json").write_text(json.dumps(run, indent=2, ensure_ascii=False))
    return analyse(work)
