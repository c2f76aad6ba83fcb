"""Interval containment per thread without an interval cross join.

Every range and API call gets a sort key ``thread_rank * span + (time - t0)``, so one sorted
array holds every thread's ranges in time order, threads one after the other.

* **Nesting** (:func:`range_index`): the ranges that start inside a range ``p`` are a contiguous
  slice of that array (two binary searches); exploding the slices and keeping those that also
  end inside ``p`` gives every (ancestor, descendant) pair, so depth and parent come out exactly,
  at a cost proportional to the sum of depths.
* **Enclosing ranges of API calls** (:func:`enclosing`): on a thread whose ranges nest properly
  (laminar: no two ranges partly overlap, always true for push/pop ranges), the innermost range
  around a call is found from the last range starting before it by walking up parents, and the
  others are its ancestors: a few vectorized gathers per nesting level. On a thread with
  partly overlapping start/end ranges, the exact slice method is used instead: the calls that
  start inside a range are a contiguous slice of the calls sorted the same way.
"""

from __future__ import annotations

from typing import SupportsInt, cast

import attrs
import polars as pl

from dsocr.contract.errors import BadInput

_MAX_KEY = 1 << 62
I64 = pl.Int64


def as_int(value: object) -> int:
    """A polars scalar (``Series.min()`` and the like) as a Python int."""
    return int(cast(SupportsInt, value))


