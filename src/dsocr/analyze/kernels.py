"""Kernel summary by demangled name, equal to NVIDIA's ``cuda_gpu_kern_sum``."""

from __future__ import annotations

import polars as pl

from dsocr.analyze.op_details import with_op_details
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

    Sorted as NVIDIA sorts: total time descending, then instances, then name. By ``name``,
    kernels are grouped by their integer ``name_id`` and the names are looked up once per id
    (unless two ids carry the same name, when they are grouped by the name itself).
    """
    ops = trace.gpu_ops if by == "name" else with_op_details(trace, trace.gpu_ops, [by])
    kernels = ops.filter(pl.col("kind") == "kernel")
    summary = None
    if by == "name" and "name_id" in trace.gpu_ops.collect_schema():
        summary = _by_name_id(trace, kernels)
    if summary is None:
        summary = _stats(kernels.select(pl.col(by).alias("name"), _DUR), "name").collect()
    return (
        summary.lazy()
        .with_columns(round1(pl.col("total_ns") * 100.0 / pl.col("total_ns").sum()).alias("time_pct"))
        .sort(["total_ns", "instances", "name"], descending=[True, False, False])
        .select(KERNEL_COLUMNS)
        .collect()
    )


_DUR = (pl.col("end") - pl.col("start")).alias("_dur")


def _stats(frame: pl.LazyFrame, key: str, *extra: pl.Expr) -> pl.LazyFrame:
    return frame.group_by(key).agg(
        pl.col("_dur").sum().alias("total_ns"),
        pl.len().cast(pl.Int64).alias("instances"),
        *duration_stats("_dur"),
        *extra,
    )


def _by_name_id(trace: Trace, kernels: pl.LazyFrame) -> pl.DataFrame | None:
    """The statistics per ``name_id``, named through one op per id; None if two ids share a name."""
    per_id = _stats(kernels.select("name_id", "op_id", _DUR), "name_id", pl.col("op_id").min().alias("_op")).collect()
    names = (
        trace.gpu_ops.filter(pl.col("op_id").is_in(per_id["_op"].implode()))
        .select(pl.col("op_id").alias("_op"), "name")
        .collect()
    )
    named = per_id.join(names, on="_op", how="left")
    if named["name"].n_unique() != named.height:
        return None
    return named.drop("name_id", "_op")
