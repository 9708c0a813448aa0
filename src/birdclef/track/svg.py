"""Small inline-SVG charts (line and grouped bar) for self-contained HTML reports: no scripts, no network."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

PALETTE = ["#945dd6", "#13adc7", "#f46837", "#48bb78", "#4299e1", "#ed8936", "#f56565", "#718096", "#2c7a7b"]
DASHES = ["", "6,4", "2,3", "8,3,2,3"]
_MARGIN = {"l": 56, "r": 12, "t": 28, "b": 56}


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]`` (steps of 1, 2, 2.5 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    first = math.floor(lo / step) * step
    ticks, t = [], first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 12))
    return ticks


def _fmt(v: float) -> str:
    return f"{v:.1e}" if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3) else f"{v:.4g}"


def _frame(width: int, height: int, title: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" class="ctitle">{escape(title)}</text>',
    ]


def _y_axis(parts: list[str], ticks: list[float], y_of, w: float, label: str, h: float) -> None:
    m = _MARGIN
    for t in ticks:
        y = y_of(t)
        parts.append(f'<line x1="{m["l"]}" y1="{y:.1f}" x2="{m["l"] + w}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{m["l"] - 5}" y="{y + 3:.1f}" text-anchor="end">{_fmt(t)}</text>')
    cy = m["t"] + h / 2
    parts.append(f'<text x="14" y="{cy:.0f}" text-anchor="middle" transform="rotate(-90 14 {cy:.0f})">'
                 f"{escape(label)}</text>")  # fmt: skip


def _legend_width(label: str) -> float:
    return 28 + 6.2 * len(label)  # swatch + gap + ~6 px per character at the 10 px font


def _legend_rows(labels: Sequence[str], width: float) -> list[list[int]]:
    """Indexes of the labels on each legend row, wrapped to ``width`` pixels."""
    rows: list[list[int]] = [[]]
    used = 0.0
    for i, label in enumerate(labels):
        if rows[-1] and used + _legend_width(label) > width:
            rows.append([])
            used = 0.0
        rows[-1].append(i)
        used += _legend_width(label)
    return rows


def _legend(parts: list[str], labels: Sequence[str], x0: float, y: float, dashed: bool, width: float) -> None:
    for r, row in enumerate(_legend_rows(labels, width)):
        x = x0
        for i in row:
            colour, dash = PALETTE[i % len(PALETTE)], DASHES[(i // len(PALETTE)) % len(DASHES)] if dashed else ""
            yy = y + 16 * r
            parts.append(f'<line x1="{x:.0f}" y1="{yy - 3:.0f}" x2="{x + 16:.0f}" y2="{yy - 3:.0f}" '
                         f'stroke="{colour}" stroke-width="3" stroke-dasharray="{dash}"/>')  # fmt: skip
            parts.append(f'<text x="{x + 20:.0f}" y="{yy:.0f}">{escape(labels[i])}</text>')
            x += _legend_width(labels[i])


def line_chart(
    series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    title: str,
    x_label: str,
    y_label: str,
    width: int = 560,
    height: int = 300,
) -> str:
    """An SVG line chart, one polyline per ``(label, xs, ys)`` series; non-finite points are dropped.

    Returns:
        The ``<svg>`` element as a string (empty series give an empty frame with "no data").
    """
    pts = [(x, y) for _, xs, ys in series for x, y in zip(xs, ys, strict=True) if math.isfinite(x) and math.isfinite(y)]
    legend_rows = len(_legend_rows([s[0] for s in series], width - _MARGIN["l"] - 8))
    height += 16 * (legend_rows - 1)
    parts = _frame(width, height, title)
    m = _MARGIN
    w, h = width - m["l"] - m["r"], height - m["t"] - m["b"] - 16 * (legend_rows - 1)
    if not pts:
        parts.append(f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle">no data</text></svg>')
        return "\n".join(parts)
    xt = nice_ticks(min(p[0] for p in pts), max(p[0] for p in pts))
    yt = nice_ticks(min(p[1] for p in pts), max(p[1] for p in pts))

    def x_of(v: float) -> float:
        return m["l"] + (v - xt[0]) / ((xt[-1] - xt[0]) or 1) * w

    def y_of(v: float) -> float:
        return m["t"] + h - (v - yt[0]) / ((yt[-1] - yt[0]) or 1) * h

    _y_axis(parts, yt, y_of, w, y_label, h)
    for t in xt:
        parts.append(f'<text x="{x_of(t):.1f}" y="{m["t"] + h + 14}" text-anchor="middle">{_fmt(t)}</text>')
    parts.append(f'<text x="{m["l"] + w / 2:.0f}" y="{m["t"] + h + 28}" text-anchor="middle">{escape(x_label)}</text>')
    parts.append(f'<rect x="{m["l"]}" y="{m["t"]}" width="{w}" height="{h}" class="axes"/>')
    for i, (label, xs, ys) in enumerate(series):
        colour, dash = PALETTE[i % len(PALETTE)], DASHES[(i // len(PALETTE)) % len(DASHES)]
        good = sorted((x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(x) and math.isfinite(y))
        if not good:
            continue
        d = " ".join(f"{'M' if j == 0 else 'L'}{x_of(x):.1f},{y_of(y):.1f}" for j, (x, y) in enumerate(good))
        parts.append(f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}">'
                     f"<title>{escape(label)}</title></path>")  # fmt: skip
        for x, y in good:
            parts.append(f'<circle cx="{x_of(x):.1f}" cy="{y_of(y):.1f}" r="2.5" fill="{colour}">'
                         f"<title>{escape(label)}: {_fmt(x)}, {_fmt(y)}</title></circle>")  # fmt: skip
    _legend(parts, [s[0] for s in series], m["l"], height - 8 - 16 * (legend_rows - 1), True, width - m["l"] - 8)
    parts.append("</svg>")
    return "\n".join(parts)


def bar_chart(
    groups: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    title: str,
    y_label: str,
    width: int = 560,
    height: int = 300,
) -> str:
    """An SVG grouped bar chart: one group per ``groups`` entry, one bar per ``(label, values)`` series.

    Missing values (None, NaN) leave a gap. The value axis starts at the smallest tick at or below the data, so
    small differences between revisions stay visible.
    """
    vals = [v for _, vs in series for v in vs if v is not None and math.isfinite(v)]
    m = _MARGIN
    legend_rows = len(_legend_rows([s[0] for s in series], width - m["l"] - 8))
    height += 16 * (legend_rows - 1)
    parts = _frame(width, height, title)
    w, h = width - m["l"] - m["r"], height - m["t"] - m["b"] - 16 * (legend_rows - 1)
    if not vals or not groups:
        parts.append(f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle">no data</text></svg>')
        return "\n".join(parts)
    lo, hi = min(vals), max(vals)
    yt = nice_ticks(lo - 0.15 * ((hi - lo) or abs(hi) or 1.0), hi)  # the lowest bar keeps a visible height

    def y_of(v: float) -> float:
        return m["t"] + h - (v - yt[0]) / ((yt[-1] - yt[0]) or 1) * h

    _y_axis(parts, yt, y_of, w, y_label, h)
    band = w / len(groups)
    bar = band * 0.8 / max(len(series), 1)
    for g, name in enumerate(groups):
        cx = m["l"] + (g + 0.5) * band
        parts.append(f'<text x="{cx:.1f}" y="{m["t"] + h + 14}" text-anchor="middle">{escape(name[:14])}</text>')
        for i, (label, vs) in enumerate(series):
            v = vs[g] if g < len(vs) else None
            if v is None or not math.isfinite(v):
                continue
            x = cx - band * 0.4 + i * bar
            top = y_of(v)
            parts.append(f'<rect x="{x:.1f}" y="{top:.1f}" width="{bar * 0.92:.1f}" height="{m["t"] + h - top:.1f}" '
                         f'fill="{PALETTE[i % len(PALETTE)]}"><title>{escape(label)} · {escape(name)}: {_fmt(v)}'
                         f"</title></rect>")  # fmt: skip
    parts.append(f'<rect x="{m["l"]}" y="{m["t"]}" width="{w}" height="{h}" class="axes"/>')
    _legend(parts, [s[0] for s in series], m["l"], height - 8 - 16 * (legend_rows - 1), False, width - m["l"] - 8)
    parts.append("</svg>")
    return "\n".join(parts)
