"""Summary statistics exactly as NVIDIA's report scripts compute and round them.

The scripts run SQLite aggregates (``avg``, ``median``, ``stdev``, ``lower_quartile``,
``upper_quartile`` from NVIDIA's bundled SQLite) and ``round(x, 1)``: the median of an even
count is the mean of the two middle values, ``stdev`` is the sample standard deviation (0 for
a single value), and ``round`` rounds half away from zero.
"""

from __future__ import annotations

import polars as pl


def round1(expr: pl.Expr) -> pl.Expr:
    """SQLite's ``round(x, 1)``: one decimal, half away from zero."""
    return expr.round(1, mode="half_away_from_zero")


def duration_stats(col: str, prefix: str = "") -> list[pl.Expr]:
    """avg/median/min/max/stddev of an integer-ns column, as the NVIDIA summaries print them."""
    c = pl.col(col)
    return [
        round1(c.mean()).alias(f"{prefix}avg_ns"),
        round1(c.median()).alias(f"{prefix}median_ns"),
        c.min().alias(f"{prefix}min_ns"),
        c.max().alias(f"{prefix}max_ns"),
        round1(c.std(ddof=1).fill_null(0.0)).alias(f"{prefix}stddev_ns"),
    ]
