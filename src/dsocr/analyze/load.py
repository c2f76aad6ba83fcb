"""Load an nsys SQLite or ``parquetdir`` export into a :class:`~dsocr.analyze.trace.Trace`.

Only the needed columns are read (connectorx for SQLite, several tables in parallel); names
are resolved through ``StringIds``, NVTX domains through their domain-create events, and
every GPU operation is joined to its launching API call by correlation id within the
process. Range nesting is computed by a sorted sweep (:mod:`dsocr.analyze.sweep`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import polars as pl

from dsocr.analyze import prefetch
from dsocr.analyze import schema as S
from dsocr.analyze.cuda_tables import (
    GPU_COLUMNS,
    GRAPH_COLUMNS,
    OP_DETAILS,
    OP_KEYS,
    api_frame,
    api_view,
    gpu_infos,
    ops_frames,
    ops_view,
    small_details,
    syncs_view,
)
from dsocr.analyze.lookups import I64, narrow
from dsocr.analyze.op_details import TraceDetails
from dsocr.analyze.policy import RuntimePolicy, trim_c_heap
from dsocr.analyze.prefetch import EARLY_READS
from dsocr.analyze.range_table import drop_open, ranges_frame, ranges_view, with_nesting
from dsocr.analyze.readers import Request, TableSource
from dsocr.analyze.sweep import as_int, make_timekey, range_index
from dsocr.analyze.trace import Trace, TraceIndex, TraceMeta
from dsocr.analyze.validation import check_strings, export_meta, one_line, open_source, schema_version
from dsocr.contract.errors import BadInput


def load_trace(path: Path, *, need_cuda: bool = False, need_nvtx: bool = True, trim_heap: bool | None = None) -> Trace:
    """Load an nsys export (SQLite file or ``parquetdir`` directory).

    Raises :class:`InputNotFound` for a missing path and :class:`BadInput` for anything that is
    not a readable nsys export of schema 3.x, for a trace without ``NVTX_EVENTS`` unless
    ``need_nvtx`` is False, and for one without CUDA activity when ``need_cuda`` is True. A
    trace without CUDA tables otherwise loads with empty GPU frames (``meta.has_cuda`` False).
    ``trim_heap``: trim the C heap after reading an SQLite export (default: the runtime policy's choice
    for this file, :class:`~dsocr.analyze.policy.RuntimePolicy`).
    """
    path = Path(path)
    source = open_source(path)
    if trim_heap is None:
        trim_heap = RuntimePolicy.for_inputs([path]).trim_heap
    trim = trim_heap and source.source_format == "sqlite"  # polars reads parquet through its own allocator
    try:
        trace = _load(source, need_cuda=need_cuda, need_nvtx=need_nvtx, trim_heap=trim)
        if trim:
            trim_c_heap()
        return trace
    except BadInput as exc:
        if exc.message.startswith(str(path)):
            raise
        raise BadInput(f"{path}: {exc.message}") from exc
    except (sqlite3.DatabaseError, RuntimeError, OSError, pl.exceptions.PolarsError) as exc:
        raise BadInput(
            f"{path}: cannot be read, the export looks corrupt or truncated ({one_line(exc)}); export it again"
        ) from exc
    finally:
        source.close()  # later on-demand reads open their own connections
        prefetch.discard()  # early reads of tables this trace did not need


def _first_int(df: pl.DataFrame, column: str) -> int | None:
    if df.height == 0 or df[column].null_count() == df.height:
        return None
    value = df[column].drop_nulls()[0]
    return int(value)


def _early(key: str) -> Request:
    """One of the reads :mod:`dsocr.analyze.prefetch` may have started (its columns are i64, ``text`` a string)."""
    table, columns, where = EARLY_READS[key]
    return table, {c: pl.String if c == "text" else I64 for c in columns}, where


def table_requests() -> dict[str, Request]:
    domain_cols: dict[str, type[pl.DataType]] = {
        "start": I64,
        "text": pl.String,
        "textId": I64,
        "domainId": I64,
        "globalTid": I64,
    }
    # the largest tables first (API calls, NVTX ranges, kernels): read_many starts them first, the
    # small ones fill in beside them
    return {
        "runtime": _early("runtime"),
        "nvtx": _early("nvtx"),
        "kernel": _early("kernel"),
        "strings": (S.STRINGS, {"id": I64, "value": pl.String}, None),
        "domains": (S.NVTX, domain_cols, ("eventType", (S.EVENT_DOMAIN_CREATE,))),
        "memcpy": (S.MEMCPY, OP_KEYS | OP_DETAILS | {"copyKind": I64}, None),
        "memset": (S.MEMSET, OP_KEYS | OP_DETAILS, None),
        "graph": (S.GRAPH_TRACE, GRAPH_COLUMNS, None),
        "sync": (
            S.SYNC,
            {"start": I64, "end": I64, "correlationId": I64, "globalPid": I64, "syncType": I64},
            None,
        ),
        "gpu": (S.GPU_INFO, GPU_COLUMNS, None),
        "analysis": (S.ANALYSIS, {"duration": I64, "startTime": I64, "stopTime": I64}, None),
        "session": (S.SESSION_START, {"utcEpochNs": I64}, None),
    }


def _load(source: TableSource, *, need_cuda: bool, need_nvtx: bool, trim_heap: bool) -> Trace:
    path = source.path
    tables = source.tables()
    meta_values = export_meta(source)
    version = schema_version(path, meta_values)
    if need_nvtx and S.NVTX not in tables:
        raise BadInput(
            f"{path}: has no NVTX_EVENTS table: the program emitted no NVTX ranges or nsys ran without "
            "NVTX tracing; profile with `nsys profile --trace=cuda,nvtx`"
        )
    if need_cuda and not (tables & S.CUDA_ACTIVITY_TABLES):
        raise BadInput(
            f"{path}: holds no CUDA kernels, copies or memsets; profile a GPU run with `nsys profile --trace=cuda,nvtx`"
        )
    raw = source.read_many(table_requests())
    if trim_heap:
        trim_c_heap()  # the readers' temporary buffers
    check_strings(path, tables, raw)
    payloads = source.first_non_null(S.NVTX, S.PAYLOAD_COLUMNS)
    strings = raw["strings"].rename({"id": "_sid", "value": "_str"})

    api_base, api_names = api_frame(raw["runtime"], strings)
    op_parts, op_names = ops_frames(raw["kernel"], raw["memcpy"], raw["memset"], strings, api_base, raw["graph"])
    syncs = syncs_view(raw["sync"], api_base)
    # launches are matched: ids that fit shrink to 32 bits (the views widen them again)
    # correlation ids (and the kernels' process ids) are read again if asked for (op_details)
    api_base = narrow(api_base.drop("correlation_id"), ("nameId",))
    op_parts[0] = narrow(op_parts[0].drop("correlation_id", "global_pid"), ("name_id",))
    op_parts[1:] = [narrow(part, ("correlation_id", "name_id")) for part in op_parts[1:]]
    del raw["runtime"], raw["kernel"]

    nvtx = raw.pop("nvtx")
    analysis = raw["analysis"]
    session_start = _first_int(analysis, "startTime")
    session_end = _first_int(analysis, "stopTime")
    duration = _first_int(analysis, "duration")
    if session_end is None and session_start is not None and duration is not None:
        session_end = session_start + duration
    if session_end is None:
        highs = [
            v
            for v in (
                nvtx["start"].max(),
                nvtx["end"].max(),
                api_base["end"].max(),
                *(p["end"].max() for p in op_parts),
            )
            if v is not None
        ]
        session_end = max(as_int(v) for v in highs) if highs else 0

    ranges_base = ranges_frame(nvtx, raw.pop("domains"), strings, payloads)
    del nvtx  # the messages keep only the text buffers alive
    ranges_base, open_ranges = drop_open(ranges_base)
    eost = ranges_base.select("range_id", "global_tid", "start", "end")
    if not ranges_base["ended_on_start_thread"].all():
        eost = eost.filter(ranges_base["ended_on_start_thread"])
    tk = make_timekey([eost, api_base.select("global_tid", "start", "end")], threads_of=0)
    index = range_index(eost, tk)
    ranges_base = with_nesting(ranges_base, index)

    meta = TraceMeta(
        path=path,
        product_version=meta_values.get("EXPORT_PRODUCT_VERSION", "unknown"),
        schema=version,
        source_format=source.source_format,
        tables=tables,
        session_start_utc_ns=_first_int(raw["session"], "utcEpochNs"),
        duration_ns=duration,
        session_start_ns=session_start,
        session_end_ns=session_end,
        open_ranges=open_ranges,
    )
    return Trace(
        meta=meta,
        gpus=gpu_infos(raw["gpu"]),
        ranges=ranges_view(ranges_base),
        gpu_ops=ops_view(op_parts, op_names, api_base),
        api=api_view(api_base, api_names),
        syncs=syncs,
        index=TraceIndex(ranges=index),
        details=TraceDetails(source, strings, small_details(op_parts), op_names),
    )
