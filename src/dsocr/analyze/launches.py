"""Launch matching: each GPU operation (and synchronization) to its launching CUDA API call, by correlation
id within the process.
"""

from __future__ import annotations

import polars as pl

from dsocr.analyze import schema as S
from dsocr.analyze.lookups import I64


def api_processes(api: pl.DataFrame) -> pl.Series:
    """The globalPid of every process with API calls in ``api`` (the API base frame)."""
    gtids = api["global_tid"].unique()  # few threads: the division runs on those only
    return ((gtids // (1 << S.TID_BITS)).unique() * (1 << S.TID_BITS)).alias("global_pid")


def match_launch(records: pl.DataFrame, api: pl.DataFrame, id_col: str, api_pids: pl.Series) -> pl.Series:
    """``api_id`` of each record's launching call (same order; null where none; the first if several).

    ``records`` has ``id_col`` (its row number), ``correlation_id`` and ``global_pid``; ``api`` is
    the API base frame (row number = ``api_id``), ``api_pids`` its processes
    (:func:`api_processes`). The two-column key is folded into one int64 (correlation id,
    process rank); with a single process it is the correlation id itself, so the hash join
    stays lean on millions of rows.
    """
    full = pl.repeat(None, records.height, dtype=pl.UInt32, eager=True).alias("api_id")
    if records.height == 0 or api.height == 0:
        return full
    api_pid = (pl.col("global_tid") // (1 << S.TID_BITS)).alias("global_pid")
    pids = pl.concat([records["global_pid"].unique(), api_pids]).unique().drop_nulls()

    def key(gpid: pl.Expr) -> pl.Expr:
        if pids.len() <= 1:
            return pl.col("correlation_id").alias("_key")
        ranks = pl.int_range(0, pids.len(), dtype=I64, eager=True)
        rank = gpid.replace_strict(pids, ranks, default=None, return_dtype=I64)
        return (pl.col("correlation_id") * pids.len() + rank).alias("_key")

    corr = api["correlation_id"].rechunk()  # one chunk: faster binary searches and gathers
    if pids.len() <= 1 and corr.is_sorted():
        # one process, calls in correlation order (as nsys writes them): binary search, no hash table
        at = corr.search_sorted(records["correlation_id"], side="left").cast(I64)
        hit = (at < corr.len()) & (corr.gather(at.clip(0, corr.len() - 1)) == records["correlation_id"])
        return api["api_id"].gather(at.set(~hit.fill_null(False), None)).alias("api_id")
    matched = (
        records.lazy()
        .select(id_col, key(pl.col("global_pid")))
        .join(api.lazy().select(key(api_pid * (1 << S.TID_BITS)), "api_id"), on="_key", how="inner")
        .collect()
    )
    if matched.height and matched[id_col].n_unique() < matched.height:
        matched = matched.sort("api_id").unique(subset=[id_col], keep="first")
    # ``id_col`` numbers the records consecutively from its first value (copies and memsets continue
    # the kernels' op ids): their positions in ``full`` are the ids less that first value
    first = int(records[id_col][0])
    return full.scatter(matched[id_col].cast(I64) - first, matched["api_id"]) if matched.height else full


def api_gather(api: pl.DataFrame, column: str) -> pl.Expr:
    """``api[column]`` at each row's ``api_id``, computed only if a query selects it."""
    values = api[column]

    def fetch(ids: pl.Series) -> pl.Series:
        return values.gather(ids)

    return pl.col("api_id").map_batches(fetch, return_dtype=values.dtype, is_elementwise=True)
