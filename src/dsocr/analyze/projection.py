"""NVTX ranges projected onto the GPU, equal to NVIDIA's ``nvtx_gpu_proj_trace``/``_sum``.

A range instance's projection spans from the first start to the last end of the GPU ops
launched inside it (on its thread); instances without GPU ops are dropped; child time is not
subtracted. ``gpu_ops`` counts the launching API calls (NVIDIA counts distinct correlation
ids, so a CUDA graph launch counts once however many kernels it runs).
"""

from __future__ import annotations

import polars as pl

from dsocr.analyze.attribution import api_range_pairs
from dsocr.analyze.stats import duration_stats, round1
from dsocr.analyze.trace import Trace

#: Column order of :func:`projection_summary`; NVIDIA's CSV header for each in comments.
SUMMARY_COLUMNS = (
    "range",  # Range
    "style",  # Style
    "total_proj_ns",  # Total Proj Time:dur_ns
    "total_range_ns",  # Total Range Time:dur_ns
    "instances",  # Range Instances
    "proj_avg_ns",  # Proj Avg:dur_ns
    "proj_median_ns",  # Proj Med:dur_ns
    "proj_min_ns",  # Proj Min:dur_ns
    "proj_max_ns",  # Proj Max:dur_ns
    "proj_stddev_ns",  # Proj StdDev:dur_ns
    "gpu_ops",  # Total GPU Ops
    "avg_gpu_ops",  # Avg GPU Ops
    "avg_level",  # Avg Range Lvl
    "avg_children",  # Avg Num Child
)


def projection_trace(trace: Trace, pairs: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per range instance with GPU work (NVIDIA's ``nvtx_gpu_proj_trace``).

    Columns: ``range_id``, ``name``, ``style``, ``pid``, ``tid``, ``start``, ``end`` (CPU),
    ``range_ns``, ``proj_start``, ``proj_end``, ``proj_ns``, ``gpu_ops`` (launching API calls),
    ``depth``, ``parent_id``, ``children`` (direct children that have GPU work), ordered by
    projected start. ``pairs`` may pass precomputed ``(api_id, range_id)`` pairs.
    """
    if pairs is None:
        pairs = api_range_pairs(trace, only_launching=True)
    launches = (
        trace.gpu_ops.filter(pl.col("api_id").is_not_null())
        .group_by("api_id")
        .agg(pl.col("start").min().alias("_op_start"), pl.col("end").max().alias("_op_end"))
    )
    per_range = (
        pairs.lazy()
        .join(launches, on="api_id")
        .group_by("range_id")
        .agg(
            pl.col("_op_start").min().alias("proj_start"),
            pl.col("_op_end").max().alias("proj_end"),
            pl.col("api_id").n_unique().cast(pl.Int64).alias("gpu_ops"),
        )
    )
    projected = per_range.join(
        trace.ranges.select("range_id", "name", "style", "pid", "tid", "start", "end", "depth", "parent_id"),
        on="range_id",
    )
    children = (
        projected.select("range_id", "parent_id")
        .drop_nulls("parent_id")
        .group_by("parent_id")
        .agg(pl.len().cast(pl.Int64).alias("children"))
        .rename({"parent_id": "range_id"})
    )
    return (
        projected.join(children, on="range_id", how="left")
        .with_columns(
            pl.col("children").fill_null(0),
            (pl.col("end") - pl.col("start")).alias("range_ns"),
            (pl.col("proj_end") - pl.col("proj_start")).alias("proj_ns"),
        )
        .select(
            "range_id",
            "name",
            "style",
            "pid",
            "tid",
            "start",
            "end",
            "range_ns",
            "proj_start",
            "proj_end",
            "proj_ns",
            "gpu_ops",
            "depth",
            "parent_id",
            "children",
        )
        .sort(["proj_start", "proj_ns"], descending=[False, True])
        .collect()
    )


def projection_summary(trace: Trace, instances: pl.DataFrame | None = None) -> pl.DataFrame:
    """Per (range name, style), NVIDIA's ``nvtx_gpu_proj_sum`` (columns: :data:`SUMMARY_COLUMNS`).

    Sorted by total projected time, longest first (then name, style).
    """
    if instances is None:
        instances = projection_trace(trace)
    return (
        instances.group_by("name", "style")
        .agg(
            pl.col("proj_ns").sum().alias("total_proj_ns"),
            pl.col("range_ns").sum().alias("total_range_ns"),
            pl.len().cast(pl.Int64).alias("instances"),
            *duration_stats("proj_ns", prefix="proj_"),
            pl.col("gpu_ops").sum().alias("gpu_ops"),
            round1(pl.col("gpu_ops").mean()).alias("avg_gpu_ops"),
            round1(pl.col("depth").mean()).alias("avg_level"),
            round1(pl.col("children").mean()).alias("avg_children"),
        )
        .rename({"name": "range"})
        .sort(["total_proj_ns", "range", "style"], descending=[True, False, False])
        .select(SUMMARY_COLUMNS)
    )
