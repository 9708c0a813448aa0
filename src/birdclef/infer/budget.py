"""The Kaggle budget planner: how many members of each kind fit in 90 minutes on 4 cores, from measured times.

The export stage times each member alone (front end + body, ``member_seconds_per_soundscape_minute_<member>``)
and each front end alone on one soundscape minute with ``bench_cores`` threads; the infer stage measures the whole
run (``seconds_per_soundscape_minute`` on ``cores`` cores, ``startup_seconds``). In CPU-seconds per soundscape
minute (a time measured on n threads x n, an upper bound: one thread per worker is how the runner uses the cores)::

    body_m   = (member_m - frontend_mel(m)) x bench_cores
    shared   = infer_spm x cores - sum(frontends + bodies)   (decode, windowing, post-processing; >= 0)
    minutes  = (soundscapes x (shared + frontends + sum body_m) / kaggle_cores + startup) / 60

and a kind (model config @ precision) fits ``floor((budget - shared - its front end) / body)`` times alone, with
``budget = (limit x 60 - startup) x kaggle_cores / soundscapes``. It assumes a Kaggle core is as fast as the
one measured (the runner's projection assumes the same).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

KAGGLE_LIMIT_MINUTES = 90.0
"""The competition's CPU notebook limit."""
MEMBER_KEY = "member_seconds_per_soundscape_minute_"
FRONTEND_KEY = "frontend_seconds_per_soundscape_minute_"


def plan_bundle(
    spec: Mapping[str, Any],
    export_timings: Mapping[str, Any],
    infer_timings: Mapping[str, Any] | None = None,
    limit_minutes: float = KAGGLE_LIMIT_MINUTES,
    soundscapes: int = 700,
    kaggle_cores: int = 4,
) -> dict[str, Any]:
    """Project an exported ensemble's Kaggle time and how many members of each kind fit in the limit.

    Args:
        spec: the export spec (members with ``name`` and ``mel``; ``precision``; ``ensemble.members`` with
            ``model``).
        export_timings: the export stage's timings (``metrics/timing/export.json``).
        infer_timings: the infer stage's (``metrics/timing/infer.json``), for the shared per-file work and the
            start-up; ``None``: both taken as 0 (the projection then undercounts decoding).
        limit_minutes: the notebook limit.
        soundscapes: one-minute test soundscapes to score.
        kaggle_cores: cores of the Kaggle machine.

    Returns:
        ``{"projected_minutes", "limit_minutes", "over_limit", "shared_cpu_s", "startup_s", "members": {name:
        {"kind", "body_cpu_s"}}, "kinds": {kind: {"body_cpu_s", "frontend_cpu_s", "fit_alone"}}}``, CPU-seconds
        per soundscape minute.

    Raises:
        ValueError: the export timings lack a member's time (an export from before the planner: rerun export).
    """
    threads = int(export_timings.get("bench_cores", 1))
    frontends = {m: float(export_timings.get(FRONTEND_KEY + m, 0.0)) * threads for m in spec["mels"]}
    models = {m["name"]: m.get("model") for m in (spec.get("ensemble") or {}).get("members", [])}
    precision = spec.get("precision", "fp32")
    members: dict[str, dict[str, Any]] = {}
    for member in spec["members"]:
        name = member["name"]
        if MEMBER_KEY + name not in export_timings:
            raise ValueError(f"the export timings have no {MEMBER_KEY}{name}: rerun the export stage")
        body = max(float(export_timings[MEMBER_KEY + name]) * threads - frontends[member["mel"]], 0.0)
        members[name] = {"kind": f"{models.get(name) or name}@{precision}", "mel": member["mel"], "body_cpu_s": body}
    used_frontends = {m["mel"] for m in members.values()}
    own = sum(frontends[m] for m in used_frontends) + sum(m["body_cpu_s"] for m in members.values())
    infer_timings = infer_timings or {}
    measured = float(infer_timings.get("seconds_per_soundscape_minute", 0.0)) * int(infer_timings.get("cores", 1))
    shared = max(measured - own, 0.0)
    startup = float(infer_timings.get("startup_seconds", 0.0))
    projected = (soundscapes * (shared + own) / kaggle_cores + startup) / 60.0
    budget = (limit_minutes * 60.0 - startup) * kaggle_cores / soundscapes
    kinds: dict[str, dict[str, Any]] = {}
    for member in members.values():
        entry = kinds.setdefault(member["kind"], {"bodies": [], "frontend_cpu_s": frontends[member["mel"]]})
        entry["bodies"].append(member["body_cpu_s"])
    for entry in kinds.values():
        bodies = entry.pop("bodies")
        body = sum(bodies) / len(bodies)  # members of one kind differ only by their weights and timing noise
        entry["body_cpu_s"] = round(body, 4)
        room = budget - shared - entry["frontend_cpu_s"]
        entry["fit_alone"] = max(int(math.floor(room / body)), 0) if body > 0 else None
        entry["frontend_cpu_s"] = round(entry["frontend_cpu_s"], 4)
    return {
        "projected_minutes": round(projected, 2),
        "limit_minutes": float(limit_minutes),
        "over_limit": projected > limit_minutes,
        "shared_cpu_s": round(shared, 4),
        "startup_s": startup,
        "members": {n: {"kind": m["kind"], "body_cpu_s": round(m["body_cpu_s"], 4)} for n, m in members.items()},
        "kinds": kinds,
    }


def format_plan(plan: Mapping[str, Any], soundscapes: int = 700, kaggle_cores: int = 4) -> str:
    """The plan as the lines ``birdclef bundle`` prints."""
    lines = [
        f"Kaggle budget: {plan['projected_minutes']:.1f} of {plan['limit_minutes']:g} minutes projected for "
        f"{soundscapes} soundscapes on {kaggle_cores} cores (shared decode/windowing/post-processing "
        f"{plan['shared_cpu_s']:.3f} CPU-s per soundscape minute, start-up {plan['startup_s']:.1f} s)"
    ]
    for kind, entry in sorted(plan["kinds"].items()):
        fit = "any number" if entry["fit_alone"] is None else str(entry["fit_alone"])
        lines.append(
            f"  {kind}: {entry['body_cpu_s']:.3f} CPU-s per soundscape minute per member "
            f"(+ {entry['frontend_cpu_s']:.3f} its front end, once): {fit} such members fit alone"
        )
    return "\n".join(lines)
