"""T2: the teacher as an ensemble member, blended per class with the students by rank or percentile.

Only the ranking within a species across rows counts for the metric, and a teacher's scores are not on the
students' scale, so the blend happens per class on ranks. Species the teacher does not cover (NaN) come from
the students alone.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

METHODS = ("rank", "percentile")


def blend(
    student: np.ndarray, teacher: np.ndarray, weight: float = 0.2, method: str = "rank"
) -> np.ndarray:
    """Blend student and teacher scores per class (column) over the rows (windows) given.

    ``rank``: each column becomes ``(1 - w) * r_s + w * r_t``, with ``r`` the rank of a row within the column
    divided by the number of rows (ties share their average rank), so every column lies in (0, 1]; a column the
    teacher does not cover becomes the students' ``r_s``. (2026 winner: 0.8 students + 0.2 teacher.)

    ``percentile``: the teacher's rank percentile of each row is read off the students' own score distribution in
    that column (quantile mapping), and ``(1 - w) * s + w * Q_s(pct_t)`` keeps the students' probability scale;
    uncovered columns stay the students' scores.

    A teacher NaN in some rows of a column leaves those cells to the students (their ``r_s`` or ``s``), and the
    teacher's ranks are then taken over the rows it scored.

    Args:
        student: (rows, C) student probabilities (the ensemble's).
        teacher: (rows, C) teacher probabilities in the same species order, NaN where the teacher has no signal.
        weight: the teacher's weight w in [0, 1].
        method: ``rank`` | ``percentile``.

    Returns:
        (rows, C) float64 blended scores.

    Raises:
        ValueError: mismatched shapes, a weight outside [0, 1], an unknown method, or a NaN student score.
    """
    student = np.asarray(student, dtype=np.float64)
    teacher = np.asarray(teacher, dtype=np.float64)
    if student.ndim != 2 or student.shape != teacher.shape:
        raise ValueError(f"blend: student {student.shape} and teacher {teacher.shape} must be the same (rows, C)")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"blend: the teacher weight must be in [0, 1], got {weight}")
    if method not in METHODS:
        raise ValueError(f"blend: method must be one of {METHODS}, not {method!r}")
    if not np.isfinite(student).all():
        raise ValueError("blend: student scores must be finite")
    rows = student.shape[0]
    if rows == 0:
        return student.copy()
    r_s = rankdata(student, axis=0) / rows
    out = r_s.copy() if method == "rank" else student.copy()
    for c in range(student.shape[1]):
        have = np.isfinite(teacher[:, c])
        n = int(have.sum())
        if n == 0 or weight == 0.0:
            continue
        r_t = rankdata(teacher[have, c])
        if method == "rank":
            out[have, c] = (1 - weight) * r_s[have, c] + weight * r_t / n
        else:
            pct = (r_t - 1) / (n - 1) if n > 1 else np.full(1, 0.5)
            out[have, c] = (1 - weight) * student[have, c] + weight * np.quantile(student[:, c], pct)
    return out


def mean_with_teacher(student: np.ndarray, teacher: np.ndarray, weight: float) -> np.ndarray:
    """T3: the teacher as one more member of a pseudo-labelling ensemble, in probability space.

    ``(1 - w) * student + w * teacher`` where the teacher has a value, the students' probability where it is NaN
    (species it does not cover), so an uncovered species never gets a diluted or zero label.

    Args:
        student: (..., C) the student ensemble's probabilities (e.g. (files, windows, C) pseudo-label windows).
        teacher: same shape, NaN where the teacher gives no signal.
        weight: the teacher's weight in [0, 1].

    Returns:
        float32 array of the same shape.
    """
    student = np.asarray(student, dtype=np.float32)
    teacher = np.asarray(teacher, dtype=np.float32)
    if student.shape != teacher.shape:
        raise ValueError(f"mean_with_teacher: student {student.shape} and teacher {teacher.shape} differ")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"mean_with_teacher: the teacher weight must be in [0, 1], got {weight}")
    mixed = (1.0 - weight) * student + weight * np.nan_to_num(teacher)
    return np.where(np.isfinite(teacher), mixed, student).astype(np.float32)
