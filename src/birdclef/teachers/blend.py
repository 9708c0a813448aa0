"""T2 and T3: the teacher blended with students per class (rank / percentile) or averaged into a pseudo ensemble.

Only the ranking within a species across rows counts for the metric, and a teacher's scores are not on the
students' scale, so the ensemble blend happens per class on ranks (``blend``, numpy only: it lives in
:mod:`birdclef.teachers.runtime`, which the Kaggle bundle copies). Species the teacher does not cover (NaN) come
from the students alone.
"""

from __future__ import annotations

import numpy as np

from birdclef.teachers.runtime import METHODS, blend

__all__ = ["METHODS", "blend", "mean_with_teacher"]


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
