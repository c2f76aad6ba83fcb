"""Kernel summary by demangled name, equal to NVIDIA's ``cuda_gpu_kern_sum``."""

from __future__ import annotations

import polars as pl

from dsocr.analyze.stats import duration_stats, round1
from dsocr.analyze.trace import Trace

#: Column order of :func:`kernel_summary`; NVIDIA's CSV header for each in comments.
KERNEL_COLUMNS = (
    "time_pct",  # Time:ratio_%
    "total_ns",  # Total Time:dur_ns
    "instances",  # Instances
    "avg_ns",  # Avg:dur_ns
    "median_ns",  # Med:dur_ns
    "min_ns",  # Min:dur_ns
    "max_ns",  # Max:dur_ns
    "stddev_ns",  # StdDev:dur_ns
    "name",  # Name
)


def kernel_summary(trace: Trace, *, by: str = "name") -> pl.DataFrame:
    """Kernels grouped by ``by`` (``name``: demangled, or ``short_name``): NVIDIA's ``cuda_gpu_kern_sum``.

    Sorted as NVIDIA sorts: total time descending, then instances, then name.
    """
    dur = (pl.col("end") - pl.col("start")).alias("_dur")
    summary = (
        trace.gpu_ops.filter(pl.col("kind") == "kernel")
        .select(pl.col(by).alias("name"), dur)
        .group_by("name")
        .agg(
            pl.col("_dur").sum().alias("total_ns"),
            pl.len().cast(pl.Int64).alias("instances"),
            *duration_stats("_dur"),
        )
    )
    return (
        summary.with_columns(round1(pl.col("total_ns") * 100.0 / pl.col("total_ns").sum()).alias("time_pct"))
        .sort(["total_ns", "instances", "name"], descending=[True, False, False])
        .select(KERNEL_COLUMNS)
        .collect()
    )
