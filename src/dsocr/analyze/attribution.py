"""Which NVTX ranges enclose each API call and each GPU operation (NVIDIA's projection rule).

A range encloses an API call when both are on the same thread, ``range.start <= api.start``
and ``range.end >= api.end``, and the range ended on the thread that started it; a GPU
operation belongs to every range enclosing its launching API call (the whole stack, not only
the innermost range). Computed by a sorted per-thread sweep (:mod:`dsocr.analyze.sweep`),
never an interval cross join, so StartEnd ranges that do not nest are handled exactly too.
"""

from __future__ import annotations

import attrs
import polars as pl

from dsocr.analyze.sweep import contained, make_timekey
from dsocr.analyze.trace import Trace


@attrs.frozen
class Attribution:
    """Long frames of (thing, enclosing range) pairs.

    ``api_ranges``: ``api_id``, ``range_id`` (every enclosing range of every API call).
    ``op_ranges``: ``op_id``, ``range_id`` (every enclosing range of every GPU op's launch).
    ``op_innermost``: ``op_id``, ``range_id`` (the deepest enclosing range; ops outside every
    range, or without a recorded API call, are absent).
    ``api_innermost``: ``api_id``, ``range_id`` (the same for API calls).
    """

    api_ranges: pl.DataFrame
    op_ranges: pl.DataFrame
    op_innermost: pl.DataFrame
    api_innermost: pl.DataFrame


def api_range_pairs(trace: Trace, *, only_launching: bool = False) -> pl.DataFrame:
    """``(api_id, range_id)`` for every enclosing range; ``only_launching`` keeps API calls with GPU ops."""
    ranges = trace.ranges.filter(pl.col("ended_on_start_thread")).select("range_id", "global_tid", "start", "end")
    api = trace.api.select("api_id", "global_tid", "start", "end")
    if only_launching:
        launching = trace.gpu_ops.select("api_id").drop_nulls().unique()
        api = api.join(launching, on="api_id", how="semi")
    ranges_df, api_df = pl.collect_all([ranges, api])
    tk = make_timekey([ranges_df.select("global_tid", "start", "end"), api_df.select("global_tid", "start", "end")])
    return contained(ranges_df, api_df, tk, outer_id="range_id", inner_id="api_id").select("api_id", "range_id")


def _innermost(pairs: pl.DataFrame, key: str, depths: pl.DataFrame) -> pl.DataFrame:
    return (
        pairs.join(depths, on="range_id")
        .sort(["depth", "start", "range_id"])
        .group_by(key)
        .agg(pl.col("range_id").last())
        .sort(key)
    )


def attribute(trace: Trace, *, only_launching: bool = False) -> Attribution:
    """Attribute every API call and GPU operation to its enclosing NVTX ranges.

    With ``only_launching`` only API calls that launched a GPU operation are attributed (all
    that the GPU projection needs; cheaper on traces with many other API calls).
    """
    api_ranges = api_range_pairs(trace, only_launching=only_launching).sort("api_id", "range_id")
    ops = trace.gpu_ops.select("op_id", "api_id").drop_nulls("api_id").collect()
    depths = trace.ranges.select("range_id", "depth", "start").collect()
    op_ranges = ops.join(api_ranges, on="api_id").select("op_id", "range_id").sort("op_id", "range_id")
    api_innermost = _innermost(api_ranges, "api_id", depths)
    op_innermost = ops.join(api_innermost, on="api_id").select("op_id", "range_id").sort("op_id")
    return Attribution(
        api_ranges=api_ranges,
        op_ranges=op_ranges,
        op_innermost=op_innermost,
        api_innermost=api_innermost,
    )
