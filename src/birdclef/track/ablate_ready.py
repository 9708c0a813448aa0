"""Check, before an ablation queues anything, that the stages its runs share are up to date and in the DVC cache.

Every ``dvc exp run`` starts in a fresh temporary workspace that DVC fills from dvc.lock and the cache. A stage that
no variant or seed reaches (acquire, clean, features in the catalogue) is meant to be reused by every run: when its
locked outputs are missing from the cache the runs die in it ("failed to load directory ... .dir"), and when it is
out of date (data re-added, its code edited) every run recomputes it. Both are found here, in a second, and not an
hour into a queue of forty runs.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from birdclef.track.reach import reached, stage_params


def _base(name: str) -> str:
    return name.split("@", 1)[0]


def _path_under(path: str, outs: Iterable[str]) -> bool:
    return any(path == o or path.startswith(o.rstrip("/") + "/") or o.startswith(path.rstrip("/") + "/")
               for o in outs)  # fmt: skip


def upstream(lock: Mapping[str, Any], targets: Iterable[str]) -> list[str]:
    """The locked stages (``train@0`` for foreach items) that ``targets`` (base names) need, the targets included.

    A stage needs another when one of its deps is, holds, or lies inside that stage's outs. No targets: every stage.
    """
    stages = lock.get("stages") or {}
    deps = {n: [str(d.get("path")) for d in s.get("deps") or []] for n, s in stages.items()}
    outs = {n: [str(o.get("path")) for o in s.get("outs") or []] for n, s in stages.items()}
    wanted = set(targets)
    todo = [n for n in stages if not wanted or _base(n) in wanted or n in wanted]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [m for m in stages if m not in seen and any(_path_under(d, outs[m]) for d in deps[name])]
    return [n for n in stages if n in seen]


def cache_dir(repo: Path) -> Path:
    """The project's DVC cache directory (``dvc cache dir``; ``.dvc/cache`` when DVC cannot say)."""
    from birdclef.track.pipeline import dvc_executable

    proc = subprocess.run([dvc_executable(), "cache", "dir"], cwd=repo, capture_output=True, text=True)
    found = proc.stdout.strip().splitlines()
    path = Path(found[-1]) if proc.returncode == 0 and found else Path(".dvc/cache")
    return path if path.is_absolute() else repo / path


def in_cache(cache: Path, md5: str) -> bool:
    """Whether DVC's cache holds the object of ``md5`` (a file, or a directory listing ``<md5>.dir``)."""
    return (cache / "files" / "md5" / md5[:2] / md5[2:]).is_file() or (cache / md5[:2] / md5[2:]).is_file()


def missing_outputs(lock: Mapping[str, Any], stages: Iterable[str], cache: Path) -> list[str]:
    """``"stage: path"`` for each cached, locked output of ``stages`` whose object the cache lacks."""
    out = []
    for name in stages:
        for o in (lock.get("stages") or {}).get(name, {}).get("outs") or []:
            md5 = o.get("md5")
            if md5 and o.get("cache", True) and not in_cache(cache, str(md5)):
                out.append(f"{name}: {o.get('path')}")
    return out


def changed_stages(repo: Path, stages: list[str]) -> dict[str, Any]:
    """``dvc status --json`` for ``stages``: ``{stage: [changes]}``, empty when all are up to date."""
    from birdclef.track.pipeline import child_env, dvc_executable

    if not stages:
        return {}
    env = child_env(None, "")
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([dvc_executable(), "status", "--json", *stages], cwd=repo, env=env, capture_output=True,
                          text=True)  # fmt: skip
    if proc.returncode:
        raise ValueError(f"dvc status failed: {proc.stderr.strip()[-2000:]}")
    text = proc.stdout.strip()
    doc = json.loads(text[text.find("{") :]) if "{" in text else {}
    return {k: v for k, v in doc.items() if _base(k) in {_base(s) for s in stages}}


def shared_stages(repo: Path, keys: Iterable[str], targets: Iterable[str]) -> list[str]:
    """The locked stages that ``targets`` need and that no params key of ``keys`` reaches (reused by every run)."""
    lock_path = repo / "dvc.lock"
    lock = (yaml.safe_load(lock_path.read_text()) or {}) if lock_path.is_file() else {}
    touched = {s for found in reached(set(keys), stage_params(repo / "dvc.yaml")).values() for s in found}
    return [n for n in upstream(lock, targets) if _base(n) not in touched]


def readiness_problems(repo: Path, keys: Iterable[str], targets: Iterable[str]) -> list[str]:
    """What stops the runs from reusing the shared stages, one line each (empty: ready to queue).

    Args:
        repo: the DVC project.
        keys: every params key the runs override (variants, seeds, preset, thread caps).
        targets: the stages ``dvc exp run`` reproduces ([] = the whole pipeline).
    """
    lock_path = repo / "dvc.lock"
    if not lock_path.is_file():
        return []  # nothing locked: every run computes everything, as a first `dvc repro` would
    lock = yaml.safe_load(lock_path.read_text()) or {}
    shared = shared_stages(repo, keys, targets)
    problems = [f"{m} is not in the DVC cache" for m in missing_outputs(lock, shared, cache_dir(repo))]
    for stage, changes in changed_stages(repo, shared).items():
        what = [_change(c) for c in changes]
        what = [w for w in what if w]
        if what:
            problems.append(f"{stage} is out of date ({'; '.join(what)})")
    return problems


def _change(change: Any) -> str:
    """One entry of a stage's ``dvc status`` list as text (``changed deps: data/raw.txt modified``); outputs
    missing from the cache are left out: :func:`missing_outputs` names them."""
    if not isinstance(change, Mapping):
        return str(change)
    parts = []
    for kind, detail in change.items():
        if isinstance(detail, Mapping):
            items = [f"{path} {state}" for path, state in detail.items() if state != "not in cache"]
            if items:
                parts.append(f"{kind}: {', '.join(items)}")
        else:
            parts.append(f"{kind}: {detail}" if detail else str(kind))
    return "; ".join(parts)