@attrs.frozen
class TimeKey:
    """The (thread, time) -> sortable int64 mapping shared by the frames being compared."""

    threads: pl.DataFrame  #: global_tid (i64) -> thread_rank (i64)
    t0: int
    span: int

    def add_rank(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` with a ``thread_rank`` column; rows of other threads drop out."""
        rank = pl.col("global_tid").replace_strict(
            self.threads["global_tid"], self.threads["thread_rank"], default=None, return_dtype=I64
        )
        return (
            frame.lazy().with_columns(rank.alias("thread_rank")).filter(pl.col("thread_rank").is_not_null()).collect()
        )

    def key(self, column: str) -> pl.Expr:
        """The sort key of ``column`` (a time) on the row's thread."""
        return pl.col("thread_rank") * self.span + (pl.col(column) - self.t0)


def make_timekey(frames: list[pl.DataFrame], *, threads_of: int | None = None) -> TimeKey:
    """A key covering every ``start``/``end`` of ``frames``; threads of ``frames[threads_of]`` (all if None)."""
    thread_frames = frames if threads_of is None else [frames[threads_of]]
    gtids = pl.concat([f.select("global_tid") for f in thread_frames]).unique().sort("global_tid")
    threads = gtids.with_row_index("thread_rank").select(pl.col("global_tid"), pl.col("thread_rank").cast(I64))
    lows = [f["start"].min() for f in frames if f.height]
    highs = [f["end"].max() for f in frames if f.height]
    t0 = min((as_int(v) for v in lows if v is not None), default=0)
    t1 = max((as_int(v) for v in highs if v is not None), default=0)
    span = max(t1 - t0, 0) + 1
    if max(threads.height, 1) * span >= _MAX_KEY:
        raise BadInput(
            f"trace spans {span} ns on {threads.height} threads: too large for dsocr's 63-bit sort key; "
            "export a shorter time range (nsys export --times)"
        )
    return TimeKey(threads=threads, t0=t0, span=span)


def _slice_pairs(
    outer_pos: pl.Series, outer_end: pl.Series, lo: pl.Series, hi: pl.Series, inner_end: pl.Series
) -> pl.DataFrame:
    """Pairs (outer position, inner position) for inner in [lo, hi) with inner_end <= outer_end."""
    slices = (
        pl.DataFrame({"o": outer_pos, "oe": outer_end, "lo": lo.cast(I64), "hi": hi.cast(I64)})
        .filter(pl.col("hi") > pl.col("lo"))
        .select("o", "oe", pl.int_ranges("lo", "hi").alias("i"))
        .explode("i")
    )
    return (
        slices.with_columns(inner_end.gather(slices["i"]).alias("ie"))
        .filter(pl.col("ie") <= pl.col("oe"))
        .select("o", "i")
    )


@attrs.frozen
class RangeIndex:
    """Ranges sorted per thread (``pos`` order) with their nesting.

    ``sorted`` columns: ``range_id``, ``thread_rank``, ``start``, ``end``, ``key`` (of start),
    ``depth`` (u32), ``parent_pos`` (u32 position of the parent, null at depth 0). ``laminar``
    holds the ``thread_rank`` of threads whose ranges nest properly.
    """

    tk: TimeKey
    sorted: pl.DataFrame
    laminar: pl.Series


def range_index(ranges: pl.DataFrame, tk: TimeKey) -> RangeIndex:
    """Sort ``ranges`` (``range_id``, ``global_tid``, ``start``, ``end``) and compute their nesting.

    A range encloses another on the same thread when it starts no later and ends no earlier
    (NVIDIA's rule); identical intervals nest in ``range_id`` order. ``depth`` counts the
    enclosing ranges; the parent is the enclosing range that starts last (for properly nested
    ranges: the innermost one, which is also the tightest, as NVIDIA picks it).

    Properly nested threads need no pairs: a range's depth is the number of ranges still open
    at its start (binary searches) and its parent the last earlier range one level up (one
    more binary search). A thread where some parent found that way does not enclose its child
    has partly overlapping (or end-to-start touching) ranges; there every (ancestor,
    descendant) pair is enumerated instead, which is exact but costs memory in proportion.
    """
    ranked = tk.add_rank(ranges.select("range_id", "global_tid", "start", "end")).drop("global_tid")
    order = ranked.select(
        pl.arg_sort_by([tk.key("start"), pl.col("end"), pl.col("range_id")], descending=[False, True, False])
    ).to_series()
    srt = ranked.select(pl.all().gather(order))
    del ranked, order
    srt = srt.with_columns(tk.key("start").alias("key"))
    n = srt.height
    pos = pl.int_range(0, n, dtype=I64, eager=True)
    depth = _open_at_start(srt, tk, pos)
    srt = srt.with_columns(depth.cast(pl.UInt32).alias("depth"))
    child, found = _level_up(srt["thread_rank"], depth, pos)
    del pos
    ends = srt["end"]
    ok = found.is_not_null() & (ends.gather(found) >= ends.gather(child))
    bad = srt["thread_rank"].gather(child.filter(~ok.fill_null(False))).unique()
    parent = pl.repeat(None, n, dtype=pl.UInt32, eager=True).alias("parent_pos")
    if child.len():
        parent = parent.scatter(child, found.cast(pl.UInt32))
    del child, found, ok
    srt = srt.with_columns(parent)
    if bad.len():
        srt = _exact_nesting(srt, bad, tk)
    threads = srt["thread_rank"].unique()
    return RangeIndex(tk=tk, sorted=srt, laminar=threads.filter(~threads.is_in(bad.implode())))


def _open_at_start(srt: pl.DataFrame, tk: TimeKey, pos: pl.Series) -> pl.Series:
    """For each range (sorted), the ranges of its thread started before it and not ended before its start."""
    keys = srt["key"]
    thread_base = srt["thread_rank"] * tk.span
    started_before = pos - keys.search_sorted(thread_base, side="left").cast(I64)
    ends_sorted = srt.select(tk.key("end").sort()).to_series()
    ended_on_earlier_threads = ends_sorted.search_sorted(thread_base, side="left").cast(I64)
    del thread_base
    ended_before = ends_sorted.search_sorted(keys, side="left").cast(I64) - ended_on_earlier_threads
    return started_before - ended_before


def _level_up(thread_rank: pl.Series, depth: pl.Series, pos: pl.Series) -> tuple[pl.Series, pl.Series]:
    """For each range with depth > 0: its position and the last earlier range of its thread one level up.

    One binary search on (thread, depth, position) folded into an int64.
    """
    n = pos.len()
    levels = as_int(depth.max() or 0) + 2
    level_key = (thread_rank * levels + depth) * (n + 1) + pos
    order = level_key.arg_sort()
    sorted_keys = level_key.gather(order)
    del level_key
    has_parent = depth > 0
    child = pos.filter(has_parent)
    want = (thread_rank.filter(has_parent) * levels + depth.filter(has_parent) - 1) * (n + 1) + child
    at = sorted_keys.search_sorted(want, side="left").cast(I64) - 1
    same_group = (at >= 0) & (sorted_keys.gather(at.clip(0, None)) // (n + 1) == want // (n + 1))
    return child, order.gather(at.set(~same_group, None)).cast(I64)


def _exact_nesting(srt: pl.DataFrame, threads: pl.Series, tk: TimeKey) -> pl.DataFrame:
    """Depth and parent by enumerating (ancestor, descendant) pairs, on ``threads`` only."""
    sel = srt["thread_rank"].is_in(threads.implode())
    sub_pos = pl.int_range(0, srt.height, dtype=I64, eager=True).filter(sel)
    end_keys = srt.filter(sel).select(tk.key("end")).to_series()
    hi = srt["key"].search_sorted(end_keys, side="right")
    pairs = _slice_pairs(sub_pos, srt["end"].filter(sel), sub_pos + 1, hi, srt["end"])
    tree = pairs.group_by("i").agg(pl.len().cast(pl.UInt32).alias("depth"), pl.col("o").max().alias("parent_pos"))
    depth = srt["depth"].scatter(sub_pos, 0)
    parent = srt["parent_pos"].scatter(sub_pos, None)
    if tree.height:
        depth = depth.scatter(tree["i"], tree["depth"])
        parent = parent.scatter(tree["i"], tree["parent_pos"].cast(pl.UInt32))
    return srt.with_columns(depth, parent)


def nesting(ranges: pl.DataFrame, tk: TimeKey) -> pl.DataFrame:
    """``range_id``, ``depth`` (u32) and ``parent_id`` (u32) of ``ranges`` (see :func:`range_index`)."""
    idx = range_index(ranges, tk).sorted
    parent_id = idx["range_id"].gather(idx["parent_pos"]).alias("parent_id").cast(pl.UInt32)
    return idx.select("range_id", "depth").with_columns(parent_id)


@attrs.frozen
class Enclosing:
    """The ranges enclosing each item.

    Items on properly nested threads are described by ``ids`` and ``inner_pos`` (position in
    ``index.sorted`` of the innermost enclosing range; the others are its ancestors); items on
    other threads by explicit ``slice_pairs`` and ``slice_innermost`` (``id``, ``range_id``).
    ``row_ids`` holds the ids, or is None when they are exactly ``0..n-1`` (every item, in
    order: the common case, kept without an array).
    """

    index: RangeIndex
    id_col: str
    row_ids: pl.Series | None
    inner_pos: pl.Series
    slice_pairs: pl.DataFrame
    slice_innermost: pl.DataFrame
    id_dtype: pl.DataType

    @property
    def ids(self) -> pl.Series:
        """The id of each item of ``inner_pos``."""
        if self.row_ids is not None:
            return self.row_ids
        return pl.int_range(self.inner_pos.len(), dtype=pl.UInt32, eager=True).cast(self.id_dtype).alias(self.id_col)

    @property
    def pairs(self) -> pl.DataFrame:
        """(id, ``range_id``) for every enclosing range."""
        return pl.concat([expand(self.index, self.ids, self.inner_pos, self.id_col), self.slice_pairs], rechunk=False)

    @property
    def innermost(self) -> pl.DataFrame:
        """(id, ``range_id``) of the innermost enclosing range; items outside every range are absent."""
        found = self.inner_pos.is_not_null()
        laminar = pl.DataFrame(
            {
                self.id_col: self.ids.filter(found),
                "range_id": self.index.sorted["range_id"].gather(self.inner_pos.filter(found)),
            }
        )
        return pl.concat([laminar, self.slice_innermost], rechunk=False)

    def dense_inner_pos(self, size: int) -> pl.Series:
        """``inner_pos`` at each id below ``size`` (ids are distinct row numbers; null where an id has none)."""
        n = self.inner_pos.len()
        if self.row_ids is None:  # every id 0..n-1 once, in order: already dense
            dense = self.inner_pos.head(size).rename("inner_pos")
            missing = pl.repeat(None, max(size - n, 0), dtype=pl.UInt32, eager=True).alias("inner_pos")
            return pl.concat([dense, missing]) if missing.len() else dense
        ids = self.row_ids
        out = pl.repeat(None, size, dtype=pl.UInt32, eager=True).alias("inner_pos")
        found = self.inner_pos.is_not_null() & (ids < size)
        return out.scatter(ids.filter(found).cast(I64), self.inner_pos.filter(found)) if found.any() else out


def expand(index: RangeIndex, ids: pl.Series, inner_pos: pl.Series, id_col: str) -> pl.DataFrame:
    """(id, ``range_id``) for the range at ``inner_pos`` and all its ancestors (one gather per level)."""
    range_ids, parent = index.sorted["range_id"], index.sorted["parent_pos"]
    found = inner_pos.is_not_null()
    item_ids, level = ids.filter(found), inner_pos.filter(found)
    levels = []
    while level.len():
        levels.append(pl.DataFrame({id_col: item_ids, "range_id": range_ids.gather(level)}))
        up = parent.gather(level)
        keep = up.is_not_null()
        item_ids, level = item_ids.filter(keep), up.filter(keep)
    if not levels:
        return pl.DataFrame(schema={id_col: ids.dtype, "range_id": range_ids.dtype})
    return pl.concat(levels, rechunk=False)


#: Items processed per step by :func:`enclosing` (bounds its temporary memory).
CHUNK = 1 << 20


def enclosing(index: RangeIndex, items: pl.DataFrame, id_col: str) -> Enclosing:
    """Every range of ``index`` that encloses each item (``id_col`` distinct, ``global_tid``, ``start``, ``end``)."""
    tk, srt = index.tk, index.sorted
    empty = pl.DataFrame(schema={id_col: items.schema[id_col], "range_id": srt.schema["range_id"]})
    ids, inner, pairs, inner_slices = [], [], [empty], [empty]
    laminar = index.laminar.implode()
    for offset in range(0, max(items.height, 1), CHUNK):
        ranked = tk.add_rank(items.slice(offset, CHUNK).select(id_col, "global_tid", "start", "end"))
        on_laminar = ranked["thread_rank"].is_in(laminar)
        lam = ranked.filter(on_laminar)
        ids.append(lam[id_col])
        inner.append(_innermost_laminar(srt, tk, lam))
        other = ranked.filter(~on_laminar)
        if other.height:
            p, i = _enclosing_slices(srt, tk, other, id_col)
            pairs.append(p)
            inner_slices.append(i)
    all_ids = pl.concat(ids, rechunk=False)
    n = all_ids.len()
    row_ids: pl.Series | None = all_ids
    if n and all_ids.null_count() == 0 and all_ids[0] == 0 and all_ids[n - 1] == n - 1 and all_ids.is_sorted():
        row_ids = None  # the items' ids are distinct, so sorted from 0 to n-1 means exactly 0..n-1
    del ids, all_ids
    return Enclosing(
        index=index,
        id_col=id_col,
        row_ids=row_ids,
        inner_pos=pl.concat(inner, rechunk=False),
        slice_pairs=pl.concat(pairs, rechunk=False),
        slice_innermost=pl.concat(inner_slices, rechunk=False),
        id_dtype=items.schema[id_col],
    )


def _innermost_laminar(srt: pl.DataFrame, tk: TimeKey, items: pl.DataFrame) -> pl.Series:
    """Position of the innermost range enclosing each item (null if none), on properly nested threads."""
    keys, ends, parent = srt["key"], srt["end"], srt["parent_pos"]
    item_key = items.select(tk.key("start"))[:, 0]
    # the last range starting no later than the item, if on the same thread
    cand = keys.search_sorted(item_key, side="right").cast(I64) - 1
    first_of_thread = keys.search_sorted(items["thread_rank"] * tk.span, side="left").cast(I64)
    cand = cand.set(cand < first_of_thread, None).cast(pl.UInt32)
    # walk up while the candidate ends before the item: one step per nesting level, on the misses only
    rows = pl.int_range(0, cand.len(), dtype=I64, eager=True)
    item_end = items["end"]
    todo = rows
    while todo.len():
        c = cand.gather(todo)
        miss = c.is_not_null() & (ends.gather(c) < item_end.gather(todo))
        todo = todo.filter(miss)
        if not todo.len():
            break
        cand = cand.scatter(todo, parent.gather(c.filter(miss)).cast(pl.UInt32))
    return cand.alias("inner_pos")


def _enclosing_slices(
    srt: pl.DataFrame, tk: TimeKey, items: pl.DataFrame, id_col: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    inner = items.with_columns(tk.key("start").alias("_key")).sort("_key")
    outer = srt.filter(pl.col("thread_rank").is_in(items["thread_rank"].unique().implode())).with_columns(
        (pl.col("thread_rank") * tk.span + (pl.col("end") - tk.t0)).alias("_end_key")
    )
    keys = inner["_key"]
    lo = keys.search_sorted(outer["key"], side="left")
    hi = keys.search_sorted(outer["_end_key"], side="right")
    outer_pos = pl.int_range(0, outer.height, dtype=I64, eager=True)
    got = _slice_pairs(outer_pos, outer["end"], lo, hi, inner["end"])
    pairs = pl.DataFrame(
        {
            id_col: inner[id_col].gather(got["i"]),
            "range_id": outer["range_id"].gather(got["o"]),
            "_d": outer["depth"].gather(got["o"]),
            "_s": outer["start"].gather(got["o"]),
        }
    )
    innermost = (
        pairs.sort([id_col, "_d", "_s", "range_id"])
        .group_by(id_col, maintain_order=True)
        .agg(pl.col("range_id").last())
    )
    return pairs.select(id_col, "range_id"), innermost
