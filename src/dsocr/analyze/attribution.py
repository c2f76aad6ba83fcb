"""Which NVTX ranges enclose each API call and each GPU operation (NVIDIA's projection rule).

A range encloses an API call when both are on the same thread, ``range.start <= api.start``
and ``range.end >= api.end``, and the range ended on the thread that started it; a GPU
operation belongs to every range enclosing its launching API call (the whole stack, not only
the innermost range). Computed by a sorted per-thread sweep (:mod:`dsocr.analyze.sweep`),
never an interval cross join; start/end ranges that do not nest are handled exactly too.
"""

from __future__ import annotations

import attrs
import polars as pl

from dsocr.analyze.sweep import Enclosing, RangeIndex, enclosing, expand, make_timekey, range_index
from dsocr.analyze.trace import Trace


@attrs.frozen
class Attribution:
    """Long frames of (thing, enclosing range) pairs.

    ``api_ranges``: ``api_id``, ``range_id`` (every enclosing range of every API call).
    ``op_ranges``: ``op_id``, ``range_id`` (every enclosing range of every GPU op's launch).
    ``op_innermost``: ``op_id``, ``range_id`` (the deepest enclosing range; ops outside every
    range, or without a recorded API call, are absent).
    ``api_innermost``: ``api_id``, ``range_id`` (the same for API calls).
    The two API frames are properties built from the compact ``api_enclosing`` on each use.
    """

    op_ranges: pl.DataFrame
    op_innermost: pl.DataFrame
    #: The API calls' enclosing ranges, compact (the long frames are built on each use).
    api_enclosing: Enclosing = attrs.field(repr=False)

    @property
    def api_ranges(self) -> pl.DataFrame:
        """``api_id``, ``range_id``: every enclosing range of every API call (built anew on each use)."""
        return self.api_enclosing.pairs

    @property
    def api_innermost(self) -> pl.DataFrame:
        """``api_id``, ``range_id``: each API call's deepest enclosing range."""
        return self.api_enclosing.innermost


def trace_range_index(trace: Trace) -> RangeIndex:
    """The sorted, nested ranges of ``trace`` (those that ended on their own thread), cached on the trace."""
    if trace.index.ranges is not None:
        return trace.index.ranges
    ranges, api = pl.collect_all(
        [
            trace.ranges.filter(pl.col("ended_on_start_thread")).select("range_id", "global_tid", "start", "end"),
            trace.api.select("global_tid", "start", "end"),
        ]
    )
    index = range_index(ranges, make_timekey([ranges.select("global_tid", "start", "end"), api], threads_of=0))
    trace.index.ranges = index
    return index


def api_enclosing(trace: Trace) -> Enclosing | None:
    """The enclosing ranges of every API call, if :func:`attribute` already found them for ``trace``."""
    enc = trace.index.api_enclosing
    return enc if enc is not None and enc.index is trace_range_index(trace) else None


def _api_items(trace: Trace, only_launching: bool) -> pl.DataFrame:
    api = trace.api.select("api_id", "global_tid", "start", "end")
    if only_launching:
        launching = trace.gpu_ops.select("api_id").drop_nulls().unique()
        api = api.join(launching, on="api_id", how="semi")
    return api.collect()


def attribute(trace: Trace, *, only_launching: bool = False) -> Attribution:
    """Attribute every API call and GPU operation to its enclosing NVTX ranges.

    With ``only_launching`` only API calls that launched a GPU operation are attributed (all
    that the GPU projection needs; cheaper on traces with many other API calls).
    """
    index = trace_range_index(trace)
    enc = enclosing(index, _api_items(trace, only_launching), "api_id")
    if not only_launching:
        trace.index.api_enclosing = enc
    ops, n_api = pl.collect_all(
        [trace.gpu_ops.select("op_id", "api_id").drop_nulls("api_id"), trace.api.select(pl.len())]
    )
    op_pos = enc.dense_inner_pos(n_api.item()).gather(ops["api_id"])
    found = op_pos.is_not_null()
    op_ranges = pl.concat(
        [
            expand(index, ops["op_id"], op_pos, "op_id"),
            ops.join(enc.slice_pairs, on="api_id").select("op_id", "range_id"),
        ],
        rechunk=False,
    )
    op_innermost = pl.concat(
        [
            pl.DataFrame(
                {"op_id": ops["op_id"].filter(found), "range_id": index.sorted["range_id"].gather(op_pos.filter(found))}
            ),
            ops.join(enc.slice_innermost, on="api_id").select("op_id", "range_id"),
        ],
        rechunk=False,
    )
    return Attribution(
        op_ranges=op_ranges,
        op_innermost=op_innermost,
        api_enclosing=enc,
    )
