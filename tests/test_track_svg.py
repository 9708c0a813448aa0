"""Inline SVG charts: tick choice, series drawn, missing values skipped, text escaped."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from birdclef.track.svg import bar_chart, line_chart, nice_ticks

NS = "{http://www.w3.org/2000/svg}"


def test_nice_ticks_cover_the_range_with_round_steps():
    ticks = nice_ticks(0.53, 0.87)
    assert ticks[0] <= 0.53 and ticks[-1] >= 0.87
    steps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:], strict=False)}
    assert len(steps) == 1 and steps.pop() in {0.05, 0.1}
    assert nice_ticks(3, 3)[0] < 3 < nice_ticks(3, 3)[-1]
    assert nice_ticks(float("nan"), 1) == [0.0, 1.0]


def test_line_chart_draws_one_path_per_series_and_drops_non_finite_points():
    svg = line_chart([("a <b>", [1, 2, 3], [0.5, math.nan, 0.7]), ("c", [1, 2], [0.6, 0.65])], "AUC & co", "epoch",
                     "auc")  # fmt: skip
    root = ET.fromstring(svg)  # well-formed XML: labels are escaped
    paths = root.findall(f"{NS}path")
    assert len(paths) == 2
    assert paths[0].get("d").count("L") == 1  # the NaN point is skipped
    assert len(root.findall(f"{NS}circle")) == 4
    assert "a <b>" in "".join(root.itertext())


def test_bar_chart_bars_have_height_and_gaps_for_missing_values():
    svg = bar_chart(["Aves", "Insecta"], [("r1", [0.8, 0.5]), ("r2", [0.9, None])], "per taxon", "AUC")
    bars = [r for r in ET.fromstring(svg).findall(f"{NS}rect") if r.get("fill")]
    assert len(bars) == 3
    assert min(float(b.get("height")) for b in bars) > 5  # the lowest value still shows
    heights = sorted(float(b.get("height")) for b in bars)
    assert heights[0] < heights[1] < heights[2]


def test_empty_charts_say_no_data():
    assert "no data" in line_chart([], "t", "x", "y") and "no data" in bar_chart([], [], "t", "y")


def test_long_legends_wrap_inside_the_chart():
    labels = [f"workspace · it{k}_sed_mnv3s_member_with_a_long_name" for k in range(6)]
    svg = line_chart([(label, [1, 2], [0.1 * k, 0.2]) for k, label in enumerate(labels)], "t", "x", "y", width=400)
    root = ET.fromstring(svg)
    width = float(root.get("width"))
    legend = [t for t in root.findall(f"{NS}text") if t.text in labels]
    assert len(legend) == 6
    assert all(float(t.get("x")) + 6.2 * len(t.text) <= width for t in legend)
    assert len({t.get("y") for t in legend}) == 6  # one label per row at this width
