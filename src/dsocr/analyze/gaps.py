"""GPU idle gaps: the longest stretches between consecutive GPU operations inside each stage.

For every stage instance, its GPU ops (those launched inside the range) are ordered by start;
a gap is where an op starts after every earlier op of the instance has ended. A gap seen from
nested stages (a decode step inside a decode inside a page) is kept once, for the innermost
stage. The ``top_n`` longest gaps of each stage name are reported.
"""

from __future__ import annotations

from typing import Final

import polars as pl

from dsocr.analyze.stages import BUSY_CHUNK_ROWS, ONE_PASS_PAIRS, take_by_id
from dsocr.analyze.sweep import as_int

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

    One sort per nesting depth, no per-instance windows: each instance's ops are shifted into a
    time band of their own (``band * span``), so the running maximum of the ends never mixes
    instances. Within one depth the instances hardly overlap, so a pass holds about one row
    per op.
    """
    if instances.is_empty():
        return pl.DataFrame(schema=SCHEMA)
    t0 = int(instances["start"].min())  # type: ignore[arg-type]
    inst = instances.select(
        "range_id", "stage", "depth", pl.col("repeat").cast(pl.Int64), pl.col("page").cast(pl.Int64)
    )
    ops = gpu_ops.select("op_id", "start", "end").collect()
    if ops.height == 0:
        return pl.DataFrame(schema=SCHEMA)
    lo = int(ops["start"].min())  # type: ignore[arg-type]
    span = int(ops["end"].max()) - lo + 1  # type: ignore[arg-type]
    per_pass = max(1, ((1 << 62) // span) - 1)  # bands per pass without overflowing i64
    pairs = op_ranges.select("op_id", "range_id")
    ids = inst.select("range_id", "depth")
    # deepest level first: a gap also seen by a deeper instance belongs to that one (the
    # innermost stage); each level keeps only its ``top_n`` longest per instance (a superset
    # of the longest per stage)
    seen: list[pl.DataFrame] = []
    kept: list[pl.DataFrame] = []
    # a small trace finds the gaps of all depths in one pass (an instance's gaps do not depend
    # on the other instances), then takes them depth by depth
    everything = None
    if ids.height <= per_pass and as_int(pairs.select(pl.len()).collect().item()) <= ONE_PASS_PAIRS:
        everything = _gaps_of(ids.sort("range_id").select("range_id").with_row_index("_band"), pairs, ops, lo, span)
    # else the instances of a depth go in chunks of consecutive range ids, each with at most ``per_pass``
    # instances and about BUSY_CHUNK_ROWS ops (the sort's copies stay small), in range id order as one pass
    counts = None if everything is not None else pairs.group_by("range_id").len().collect()
    for depth in sorted(ids["depth"].unique().to_list(), reverse=True):
        level = ids.filter(pl.col("depth") == depth).sort("range_id")
        if everything is not None:
            found = everything.filter(pl.col("range_id").is_in(level["range_id"].implode()))
        else:
            assert counts is not None
            found = pl.concat(
                [
                    _gaps_of(chunk.select("range_id").with_row_index("_band"), pairs, ops, lo, span)
                    for chunk in _chunks(level, counts, per_pass)
                ]
            )
        kept.append(_longest_unseen(found, seen, top_n).with_columns((pl.col("_gs") - t0).alias("start_ns")))
        seen.append(found.select("_gs", "_ge"))
    del seen, everything
    gaps = (
        pl.concat(kept)
        .lazy()
        .join(inst.lazy().drop("depth"), on="range_id")
        .sort("duration_ns", "start_ns", descending=[True, False])
    )
    # the longest first; equally long ones: the earliest first
    return (
        gaps.filter(pl.int_range(pl.len()).over("stage") < top_n)
        .select("stage", "range_id", "repeat", "page", "start_ns", "duration_ns")
        .sort("duration_ns", "start_ns", descending=[True, False])
        .collect()
        .cast(SCHEMA)  # type: ignore[arg-type]
    )


def _chunks(level: pl.DataFrame, counts: pl.DataFrame, per_pass: int) -> list[pl.DataFrame]:
    """``level`` (instances sorted by ``range_id``) in consecutive chunks of at most ``per_pass`` instances and
    about :data:`BUSY_CHUNK_ROWS` ops (``counts``: ``range_id``, ``len``; an instance is never split)."""
    ops = level.join(counts, on="range_id", how="left", maintain_order="left")["len"].fill_null(0).cast(pl.Int64)
    by_ops = (ops.cum_sum() - 1).clip(lower_bound=0) // BUSY_CHUNK_ROWS
    by_count = pl.int_range(level.height, dtype=pl.Int64, eager=True) // per_pass
    # a new chunk wherever either numbering moves on
    chunk = ((by_ops != by_ops.shift(1)) | (by_count != by_count.shift(1))).fill_null(False).cum_sum()
    return level.with_columns(chunk.alias("_chunk")).partition_by("_chunk", maintain_order=True, include_key=False)


def _gaps_of(bands: pl.DataFrame, pairs: pl.LazyFrame, ops: pl.DataFrame, lo: int, span: int) -> pl.DataFrame:
    """The gaps (``range_id``, ``_gs``, ``_ge``) of the instances in ``bands`` (``_band``, ``range_id``)."""
    mine = pairs.join(bands.lazy(), on="range_id").select("op_id", "_band")
    rows = take_by_id(mine, "op_id", ops.lazy())
    base = pl.col("_band").cast(pl.Int64) * span
    shifted = rows.select("_band", (base + pl.col("start") - lo).alias("_s"), (base + pl.col("end") - lo).alias("_e"))
    del rows
    ordered = shifted.sort("_s")
    del shifted
    prev = pl.col("_e").cum_max().shift(1)
    band_base = pl.col("_band").cast(pl.Int64) * span
    return (
        ordered.lazy()
        .with_columns(prev.alias("_prev"))
        # an op starting after every earlier op of its instance (the first op of a band has none)
        .filter((pl.col("_s") > pl.col("_prev")) & (pl.col("_prev") >= band_base))
        .select(
            "_band",
            (pl.col("_prev") - band_base + lo).alias("_gs"),
            (pl.col("_s") - band_base + lo).alias("_ge"),
        )
        .join(bands.lazy(), on="_band")
        .select("range_id", "_gs", "_ge")
        .collect()
    )


def _longest_unseen(found: pl.DataFrame, seen: list[pl.DataFrame], top_n: int) -> pl.DataFrame:
    """The ``top_n`` longest gaps per ``range_id`` of ``found`` that no deeper instance has.

    On big traces (more than :data:`BUSY_CHUNK_ROWS` gaps) the deeper gaps are matched window by window
    of start time, each window keeping only the gaps that can be among the ``top_n`` longest of their
    instance (a superset: a gap among the longest overall is among the longest of its window), in
    ``found``'s order; the result is the same as in one pass, without a set of all deeper gaps at once.
    """
    if seen and found.height > BUSY_CHUNK_ROWS:
        found = _unseen_candidates(found, pl.concat(seen, rechunk=False), top_n)
    elif seen:
        # an is_in over (start, end) structs: cheaper here than an anti join on two columns
        deeper = pl.concat(seen, rechunk=False).select(pl.struct("_gs", "_ge").implode()).to_series()
        found = found.filter(~pl.struct("_gs", "_ge").is_in(deeper))
    lf = found.lazy()
    return (
        lf.with_columns((pl.col("_ge") - pl.col("_gs")).alias("duration_ns"))
        # at least as long as the instance's top_n-th longest (ties kept): a cheap window, not a rank
        .filter(pl.col("duration_ns") >= pl.col("duration_ns").top_k(top_n).min().over("range_id"))
        .unique(subset=["_gs", "_ge"], keep="first", maintain_order=True)
        .sort("duration_ns", "_gs", descending=[True, False])
        .filter(pl.int_range(pl.len()).over("range_id") < top_n)
        .select("range_id", "_gs", "duration_ns")
        .collect()
    )


def _unseen_candidates(found: pl.DataFrame, deeper: pl.DataFrame, top_n: int) -> pl.DataFrame:
    """The gaps of ``found`` not in ``deeper`` that may be among the ``top_n`` longest of their instance, in
    ``found``'s order, matched in windows of start time of about :data:`BUSY_CHUNK_ROWS` gaps."""
    windows = -(-found.height // BUSY_CHUNK_ROWS)
    quantiles = [found["_gs"].quantile(k / windows, "lower") for k in range(1, windows)]
    edges = sorted({as_int(q) for q in quantiles if q is not None})
    bounds = list(zip([None, *edges], [*edges, None], strict=True))
    numbered = found.with_row_index("_row")
    kept = []
    for lo, hi in bounds:
        inside = pl.lit(True)
        if lo is not None:
            inside = inside & (pl.col("_gs") >= lo)
        if hi is not None:
            inside = inside & (pl.col("_gs") < hi)
        part = numbered.filter(inside)
        keys = deeper.filter(inside).select(pl.struct("_gs", "_ge").implode()).to_series()
        duration = pl.col("_ge") - pl.col("_gs")
        kept.append(
            part.filter(~pl.struct("_gs", "_ge").is_in(keys)).filter(
                duration >= duration.top_k(top_n).min().over("range_id")
            )
        )
    return pl.concat(kept).sort("_row").drop("_row")
