"""Tests for birdclef.infer.budget: the Kaggle budget planner's arithmetic."""

from __future__ import annotations

import pytest

from birdclef.infer.budget import format_plan, plan_bundle


def _spec(precision: str = "fp32") -> dict:
    members = [
        {"name": "it1_sed_mnv3s", "mel": "mel96"},
        {"name": "it2_sed_mnv3s", "mel": "mel96"},
        {"name": "it2_sed_effb0", "mel": "mel128"},
    ]
    ensemble = {"members": [{"name": m["name"], "model": m["name"].split("_", 1)[1]} for m in members]}
    return {"mels": {"mel96": {}, "mel128": {}}, "members": members, "precision": precision, "ensemble": ensemble}


TIMINGS = {
    "bench_cores": 2,
    "frontend_seconds_per_soundscape_minute_mel96": 0.01,
    "frontend_seconds_per_soundscape_minute_mel128": 0.02,
    "member_seconds_per_soundscape_minute_it1_sed_mnv3s": 0.03,  # 0.01 front end + 0.02 body, on 2 threads
    "member_seconds_per_soundscape_minute_it2_sed_mnv3s": 0.05,  # 0.04 body
    "member_seconds_per_soundscape_minute_it2_sed_effb0": 0.12,  # 0.10 body
}


def test_plan_adds_member_bodies_front_ends_and_the_shared_work_in_cpu_seconds():
    infer = {"seconds_per_soundscape_minute": 0.25, "cores": 2, "startup_seconds": 6.0}
    plan = plan_bundle(_spec(), TIMINGS, infer)
    # CPU-s per soundscape minute: bodies (0.02 + 0.04 + 0.10) x 2 threads, front ends (0.01 + 0.02) x 2
    assert plan["members"]["it1_sed_mnv3s"]["body_cpu_s"] == pytest.approx(0.04)
    assert plan["members"]["it2_sed_effb0"]["body_cpu_s"] == pytest.approx(0.20)
    own = 0.32 + 0.06
    assert plan["shared_cpu_s"] == pytest.approx(0.25 * 2 - own)  # decode etc.: what the infer run spent beyond
    assert plan["projected_minutes"] == pytest.approx(round((700 * 0.5 / 4 + 6.0) / 60, 2))
    assert not plan["over_limit"]
    mnv3 = plan["kinds"]["sed_mnv3s@fp32"]
    assert mnv3["body_cpu_s"] == pytest.approx(0.06)  # the mean of its two members' 0.04 and 0.08
    budget = (90 * 60 - 6.0) * 4 / 700
    assert mnv3["fit_alone"] == int((budget - 0.12 - 0.02) // 0.06)
    assert plan["kinds"]["sed_effb0@fp32"]["fit_alone"] == int((budget - 0.12 - 0.04) // 0.20)


def test_plan_flags_a_bundle_past_the_limit_and_names_the_precision_in_the_kind():
    slow = {**TIMINGS, "member_seconds_per_soundscape_minute_it2_sed_effb0": 4.02}  # 4.0 s body on 2 threads
    plan = plan_bundle(_spec("int8"), slow, None, limit_minutes=90)
    # 700 x (0.04 + 0.08 + 8.0 + 0.06) / 4 / 60 = 23.9 minutes: within 90; past a 20-minute limit
    assert plan["projected_minutes"] == pytest.approx(700 * 8.18 / 4 / 60, abs=0.01)
    assert not plan["over_limit"] and set(plan["kinds"]) == {"sed_mnv3s@int8", "sed_effb0@int8"}
    tight = plan_bundle(_spec("int8"), slow, None, limit_minutes=20)
    assert tight["over_limit"] and tight["kinds"]["sed_effb0@int8"]["fit_alone"] == 0
    assert "sed_effb0@int8" in format_plan(tight) and "23.9 of 20 minutes" in format_plan(tight)


def test_plan_refuses_timings_without_a_member():
    timings = {k: v for k, v in TIMINGS.items() if "effb0" not in k}
    with pytest.raises(ValueError, match="member_seconds_per_soundscape_minute_it2_sed_effb0"):
        plan_bundle(_spec(), timings)
