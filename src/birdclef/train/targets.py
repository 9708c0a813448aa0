"""Multi-hot training targets and loss masks from primary and secondary class indices."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def make_targets(
    primary: Sequence[int],
    secondary: Sequence[Sequence[int]],
    num_classes: int,
    secondary_value: float | str = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Build targets (B, C) and loss masks (B, C) for a batch of labelled clips.

    Args:
        primary: the primary class index of each clip; a negative index means "no primary label" (e.g. a
            background clip), giving an all-zero row.
        secondary: the secondary class indices of each clip (may be empty).
        num_classes: C.
        secondary_value: target value of secondary cells, a float in [0, 1] (e.g. 1.0 or 0.5), or ``"mask"`` to
            leave them out of the loss (target 0, mask 0). A class that is both primary and secondary is primary.

    Returns:
        (target float32 (B, C) in [0, 1], mask float32 (B, C) of 0/1).

    Raises:
        ValueError: lengths differ, an index is out of range, or ``secondary_value`` is invalid.
    """
    if len(primary) != len(secondary):
        raise ValueError(f"{len(primary)} primary labels but {len(secondary)} secondary label lists")
    masked = secondary_value == "mask"
    if not masked and (isinstance(secondary_value, str) or not 0.0 <= float(secondary_value) <= 1.0):
        raise ValueError(f"secondary_value must be a float in [0, 1] or 'mask', not {secondary_value!r}")
    target = torch.zeros(len(primary), num_classes)
    mask = torch.ones(len(primary), num_classes)
    for row, (p, sec) in enumerate(zip(primary, secondary, strict=True)):
        for s in sec:
            if not 0 <= int(s) < num_classes:
                raise ValueError(f"row {row}: secondary class index {s} outside [0, {num_classes})")
            if masked:
                mask[row, int(s)] = 0.0
            else:
                target[row, int(s)] = float(secondary_value)
        if int(p) >= num_classes:
            raise ValueError(f"row {row}: primary class index {p} outside [0, {num_classes})")
        if int(p) >= 0:
            target[row, int(p)] = 1.0
            mask[row, int(p)] = 1.0
    return target, mask
