"""The NVTX range table: ranges in table order with names, domains and payloads looked up, ranges never
closed left out and counted, nesting from the sorted sweep, and the lazy ``Trace.ranges`` view.
"""

from __future__ import annotations

import polars as pl

from dsocr.analyze import schema as S
from dsocr.analyze.lookups import I64, pid_of, tid_of
from dsocr.analyze.prefetch import ROWID
from dsocr.analyze.sweep import RangeIndex
from dsocr.analyze.trace import OpenRanges


def ranges_frame(
    nvtx: pl.DataFrame, creates: pl.DataFrame, strings: pl.DataFrame, payloads: pl.DataFrame
) -> pl.DataFrame:
    """NVTX ranges in table order (``range_id`` = row number): lookups by expression, no joins of the big frame.

    ``nvtx`` holds the range events only, ``creates`` the domain-create events.
    """

    def text(frame: pl.DataFrame) -> pl.Expr:
        if strings.height == 0 or frame["textId"].null_count() == frame.height:
            return pl.col("text")
        looked_up = pl.col("textId").replace_strict(
            strings["_sid"], strings["_str"], default=None, return_dtype=pl.String
        )
        return pl.coalesce(looked_up, pl.col("text"))

    pid = pid_of("globalTid")
    domains = (
        creates.lazy()
        .select("start", (pl.col("domainId") * (1 << S.TID_BITS) + pid).alias("_dkey"), text(creates).alias("domain"))
        .sort("start")
        .group_by("_dkey", maintain_order=True)
        .agg(pl.col("domain").first())
        .collect()
    )
    # an enum of the few domain names: a byte or two per range instead of a string
    names = pl.Enum(domains["domain"].drop_nulls().unique(maintain_order=True))
    if domains.height:
        domain = (pl.col("domainId") * (1 << S.TID_BITS) + pid).replace_strict(
            domains["_dkey"], domains["domain"].cast(names), default=None, return_dtype=names
        )
    else:
        domain = pl.lit(None, names)
    if payloads.height:
        payload = pl.col(ROWID).replace_strict(payloads[ROWID], payloads["value"], default=None, return_dtype=I64)
    else:
        payload = pl.lit(None, I64)
    return nvtx.select(
        pl.int_range(pl.len(), dtype=pl.UInt32).alias("range_id"),
        pl.col("start"),
        pl.col("end"),  # null: never closed (see drop_open)
        text(nvtx).fill_null("").alias("message"),
        domain.alias("domain"),
        pl.col("eventType").is_in(S.PUSHPOP_EVENTS).alias("_pushpop"),
        pl.col("globalTid").alias("global_tid"),
        (pl.col("endGlobalTid").is_null() | (pl.col("endGlobalTid") == pl.col("globalTid"))).alias(
            "ended_on_start_thread"
        ),
        payload.alias("payload"),
    )


#: How many names of never-closed ranges :class:`OpenRanges` keeps (the most frequent).
OPEN_RANGE_NAMES = 3


def drop_open(base: pl.DataFrame) -> tuple[pl.DataFrame, OpenRanges]:
    """``base`` without the ranges that never closed (``end`` null), renumbered; and what was left out.

    A range is left open when the program exits, crashes or the capture stops inside it. Its end is
    unknown: NVIDIA's reports make one up (``nvtx_sum`` ends it at the last NVTX event of any kind,
    ``nvtx_gpu_proj_sum`` at the last range start or end), which stretches a stage over everything
    after it, nests every later range inside it and, with many, makes the nesting quadratic. So they
    are left out, and counted.
    """
    is_open = base["end"].is_null()
    count = int(is_open.sum())
    if not count:
        return base, OpenRanges()
    domain = pl.col("domain").cast(pl.String)
    name = pl.when(domain.is_null()).then(pl.col("message")).otherwise(domain + ":" + pl.col("message"))
    names = (
        base.filter(is_open)
        .group_by(name.alias("name"))
        .len()
        .sort(["len", "name"], descending=[True, False])
        .head(OPEN_RANGE_NAMES)
    )
    kept = base.filter(~is_open).with_columns(pl.int_range(pl.len(), dtype=pl.UInt32).alias("range_id"))
    return kept, OpenRanges(count, tuple((str(n), int(c)) for n, c in names.iter_rows()))


def with_nesting(base: pl.DataFrame, index: RangeIndex) -> pl.DataFrame:
    """``depth`` and ``parent_id`` by ``range_id`` (the row number of ``base``)."""
    srt = index.sorted
    depth = pl.zeros(base.height, dtype=pl.UInt32, eager=True).alias("depth")
    parent = pl.repeat(None, base.height, dtype=pl.UInt32, eager=True).alias("parent_id")
    if srt.height:
        ids = srt["range_id"].cast(pl.Int64)
        depth = depth.scatter(ids, srt["depth"])
        parent = parent.scatter(ids, srt["range_id"].gather(srt["parent_pos"]))
    return base.with_columns(depth, parent)


def ranges_view(base: pl.DataFrame) -> pl.LazyFrame:
    message = pl.col("message")
    domain = pl.col("domain").cast(pl.String)
    return base.lazy().select(
        "range_id",
        "start",
        "end",
        "message",
        domain,
        pl.when(domain.is_null()).then(message).otherwise(domain + ":" + message).alias("name"),
        pl.when(pl.col("_pushpop")).then(pl.lit("PushPop")).otherwise(pl.lit("StartEnd")).alias("style"),
        "global_tid",
        pid_of("global_tid").alias("pid"),
        tid_of("global_tid").alias("tid"),
        "ended_on_start_thread",
        "payload",
        "depth",
        "parent_id",
    )
