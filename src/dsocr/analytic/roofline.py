"""Roofline: predicted time of an amount of work on a peak, max(FLOPs / peak FLOP/s, bytes / bandwidth).

Below both ``metrics`` (MFU, MBU, ratios) and ``calibration`` (its fallback for missing signatures).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import attrs

from dsocr.analytic.cost import Cost, Op
from dsocr.analytic.peaks import Peak


@attrs.frozen
class Roofline:
    """Roofline prediction for an amount of work on a peak."""

    compute_ns: float | None
    memory_ns: float | None
    predicted_ns: float | None
    bound: Literal["compute", "memory"] | None


def arithmetic_intensity(cost: Cost) -> float | None:
    """FLOPs per byte moved."""
    return cost.flops / cost.bytes if cost.bytes else None


def roofline(cost: Cost, peak: Peak) -> Roofline:
    """max(FLOPs / peak, bytes / bandwidth), and which one bounds it."""
    fps, bps = peak.flops_per_s, peak.bytes_per_s
    compute = cost.flops / fps * 1e9 if fps else None
    memory = cost.bytes / bps * 1e9 if bps else None
    known = [t for t in (compute, memory) if t is not None]
    if not known:
        return Roofline(compute, memory, None, None)
    predicted = max(known)
    bound: Literal["compute", "memory"] | None = None
    if compute is not None and memory is not None:
        bound = "compute" if compute >= memory else "memory"
    return Roofline(compute, memory, predicted, bound)


def ops_roofline_ns(ops: Iterable[Op], peak: Peak) -> float | None:
    """Sum of every operation's own roofline time (each op one unfused kernel): a tighter prediction."""
    total = 0.0
    for op in ops:
        t = roofline(op.cost, peak).predicted_ns
        if t is None:
            return None
        total += t
    return total
