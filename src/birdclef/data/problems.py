"""Bad-input bookkeeping for the acquire stage: one record per offending row or file, the quarantine table."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import pandas as pd

REASONS = ("malformed", "unknown_label", "duplicate", "missing", "unreadable", "empty", "truncated")
"""Every quarantine reason, in report order (``Problem.kind`` is one of these)."""

QUARANTINE_COLUMNS = ("kind", "row", "file", "problem")


@dataclass(frozen=True)
class Problem:
    """One offending row or file.

    Attributes:
        kind: the reason, one of ``REASONS``.
        row: ``"<csv name>:<line>"`` (line number in the file, header = line 1), or ``""`` for a file no CSV row
            names (a soundscape).
        file: audio path relative to the data root, or ``""`` when the row names no usable file.
        problem: what is wrong, in words.
    """

    kind: str
    row: str
    file: str
    problem: str

    def __post_init__(self) -> None:
        if self.kind not in REASONS:
            raise ValueError(f"unknown problem kind {self.kind!r}; expected one of {', '.join(REASONS)}")

    def __str__(self) -> str:
        where = ", ".join(part for part in (self.row, self.file) if part)
        return f"{where}: {self.kind}: {self.problem}"


class BadInputError(ValueError):
    """Raised with ``on_bad: fail``; its message lists every problem, one per line."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        counts = count_by_reason(self.problems)
        summary = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(
            f"{len(self.problems)} bad input problem(s) ({summary}); fix them or set acquire.on_bad: skip "
            f"to quarantine them:\n{lines}"
        )


def count_by_reason(problems: Iterable[Problem]) -> dict[str, int]:
    """Number of problems per reason, every reason present (stable keys for metrics)."""
    counts = dict.fromkeys(REASONS, 0)
    for p in problems:
        counts[p.kind] += 1
    return counts


def quarantine_frame(problems: Iterable[Problem]) -> pd.DataFrame:
    """The quarantine table (columns ``QUARANTINE_COLUMNS``): grouped by reason, in discovery (file) order."""
    df = pd.DataFrame([asdict(p) for p in problems], columns=list(QUARANTINE_COLUMNS)).astype(str)
    order = {kind: i for i, kind in enumerate(REASONS)}
    df["_order"] = df["kind"].map(order)
    return df.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)
