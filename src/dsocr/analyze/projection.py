"""NVTX ranges projected onto the GPU, equal to NVIDIA's ``nvtx_gpu_proj_trace``/``_sum``.

A range instance's projection spans from the first start to the last end of the GPU ops
launched inside it (on its thread); instances without GPU ops are dropped; child time is not
subtracted. ``gpu_ops`` counts the launching API calls (NVIDIA counts distinct correlation
ids, so a CUDA graph launch counts once however many kernels it runs). Like NVIDIA's scripts, it projects
kernels, copies and memsets only: whole-graph executions (``--cuda-graph-trace graph``) are left out.
"""

from __future__ import annotations

import polars as pl

from dsocr.analyze.attribution import api_enclosing, trace_range_index
from dsocr.analyze.stats import duration_stats, round1
from dsocr.analyze.sweep import as_int, enclosing
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


def _launches(trace: Trace) -> pl.DataFrame:
    """Per launching API call: first op start ``s`` and last op end ``e``."""
    ops = (
        trace.gpu_ops.filter(pl.col("api_id").is_not_null() & (pl.col("kind") != "graph"))
        .select("api_id", pl.col("start").alias("s"), pl.col("end").alias("e"))
        .collect()
    )
    if ops.height == 0:
        return ops
    # one op per call (no CUDA graphs): the ops are the launches, no group-by needed; the
    # distinct ids are counted by marking them in an array (no hashing)
    marks = pl.zeros(as_int(ops["api_id"].max()) + 1, dtype=pl.UInt8, eager=True)
    if as_int(marks.scatter(ops["api_id"].cast(pl.Int64), 1).sum()) == ops.height:
        return ops
    return ops.lazy().group_by("api_id").agg(pl.col("s").min(), pl.col("e").max()).collect()


def _per_range_from_pairs(pairs: pl.DataFrame, launches: pl.DataFrame) -> pl.DataFrame:
    """Per range of the (``api_id``, ``range_id``) pairs: first start, last end and count of its launches.

    Each pair finds its launch by position (a gather through an ``api_id``-indexed array), not
    by a hash join.
    """
    size = max(as_int(launches["api_id"].max() or 0), as_int(pairs["api_id"].max() or 0)) + 1
    row = pl.int_range(0, launches.height, dtype=pl.UInt32, eager=True)
    at = pl.repeat(None, size, dtype=pl.UInt32, eager=True).scatter(launches["api_id"].cast(pl.Int64), row)
    found = pl.DataFrame({"range_id": pairs["range_id"], "_at": at.gather(pairs["api_id"])}).drop_nulls("_at")
    del at
    found = found.select("range_id").hstack(launches.select("s", "e")[found["_at"]].get_columns())
    return (
        found.lazy()
        .group_by("range_id")
        .agg(
            pl.col("s").min().alias("proj_start"),
            pl.col("e").max().alias("proj_end"),
            pl.len().cast(pl.Int64).alias("gpu_ops"),
        )
        .collect()
    )


