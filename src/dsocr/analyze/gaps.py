"""GPU idle gaps: the longest stretches between consecutive GPU operations inside each stage.

For every stage instance, its GPU ops (those launched inside the range) are ordered by start;
a gap is where an op starts after every earlier op of the instance has ended. A gap seen from
nested stages (a decode step inside a decode inside a page) is kept once, for the innermost
stage. The ``top_n`` longest gaps of each stage name are reported.
"""

from __future__ import annotations

from typing import Final

import polars as pl

from dsocr.analyze.stages import take_by_id

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

    One global sort, no per-instance windows: each instance's ops are shifted into a time band
    of their own (``band * span``), so the running maximum of the ends never mixes instances.
    """
    if instances.is_empty():
        return pl.DataFrame(schema=SCHEMA)
    t0 = int(instances["start"].min())  # type: ignore[arg-type]
    inst = (
        instances.lazy()
        .select("range_id", "stage", "depth", pl.col("repeat").cast(pl.Int64), pl.col("page").cast(pl.Int64))
        .with_row_index("_band")
        .collect()
    )
    pairs = op_ranges.select("op_id", "range_id").join(inst.lazy().select("range_id", "_band"), on="range_id")
    rows = take_by_id(pairs.select("op_id", "_band"), "op_id", gpu_ops.select("op_id", "start", "end")).drop("op_id")
    if rows.height == 0:
        return pl.DataFrame(schema=SCHEMA)
    lo = int(rows["start"].min())  # type: ignore[arg-type]
    span = int(rows["end"].max()) - lo + 1  # type: ignore[arg-type]
    base = pl.col("_band").cast(pl.Int64) * span
    prev = pl.col("_e").cum_max().shift(1)
    found = (
        rows.lazy()
        .select(
            "_band",
            base.alias("_base"),
            (base + pl.col("start") - lo).alias("_s"),
            (base + pl.col("end") - lo).alias("_e"),
        )
        .sort("_s")
        .with_columns(prev.alias("_prev"))
        # an op starting after every earlier op of its instance (the first op of a band has none)
        .filter((pl.col("_s") > pl.col("_prev")) & (pl.col("_prev") >= pl.col("_base")))
        .select(
            "_band",
            (pl.col("_prev") - pl.col("_base") + lo).alias("_gs"),
            (pl.col("_s") - pl.col("_base") + lo).alias("_ge"),
        )
        .collect()
    )
    del rows
    depth = inst.lazy().select("_band", "depth")
    # one gap seen by nested stages: keep the innermost (deepest) stage; then the longest
    # ``top_n`` per instance (a superset of the longest per stage) before the names join in
    gaps = (
        found.lazy()
        .join(depth, on="_band")
        .sort("depth", descending=True)
        .unique(subset=["_gs", "_ge"], keep="first")
        .with_columns((pl.col("_ge") - pl.col("_gs")).alias("duration_ns"), (pl.col("_gs") - t0).alias("start_ns"))
        .sort("duration_ns", "start_ns", descending=[True, False])
        .filter(pl.int_range(pl.len()).over("_band") < top_n)
        .join(inst.lazy().drop("depth"), on="_band", maintain_order="left")
    )
    # the longest first; equally long ones: the earliest first
    return (
        gaps.filter(pl.int_range(pl.len()).over("stage") < top_n)
        .select("stage", "range_id", "repeat", "page", "start_ns", "duration_ns")
        .sort("duration_ns", "start_ns", descending=[True, False])
        .collect()
        .cast(SCHEMA)  # type: ignore[arg-type]
    )
