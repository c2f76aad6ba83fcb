"""Interval containment per thread without an interval cross join.

Every item (range or API call) gets a sort key ``thread_rank * span + (time - t0)``, so that
one sorted array holds every thread's items in time order, threads one after the other. The
items that start inside an enclosing interval ``[start, end]`` of the same thread are then a
contiguous slice of that array, found with two binary searches; the pairs are that slice
exploded and filtered on ``item.end <= outer.end``. The work is proportional to the number of
(enclosing, enclosed) pairs, i.e. to the answer, plus the rare items that start inside an
interval and end after it.
"""

from __future__ import annotations

from typing import SupportsInt, cast

import attrs
import polars as pl

from dsocr.contract.errors import BadInput

_MAX_KEY = 1 << 62


def as_int(value: object) -> int:
    """A polars scalar (``Series.min()`` and the like) as a Python int."""
    return int(cast(SupportsInt, value))


@attrs.frozen
class TimeKey:
    """The (thread, time) -> sortable int64 mapping shared by the frames being joined."""

    threads: pl.DataFrame  #: global_tid (i64) -> thread_rank (i64)
    t0: int
    span: int

    def add_rank(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` with a ``thread_rank`` column (inner join: unknown threads drop out)."""
        return frame.join(self.threads, on="global_tid", how="inner")

    def key(self, column: str) -> pl.Expr:
        """The sort key of ``column`` (a time) on the row's thread."""
        return pl.col("thread_rank") * self.span + (pl.col(column) - self.t0)


def make_timekey(frames: list[pl.DataFrame]) -> TimeKey:
    """A key covering every thread and every ``start``/``end`` of ``frames``."""
    gtids = pl.concat([f.select("global_tid") for f in frames]).unique().sort("global_tid")
    threads = gtids.with_row_index("thread_rank").select(pl.col("global_tid"), pl.col("thread_rank").cast(pl.Int64))
    lows = [f["start"].min() for f in frames if f.height]
    highs = [f["end"].max() for f in frames if f.height]
    t0 = min((as_int(v) for v in lows if v is not None), default=0)
    t1 = max((as_int(v) for v in highs if v is not None), default=0)
    span = max(t1 - t0, 0) + 1
    if threads.height * span >= _MAX_KEY:
        raise BadInput(
            f"trace spans {span} ns on {threads.height} threads: too large for dsocr's 63-bit sort key; "
            "export a shorter time range (nsys export --times)"
        )
    return TimeKey(threads=threads, t0=t0, span=span)


def contained(
    outer: pl.DataFrame,
    inner: pl.DataFrame,
    tk: TimeKey,
    *,
    outer_id: str,
    inner_id: str,
) -> pl.DataFrame:
    """Pairs ``(outer_id, inner_id)`` with same thread, outer.start <= inner.start, inner.end <= outer.end.

    ``outer`` and ``inner`` have ``global_tid``, ``start``, ``end`` and their id column.
    """
    inner_sorted = (
        tk.add_rank(inner.select(inner_id, "global_tid", "start", "end"))
        .with_columns(tk.key("start").alias("_key"))
        .sort("_key")
    )
    outer_k = tk.add_rank(outer.select(outer_id, "global_tid", "start", "end")).with_columns(
        tk.key("start").alias("_lo_key"), tk.key("end").alias("_hi_key")
    )
    keys = inner_sorted["_key"]
    lo = keys.search_sorted(outer_k["_lo_key"], side="left")
    hi = keys.search_sorted(outer_k["_hi_key"], side="right")
    return _explode_slices(outer_k, inner_sorted, lo, hi, outer_id=outer_id, inner_id=inner_id)


def _explode_slices(
    outer_k: pl.DataFrame,
    inner_sorted: pl.DataFrame,
    lo: pl.Series,
    hi: pl.Series,
    *,
    outer_id: str,
    inner_id: str,
) -> pl.DataFrame:
    slices = (
        outer_k.select(outer_id, pl.col("end").alias("_outer_end"))
        .with_columns(lo.alias("_lo").cast(pl.Int64), hi.alias("_hi").cast(pl.Int64))
        .filter(pl.col("_hi") > pl.col("_lo"))
        .select(outer_id, "_outer_end", pl.int_ranges("_lo", "_hi").alias("_pos"))
        .explode("_pos")
    )
    pos = slices["_pos"]
    picked = inner_sorted.select(
        pl.col(inner_id).gather(pos),
        pl.col("end").gather(pos).alias("_inner_end"),
    )
    return (
        pl.concat([slices.select(outer_id, "_outer_end"), picked], how="horizontal")
        .filter(pl.col("_inner_end") <= pl.col("_outer_end"))
        .select(outer_id, inner_id)
    )


def nesting(ranges: pl.DataFrame, tk: TimeKey) -> pl.DataFrame:
    """``range_id``, ``depth`` (u32) and ``parent_id`` (u32) of ``ranges`` on their own threads.

    A range encloses another on the same thread when it starts no later and ends no earlier
    (NVIDIA's rule); identical intervals nest in ``range_id`` order. ``depth`` counts the
    enclosing ranges; ``parent_id`` is the tightest one (least ``(c.start - p.start) +
    (p.end - c.end)``, as NVIDIA's ``nvtx_gpu_proj_trace`` picks it; for properly nested
    ranges that is the innermost enclosing range).
    """
    srt = (
        tk.add_rank(ranges.select("range_id", "global_tid", "start", "end"))
        .with_columns(tk.key("start").alias("_key"), tk.key("end").alias("_hi_key"))
        .sort(["_key", "end", "range_id"], descending=[False, True, False])
        .with_row_index("_pos")
    )
    lo = (srt["_pos"].cast(pl.Int64) + 1).alias("_lo")
    hi = srt["_key"].search_sorted(srt["_hi_key"], side="right")
    pairs = _explode_slices(
        srt.select(pl.col("range_id").alias("parent"), "end"),
        srt.select("range_id", "end"),
        lo,
        hi,
        outer_id="parent",
        inner_id="range_id",
    )
    bounds = srt.select("range_id", "start", "end", "_pos")
    scored = (
        pairs.join(
            bounds.rename({"range_id": "parent", "start": "p_start", "end": "p_end", "_pos": "p_pos"}), on="parent"
        )
        .join(bounds.select("range_id", "start", "end"), on="range_id")
        .with_columns(
            ((pl.col("start") - pl.col("p_start")) + (pl.col("p_end") - pl.col("end"))).alias("_slack"),
        )
    )
    tree = scored.group_by("range_id").agg(
        pl.len().cast(pl.UInt32).alias("depth"),
        pl.col("parent")
        .sort_by(["_slack", "p_pos"], descending=[False, True])
        .first()
        .cast(pl.UInt32)
        .alias("parent_id"),
    )
    return ranges.select("range_id").join(tree, on="range_id", how="left").with_columns(pl.col("depth").fill_null(0))