def _per_range_tree(trace: Trace, launches: pl.DataFrame) -> pl.DataFrame:
    """Projection per range without (call, range) pairs.

    Each launching call is folded into its innermost range, then every level is folded into
    its parents, deepest level first (min start, max end, sum of counts): on properly nested
    threads a range's ancestors are exactly the other ranges that enclose its calls. Calls on
    threads with partly overlapping ranges come with explicit pairs instead.
    """
    index = trace_range_index(trace)
    enc = api_enclosing(trace)  # every call's, when attribute() ran: reused, not searched again
    if enc is None:
        items = trace.api.select("api_id", "global_tid", "start", "end").join(
            launches.lazy().select("api_id"), on="api_id", how="semi"
        )
        enc = enclosing(index, items.collect(), "api_id")
    srt = index.sorted
    n = srt.height
    call_pos = enc.dense_inner_pos(as_int(launches["api_id"].max() or 0) + 1 if launches.height else 0)
    leaf = (
        launches.lazy()
        .select(pl.col("api_id").map_batches(call_pos.gather, return_dtype=pl.UInt32).alias("pos"), "s", "e")
        .drop_nulls("pos")
        .group_by("pos")
        .agg(pl.col("s").min(), pl.col("e").max(), pl.len().cast(pl.Int64).alias("c"))
        .collect()
    )
    del call_pos
    first = pl.repeat(None, n, dtype=pl.Int64, eager=True).alias("s")
    last = pl.repeat(None, n, dtype=pl.Int64, eager=True).alias("e")
    count = pl.zeros(n, dtype=pl.Int64, eager=True).alias("c")
    if leaf.height:
        at = leaf["pos"].cast(pl.Int64)
        first, last, count = first.scatter(at, leaf["s"]), last.scatter(at, leaf["e"]), count.scatter(at, leaf["c"])
    depth, parent = srt["depth"], srt["parent_pos"]
    positions = pl.int_range(0, n, dtype=pl.Int64, eager=True)
    by_depth = pl.DataFrame({"pos": positions, "depth": depth}).filter(pl.col("depth") > 0).sort("depth")
    bounds = by_depth["depth"]
    for d in range(as_int(bounds.max() or 0), 0, -1):
        lo, hi = bounds.search_sorted(d, side="left"), bounds.search_sorted(d, side="right")
        rows = by_depth["pos"].slice(lo, hi - lo)
        rows = rows.filter(first.gather(rows).is_not_null())
        if not rows.len():
            continue
        up = (
            pl.DataFrame(
                {"p": parent.gather(rows), "s": first.gather(rows), "e": last.gather(rows), "c": count.gather(rows)}
            )
            .group_by("p")
            .agg(pl.col("s").min(), pl.col("e").max(), pl.col("c").sum())
        )
        at = up["p"].cast(pl.Int64)
        merged = pl.DataFrame({"s0": first.gather(at), "e0": last.gather(at), "c0": count.gather(at)}).select(
            pl.min_horizontal("s0", up["s"]).alias("s"),
            pl.max_horizontal("e0", up["e"]).alias("e"),
            (pl.col("c0") + up["c"]).alias("c"),
        )
        first, last, count = (
            first.scatter(at, merged["s"]),
            last.scatter(at, merged["e"]),
            count.scatter(at, merged["c"]),
        )
    found = first.is_not_null()
    laminar = pl.DataFrame(
        {
            "range_id": srt["range_id"].filter(found),
            "proj_start": first.filter(found),
            "proj_end": last.filter(found),
            "gpu_ops": count.filter(found),
        }
    )
    if not enc.slice_pairs.height:
        return laminar
    return pl.concat([laminar, _per_range_from_pairs(enc.slice_pairs, launches)])


def _instances(trace: Trace, pairs: pl.DataFrame | None, columns: tuple[str, ...]) -> pl.LazyFrame:
    launches = _launches(trace)
    per_range_df = _per_range_tree(trace, launches) if pairs is None else _per_range_from_pairs(pairs, launches)
    del launches
    # filter first, so that names are built only for ranges with GPU work
    wanted = trace.ranges.filter(pl.col("range_id").is_in(per_range_df["range_id"].implode()))
    range_cols = [
        c
        for c in ("range_id", "name", "style", "pid", "tid", "start", "end", "depth", "parent_id")
        if c in columns or c in ("range_id", "start", "end", "parent_id")
    ]
    projected = per_range_df.lazy().join(wanted.select(range_cols), on="range_id")
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
        .select(columns)
    )


TRACE_COLUMNS = (
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


def projection_trace(trace: Trace, pairs: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per range instance with GPU work (NVIDIA's ``nvtx_gpu_proj_trace``).

    Columns: :data:`TRACE_COLUMNS`: ``start``, ``end`` and ``range_ns`` are the CPU range,
    ``gpu_ops`` counts launching API calls, ``children`` the direct children that have GPU
    work; ordered by projected start (then longest first, then ``range_id``). Without ``pairs``
    it folds launches up the range tree (least memory); ``pairs`` may pass precomputed
    ``(api_id, range_id)`` pairs (e.g. ``Attribution.api_ranges``).
    """
    return (
        _instances(trace, pairs, TRACE_COLUMNS)
        .sort(["proj_start", "proj_ns", "range_id"], descending=[False, True, False])
        .collect()
    )


def projection_summary(
    trace: Trace, instances: pl.DataFrame | None = None, *, pairs: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Per (range name, style), NVIDIA's ``nvtx_gpu_proj_sum`` (columns: :data:`SUMMARY_COLUMNS`).

    ``instances`` may pass :func:`projection_trace`'s result; without it only the columns the
    summary needs are built (much less memory with millions of ranges). Sorted by total
    projected time, longest first (then name, style).
    """
    lean = ("name", "style", "range_ns", "proj_ns", "gpu_ops", "depth", "children")
    frame = _instances(trace, pairs, lean) if instances is None else instances.lazy()
    return (
        frame.group_by("name", "style")
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
        .collect()
    )
