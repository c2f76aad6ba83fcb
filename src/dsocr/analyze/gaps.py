"""GPU idle gaps: the longest stretches between consecutive GPU operations inside each stage.

For every stage instance, its GPU ops (those launched inside the range) are ordered by start;
a gap is where an op starts after every earlier op of the instance has ended. A gap seen from
nested stages (a decode step inside a decode inside a page) is kept once, for the innermost
stage. The ``top_n`` longest gaps of each stage name are reported.
"""

from __future__ import annotations

from typing import Final

import polars as pl

TOP_GAPS: Final = 5

SCHEMA: Final = {
    "stage": pl.String,
    "range_id": pl.UInt32,
    "repeat": pl.Int64,
    "page": pl.Int64,
    "start_ns": pl.Int64,
    "duration_ns": pl.Int64,
}


def idle_gaps(
    instances: pl.DataFrame, op_ranges: pl.LazyFrame, gpu_ops: pl.LazyFrame, top_n: int = TOP_GAPS
) -> pl.DataFrame:
    """The ``top_n`` longest GPU idle gaps per stage name.

    ``instances`` are the stage instances (``range_id``, ``stage``, ``depth``, ``repeat``,
    ``page``, ``start``); ``op_ranges`` the (``op_id``, ``range_id``) attribution pairs;
    ``gpu_ops`` the trace's ops (``op_id``, ``start``, ``end``). ``start_ns`` is relative to the
    first stage instance's start.
    """
    if instances.is_empty():
        return pl.DataFrame(schema=SCHEMA)
    t0 = int(instances["start"].min())  # type: ignore[arg-type]
    inst = instances.lazy().select(
        "range_id", "stage", "depth", pl.col("repeat").cast(pl.Int64), pl.col("page").cast(pl.Int64)
    )
    ops = gpu_ops.select("op_id", "start", "end")
    prev_end = pl.col("end").cum_max().shift(1).over("range_id", order_by="start")
    gaps = (
        op_ranges.join(inst.select("range_id"), on="range_id", how="semi")
        .join(ops, on="op_id")
        .sort("range_id", "start")
        .with_columns(prev_end.alias("_prev"))
        .filter(pl.col("start") > pl.col("_prev"))
        .select("range_id", pl.col("_prev").alias("_gs"), pl.col("start").alias("_ge"))
        .join(inst, on="range_id")
        # one gap seen by nested stages: keep the innermost (deepest) stage
        .sort("depth", descending=True)
        .unique(subset=["_gs", "_ge"], keep="first")
        .with_columns((pl.col("_ge") - pl.col("_gs")).alias("duration_ns"), (pl.col("_gs") - t0).alias("start_ns"))
    )
    rank = pl.col("duration_ns").rank("ordinal", descending=True).over("stage")
    return (
        gaps.filter(rank <= top_n)
        .select("stage", "range_id", "repeat", "page", "start_ns", "duration_ns")
        .sort("duration_ns", "start_ns", descending=[True, False])
        .collect()
        .cast(SCHEMA)  # type: ignore[arg-type]
    )
