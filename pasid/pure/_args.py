"""Argument conversion shared by the pure backend's classes."""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np


def as_int(value: Any, what: str) -> int:
    """``value`` as a Python int: ints and numpy integers; TypeError for bool and the rest."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an integer, not bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(
            f"{what} must be an integer, not {type(value).__name__}"
        ) from None


def as_time(value: object, what: str) -> float:
    """``value`` as a float time or duration; TypeError for non-numbers, ValueError unless finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be a number, not {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value}")
    return value
