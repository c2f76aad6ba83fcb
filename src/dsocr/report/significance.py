"""The one significance rule of ``dsocr diff`` and ``dsocr whatif report``.

A change from A to B is significant only when ``|B - A| > 2 x sqrt(sd_A^2 + sd_B^2)``, with each side's
pass-to-pass standard deviation; with a side's spread unknown (a single pass) it is not judged.
"""

from __future__ import annotations

import math
from typing import Final

#: The change must exceed this many combined standard deviations.
SIGMAS: Final = 2.0


def noise(sd_a: float | None, sd_b: float | None) -> float | None:
    """``SIGMAS`` x the combined standard deviation; ``None`` when a side's spread is unknown."""
    if sd_a is None or sd_b is None:
        return None
    return SIGMAS * math.sqrt(sd_a**2 + sd_b**2)


def significant(a: float | None, b: float | None, sd_a: float | None, sd_b: float | None) -> bool | None:
    """Whether |B - A| exceeds the noise; ``None`` when a value or a spread is unknown."""
    n = noise(sd_a, sd_b)
    if a is None or b is None or n is None:
        return None
    return abs(b - a) > n
