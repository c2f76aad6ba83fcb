"""Load an nsys SQLite or ``parquetdir`` export into a :class:`~dsocr.analyze.trace.Trace`.

Only the needed columns are read (connectorx for SQLite, several tables in parallel); names
are resolved through ``StringIds``, NVTX domains through their domain-create events, and
every GPU operation is joined to its launching API call by correlation id within the
process. Range nesting is computed by a sorted sweep (:mod:`dsocr.analyze.sweep`).
"""

from __future__ import annotations

import contextlib
import ctypes
import sqlite3
import threading
from pathlib import Path

import polars as pl

from dsocr import SMALL_TRACE_BYTES
from dsocr.analyze import prefetch
from dsocr.analyze import schema as S
from dsocr.analyze.prefetch import EARLY_READS, ROWID, SQLITE_MAGIC
from dsocr.analyze.readers import ParquetDirSource, Request, SqliteSource, TableSource
from dsocr.analyze.sweep import RangeIndex, as_int, make_timekey, range_index
from dsocr.analyze.trace import GpuInfo, SchemaVersion, Trace, TraceMeta
from dsocr.contract.errors import BadInput, InputNotFound

I64 = pl.Int64
#: ``api.category``: an enum, so that millions of calls carry one byte each, not a string.
API_CATEGORY = pl.Enum(S.API_CATEGORIES)
#: ``gpu_ops.kind``.
OP_KIND = pl.Enum(S.OP_KINDS)
_REPORT_SUFFIXES = (".nsys-rep", ".qdrep", ".qdstrm")
_HINT = "give an nsys SQLite export (`nsys export --type sqlite REPORT.nsys-rep`) or a parquetdir export"


def load_trace(path: Path, *, need_cuda: bool = False, need_nvtx: bool = True) -> Trace:
    """Load an nsys export (SQLite file or ``parquetdir`` directory).

    Raises :class:`InputNotFound` for a missing path and :class:`BadInput` for anything that is
    not a readable nsys export of schema 3.x, for a trace without ``NVTX_EVENTS`` unless
    ``need_nvtx`` is False, and for one without CUDA activity when ``need_cuda`` is True. A
    trace without CUDA tables otherwise loads with empty GPU frames (``meta.has_cuda`` False).
    """
    path = Path(path)
    source = open_source(path)
    try:
        trace = _load(source, need_cuda=need_cuda, need_nvtx=need_nvtx)
        if _worth_trimming(source):
            trim_c_heap()
        return trace
    except BadInput as exc:
        if exc.message.startswith(str(path)):
            raise
        raise BadInput(f"{path}: {exc.message}") from exc
    except (sqlite3.DatabaseError, RuntimeError, OSError, pl.exceptions.PolarsError) as exc:
        raise BadInput(
            f"{path}: cannot be read, the export looks corrupt or truncated ({_one_line(exc)}); export it again"
        ) from exc
    finally:
        source.close()  # later on-demand reads open their own connections
        prefetch.discard()  # early reads of tables this trace did not need


#: SQLite exports from this size on hand the C heap's freed pages back after reading (smaller ones
#: would only fault them in again: ~2 ms a trim, twice per trace).
TRIM_BYTES = SMALL_TRACE_BYTES


def _worth_trimming(source: TableSource) -> bool:
    """Whether the readers of ``source`` left enough in the C heap to hand back (big SQLite files only;
    polars reads parquet through its own allocator)."""
    try:
        return source.source_format == "sqlite" and source.path.stat().st_size >= TRIM_BYTES
    except OSError:
        return False


def trim_c_heap() -> None:
    """Hand the C heap's freed pages back to the OS (glibc's ``malloc_trim``; a no-op elsewhere).

    connectorx and sqlite3 allocate through the C heap, which keeps what they freed.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def open_source(path: Path) -> SqliteSource | ParquetDirSource:
    """Check ``path`` and open it as an SQLite or parquetdir export (errors say what to do)."""
    if not path.exists():
        raise InputNotFound(f"{path}: no such file or directory; {_HINT}")
    if path.is_dir():
        if not any(path.glob("*.parquet")):
            raise BadInput(f"{path}: is a directory without .parquet files, not an nsys parquetdir export; {_HINT}")
        return ParquetDirSource(path)
    try:
        with path.open("rb") as fh:
            header = fh.read(100)
    except OSError as exc:
        raise InputNotFound(f"{path}: cannot be read ({exc.strerror}); check its permissions") from exc
    if not header.startswith(SQLITE_MAGIC):
        if path.suffix.lower() in _REPORT_SUFFIXES:
            raise BadInput(
                f"{path}: is an Nsight Systems report, not an SQLite export; run "
                f"`nsys export --type sqlite -o {path.with_suffix('.sqlite')} {path}` and analyze the .sqlite"
            )
        raise BadInput(f"{path}: is not an SQLite file; {_HINT}")
    _check_complete(path, header)
    try:
        return SqliteSource(path)
    except sqlite3.DatabaseError as exc:
        raise BadInput(f"{path}: is a corrupt SQLite file ({_one_line(exc)}); export it again") from exc


def _check_complete(path: Path, header: bytes) -> None:
    """Catch a truncated SQLite file from its header's page size and page count."""
    if len(header) < 100:
        raise BadInput(f"{path}: is truncated ({len(header)} bytes); copy or export it again")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    header_count_valid = header[92:96] == header[24:28]
    size = path.stat().st_size
    if page_size and (size % page_size or (header_count_valid and size < pages * page_size)):
        raise BadInput(
            f"{path}: is truncated ({size} bytes, its SQLite header promises {pages * page_size}); "
            "copy or export it again"
        )


def _meta_values(source: TableSource) -> dict[str, str]:
    for table in S.META_TABLES:
        if table in source.tables():
            df = source.read(table, {"name": pl.String, "value": pl.String})
            return dict(zip(df["name"].to_list(), df["value"].to_list(), strict=True))
    if source.source_format == "parquetdir" and source.tables() & S.NSYS_TABLES:
        # a parquetdir may come without its metadata table: accept nsys' own tables, version unknown
        return {"EXPORT_SCHEMA_VERSION": S.ASSUMED_SCHEMA}
    raise BadInput(f"{source.path}: is not an Nsight Systems export (no META_DATA_EXPORT table); {_HINT}")


def _schema_version(path: Path, meta: dict[str, str]) -> SchemaVersion:
    text = meta.get("EXPORT_SCHEMA_VERSION", "")
    parts = text.split(".") if text else []
    try:
        if len(parts) >= 2:
            nums = [int(p) for p in parts[:3]] + [0] * (3 - len(parts[:3]))
        else:
            nums = [int(meta.get(f"EXPORT_SCHEMA_VERSION_{k}", "0")) for k in ("MAJOR", "MINOR", "MICRO")]
    except ValueError as exc:
        raise BadInput(f"{path}: unreadable export schema version {text!r}; export it again with nsys") from exc
    version = SchemaVersion(*nums)
    if version.major not in S.SUPPORTED_MAJORS:
        product = meta.get("EXPORT_PRODUCT_VERSION", "unknown")
        raise BadInput(
            f"{path}: export schema {version} (nsys {product}) is not supported; dsocr reads schema 3.x "
            "(nsys 2023.4 to 2026.x): export the report with a supported nsys"
        )
    return version


def _first_int(df: pl.DataFrame, column: str) -> int | None:
    if df.height == 0 or df[column].null_count() == df.height:
        return None
    value = df[column].drop_nulls()[0]
    return int(value)


def _gpus(df: pl.DataFrame) -> tuple[GpuInfo, ...]:
    gpus = []
    for row in df.sort("id").to_dicts():
        major, minor = row.get("computeMajor"), row.get("computeMinor")
        gpus.append(
            GpuInfo(
                device_id=int(row["id"] or 0),
                name=str(row["name"] or "unknown GPU"),
                chip_name=row.get("chipName"),
                sm_count=row.get("smCount"),
                clock_hz=row.get("clockRate"),
                memory_bandwidth_bps=row.get("memoryBandwidth"),
                total_memory_bytes=row.get("totalMemory"),
                l2_cache_bytes=row.get("l2CacheSize"),
                compute_capability=f"{major}.{minor}" if major is not None and minor is not None else None,
                uuid=row.get("uuid"),
            )
        )
    return tuple(gpus)


_GPU_COLUMNS: dict[str, type[pl.DataType]] = {
    "id": I64,
    "name": pl.String,
    "chipName": pl.String,
    "smCount": I64,
    "clockRate": I64,
    "memoryBandwidth": I64,
    "totalMemory": I64,
    "l2CacheSize": I64,
    "computeMajor": I64,
    "computeMinor": I64,
    "uuid": pl.String,
}

#: Columns every GPU-op table has and the analysis always needs.
_OP_KEYS: dict[str, type[pl.DataType]] = {"start": I64, "end": I64, "correlationId": I64, "globalPid": I64}
#: Columns of the small copy/memset tables, read at once.
_OP_DETAILS: dict[str, type[pl.DataType]] = {"deviceId": I64, "streamId": I64, "graphNodeId": I64, "bytes": I64}
#: Kernel columns read only when a query selects them (they cost a scan of the largest table).
_KERNEL_LAZY: dict[str, type[pl.DataType]] = {
    "deviceId": I64,
    "streamId": I64,
    "graphNodeId": I64,
    "shortName": I64,
    **dict.fromkeys(("gridX", "gridY", "gridZ", "blockX", "blockY", "blockZ"), I64),
}


def _early(key: str) -> Request:
    """One of the reads :mod:`dsocr.analyze.prefetch` may have started (its columns are i64, ``text`` a string)."""
    table, columns, where = EARLY_READS[key]
    return table, {c: pl.String if c == "text" else I64 for c in columns}, where


def _requests() -> dict[str, Request]:
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
        "memcpy": (S.MEMCPY, _OP_KEYS | _OP_DETAILS | {"copyKind": I64}, None),
        "memset": (S.MEMSET, _OP_KEYS | _OP_DETAILS, None),
        "sync": (
            S.SYNC,
            {"start": I64, "end": I64, "correlationId": I64, "globalPid": I64, "syncType": I64},
            None,
        ),
        "gpu": (S.GPU_INFO, _GPU_COLUMNS, None),
        "analysis": (S.ANALYSIS, {"duration": I64, "startTime": I64, "stopTime": I64}, None),
        "session": (S.SESSION_START, {"utcEpochNs": I64}, None),
    }


def _load(source: TableSource, *, need_cuda: bool, need_nvtx: bool) -> Trace:
    path = source.path
    tables = source.tables()
    meta_values = _meta_values(source)
    version = _schema_version(path, meta_values)
    if need_nvtx and S.NVTX not in tables:
        raise BadInput(
            f"{path}: has no NVTX_EVENTS table: the program emitted no NVTX ranges or nsys ran without "
            "NVTX tracing; profile with `nsys profile --trace=cuda,nvtx`"
        )
    if need_cuda and not (tables & S.CUDA_ACTIVITY_TABLES):
        raise BadInput(
            f"{path}: holds no CUDA kernels, copies or memsets; profile a GPU run with `nsys profile --trace=cuda,nvtx`"
        )
    raw = source.read_many(_requests())
    if _worth_trimming(source):
        trim_c_heap()  # the readers' temporary buffers
    payloads = source.first_non_null(S.NVTX, S.PAYLOAD_COLUMNS)
    strings = raw["strings"].rename({"id": "_sid", "value": "_str"})

    api_base, api_names = _api_base(raw["runtime"], strings)
    op_parts, op_names = _ops_base(raw["kernel"], raw["memcpy"], raw["memset"], strings, api_base)
    syncs = _syncs(raw["sync"], api_base)
    # launches are matched: ids that fit shrink to 32 bits (the views widen them again)
    # correlation ids (and the kernels' process ids) are read again if a query selects them
    api_base = _narrow(api_base.drop("correlation_id"), ("nameId",))
    op_parts[0] = _narrow(op_parts[0].drop("correlation_id", "global_pid"), ("name_id",))
    op_parts[1:] = [_narrow(part, ("correlation_id", "name_id")) for part in op_parts[1:]]
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

    ranges_base = _ranges_base(nvtx, raw.pop("domains"), strings, payloads, session_end)
    del nvtx  # the messages keep only the text buffers alive
    eost = ranges_base.select("range_id", "global_tid", "start", "end")
    if not ranges_base["ended_on_start_thread"].all():
        eost = eost.filter(ranges_base["ended_on_start_thread"])
    tk = make_timekey([eost, api_base.select("global_tid", "start", "end")], threads_of=0)
    index = range_index(eost, tk)
    ranges_base = _with_nesting(ranges_base, index)

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
    )
    lazy_kernel = _LazyColumns(source, S.KERNEL, _KERNEL_LAZY)
    kernel_ids = _LazyColumns(source, S.KERNEL, {"correlationId": I64, "globalPid": I64})
    api_ids = _LazyColumns(source, S.RUNTIME, {"correlationId": I64})
    return Trace(
        meta=meta,
        gpus=_gpus(raw["gpu"]),
        ranges=_ranges_view(ranges_base),
        gpu_ops=_ops_view(op_parts, op_names, strings, (lazy_kernel, kernel_ids), api_base),
        api=_api_view(api_base, api_names, api_ids),
        syncs=syncs,
        range_index=index,
    )


def _narrow(frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
    """``frame`` with each int64 column of ``columns`` as int32 where every value fits."""
    bounds = frame.select(
        *(pl.col(c).min().alias(f"{c}_lo") for c in columns), *(pl.col(c).max().alias(f"{c}_hi") for c in columns)
    ).row(0, named=True)
    fits = [
        c
        for c in columns
        if frame.schema[c] == I64
        and all(v is None or -(1 << 31) <= as_int(v) < (1 << 31) for v in (bounds[f"{c}_lo"], bounds[f"{c}_hi"]))
    ]
    return frame.with_columns(pl.col(c).cast(pl.Int32) for c in fits) if fits else frame


def _pid(col: str) -> pl.Expr:
    return (pl.col(col) // (1 << S.TID_BITS)) % (1 << S.TID_BITS)


def _tid(col: str) -> pl.Expr:
    return pl.col(col) % (1 << S.TID_BITS)


def _gpid(col: str) -> pl.Expr:
    """globalPid of a globalTid: the TID bits cleared."""
    return pl.col(col) - pl.col(col) % (1 << S.TID_BITS)


#: Widest id range looked up through a dense table (4 bytes per possible id).
_MAX_LUT = 1 << 22


def _lookup(
    key: str,
    table: pl.DataFrame,
    value: str,
    default: str | None = None,
    key_dtype: pl.DataType | type[pl.DataType] = I64,
) -> pl.Expr:
    """``table[value]`` for ``pl.col(key)`` via a small, unique id (``_sid``) -> value table
    (evaluated only if selected); ids not in the table, and null ids, give ``default``.

    Ids in a narrow range go through a dense position table (one gather, whatever the chunking
    of the column); others through ``replace_strict`` (``key_dtype``: the column's dtype, in
    which the table's ids are given so that the column is not widened row by row).
    """
    values = table[value]
    ids = table["_sid"]
    lo, hi = ids.min(), ids.max()
    if lo is not None and hi is not None and as_int(hi) - as_int(lo) < _MAX_LUT:
        base = as_int(lo)
        # position of each id in the table; one extra slot (the last) holds the default
        positions = pl.repeat(values.len(), as_int(hi) - base + 1, dtype=pl.UInt32, eager=True).scatter(
            ids.cast(I64) - base, pl.int_range(values.len(), dtype=pl.UInt32, eager=True)
        )
        extended = pl.concat([values, pl.Series([default], dtype=values.dtype)])
        fallback = values.len()

        def fetch(keys: pl.Series) -> pl.Series:
            at = keys.cast(I64) - base
            inside = (at >= 0) & (at < positions.len())
            pos = positions.gather(at.set(~inside.fill_null(False), None)).fill_null(fallback)
            return extended.gather(pos)

        return pl.col(key).map_batches(fetch, return_dtype=values.dtype, is_elementwise=True)
    if key_dtype == pl.Int32:
        table = table.filter(pl.col("_sid").is_between(-(1 << 31), (1 << 31) - 1))
    return pl.col(key).replace_strict(
        table["_sid"].cast(key_dtype), table[value], default=default, return_dtype=table.schema[value]
    )


# ---- ranges ----


def _ranges_base(
    nvtx: pl.DataFrame, creates: pl.DataFrame, strings: pl.DataFrame, payloads: pl.DataFrame, session_end: int
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

    pid = _pid("globalTid")
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
        pl.col("end").fill_null(session_end).alias("end"),
        text(nvtx).fill_null("").alias("message"),
        domain.alias("domain"),
        pl.col("eventType").is_in(S.PUSHPOP_EVENTS).alias("_pushpop"),
        pl.col("globalTid").alias("global_tid"),
        (pl.col("endGlobalTid").is_null() | (pl.col("endGlobalTid") == pl.col("globalTid"))).alias(
            "ended_on_start_thread"
        ),
        payload.alias("payload"),
    )


def _with_nesting(base: pl.DataFrame, index: RangeIndex) -> pl.DataFrame:
    """``depth`` and ``parent_id`` by ``range_id`` (the row number of ``base``)."""
    srt = index.sorted
    depth = pl.zeros(base.height, dtype=pl.UInt32, eager=True).alias("depth")
    parent = pl.repeat(None, base.height, dtype=pl.UInt32, eager=True).alias("parent_id")
    if srt.height:
        ids = srt["range_id"].cast(pl.Int64)
        depth = depth.scatter(ids, srt["depth"])
        parent = parent.scatter(ids, srt["range_id"].gather(srt["parent_pos"]))
    return base.with_columns(depth, parent)


def _ranges_view(base: pl.DataFrame) -> pl.LazyFrame:
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
        _pid("global_tid").alias("pid"),
        _tid("global_tid").alias("tid"),
        "ended_on_start_thread",
        "payload",
        "depth",
        "parent_id",
    )


# ---- API calls ----


def _api_base(runtime: pl.DataFrame, strings: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    names = strings.filter(pl.col("_sid").is_in(runtime["nameId"].unique().drop_nulls().implode())).select(
        "_sid", pl.col("_str").str.replace(S.API_VERSION_SUFFIX, "").alias("name")
    )
    category: pl.Expr = pl.lit("other")
    for cat, pattern in reversed(S.API_CATEGORY_PATTERNS):
        category = pl.when(pl.col("name").str.contains(pattern)).then(pl.lit(cat)).otherwise(category)
    names = names.with_columns(category.cast(API_CATEGORY).alias("category"))
    base = runtime.with_row_index("api_id").select(
        pl.col("api_id").cast(pl.UInt32),
        "start",
        "end",
        "nameId",
        pl.col("correlationId").alias("correlation_id"),
        pl.col("globalTid").alias("global_tid"),
    )
    return base, names


def _api_view(base: pl.DataFrame, names: pl.DataFrame, ids: _LazyColumns) -> pl.LazyFrame:
    return base.lazy().select(
        "api_id",
        "start",
        "end",
        _lookup("nameId", names, "name", default="", key_dtype=base.schema["nameId"]).alias("name"),
        ids.column("api_id", pl.col("correlationId"), I64).alias("correlation_id"),
        "global_tid",
        _pid("global_tid").alias("pid"),
        _tid("global_tid").alias("tid"),
        _lookup("nameId", names, "category", default="other", key_dtype=base.schema["nameId"]).alias("category"),
    )


def _api_processes(api: pl.DataFrame) -> pl.Series:
    """The globalPid of every process with API calls in ``api`` (the API base frame)."""
    gtids = api["global_tid"].unique()  # few threads: the division runs on those only
    return ((gtids // (1 << S.TID_BITS)).unique() * (1 << S.TID_BITS)).alias("global_pid")


def _match_launch(records: pl.DataFrame, api: pl.DataFrame, id_col: str, api_pids: pl.Series) -> pl.Series:
    """``api_id`` of each record's launching call (same order; null where none; the first if several).

    ``records`` has ``id_col`` (its row number), ``correlation_id`` and ``global_pid``; ``api`` is
    the API base frame (row number = ``api_id``), ``api_pids`` its processes
    (:func:`_api_processes`). The two-column key is folded into one int64 (correlation id,
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


def _api_gather(api: pl.DataFrame, column: str) -> pl.Expr:
    """``api[column]`` at each row's ``api_id``, computed only if a query selects it."""
    values = api[column]

    def fetch(ids: pl.Series) -> pl.Series:
        return values.gather(ids)

    return pl.col("api_id").map_batches(fetch, return_dtype=values.dtype, is_elementwise=True)


# ---- GPU operations ----


def _ops_base(
    kernel: pl.DataFrame,
    memcpy: pl.DataFrame,
    memset: pl.DataFrame,
    strings: pl.DataFrame,
    api: pl.DataFrame,
) -> tuple[list[pl.DataFrame], pl.DataFrame]:
    """Kernels, copies and memsets (numbered in that order) with their launching call, and op names."""
    copy_names = [f"[CUDA memcpy {label}]" for label in S.MEMCPY_KIND_LABELS.values()]
    names = pl.concat(
        [
            strings.filter(pl.col("_sid").is_in(kernel["demangledName"].unique().drop_nulls().implode())),
            pl.DataFrame({"_sid": [-1 - k for k in S.MEMCPY_KIND_LABELS], "_str": copy_names}),
            pl.DataFrame({"_sid": [_MEMSET_NAME_ID], "_str": ["[CUDA memset]"]}),
        ],
        how="vertical_relaxed",
    )
    common: list[pl.Expr | str] = [
        "start",
        "end",
        pl.col("correlationId").alias("correlation_id"),
        pl.col("globalPid").alias("global_pid"),
    ]
    detail: list[pl.Expr | str] = [
        pl.col("deviceId").alias("device_id"),
        pl.col("streamId").alias("stream_id"),
        pl.col("graphNodeId").alias("graph_node_id"),
        "bytes",
    ]
    parts = [
        kernel.select(*common, pl.col("demangledName").alias("name_id")),
        memcpy.select(
            *common,
            (-1 - pl.col("copyKind").fill_null(0)).alias("name_id"),
            *detail,
            pl.col("copyKind").alias("copy_kind"),
        ),
        memset.select(*common, pl.lit(_MEMSET_NAME_ID, I64).alias("name_id"), *detail),
    ]
    offset = 0
    numbered = []
    for part in parts:
        numbered.append(part.with_columns(pl.int_range(offset, offset + part.height, dtype=pl.UInt32).alias("op_id")))
        offset += part.height
    api_pids = _api_processes(api)
    out = [part.with_columns(_match_launch(part, api, "op_id", api_pids)) for part in numbered]
    return out, names


_MEMSET_NAME_ID = -100


class _LazyColumns:
    """Whole columns of one table, read on first use and cached (for rarely needed kernel columns)."""

    def __init__(self, source: TableSource, table: str, columns: dict[str, type[pl.DataType]]) -> None:
        self._source = source
        self._table = table
        self._columns = columns
        self._cache: pl.DataFrame | None = None
        self._lock = threading.Lock()

    def frame(self) -> pl.DataFrame:
        with self._lock:
            if self._cache is None:
                self._cache = self._source.read(self._table, self._columns)
            return self._cache

    def gather(self, ids: pl.Series, exprs: list[pl.Expr], dtype: pl.DataType | type[pl.DataType]) -> pl.Series:
        """The value of ``exprs`` (over this table's columns) at row ``ids`` (kernel op ids)."""
        frame = self.frame()
        values = frame.select(*exprs).to_series(0).cast(dtype)
        return values.gather(ids.cast(pl.Int64))

    def column(self, row: str, expr: pl.Expr, dtype: pl.DataType | type[pl.DataType]) -> pl.Expr:
        """``expr`` over this table at each row number in column ``row``, read only if selected."""

        def fetch(ids: pl.Series) -> pl.Series:
            return self.gather(ids, [expr], dtype)

        return pl.col(row).map_batches(fetch, return_dtype=dtype, is_elementwise=True)


def _ops_view(
    parts: list[pl.DataFrame],
    names: pl.DataFrame,
    strings: pl.DataFrame,
    lazy_columns: tuple[_LazyColumns, _LazyColumns],
    api: pl.DataFrame,
) -> pl.LazyFrame:
    """kernels + copies + memsets as one lazy frame; names and rarely used kernel columns on demand."""
    kernels, copies, sets = parts
    lazy, kernel_ids = lazy_columns

    def dims(prefix: str) -> pl.Expr:
        cols = [pl.col(f"{prefix}{axis}").cast(pl.String) for axis in "XYZ"]
        return pl.when(pl.col(f"{prefix}X").is_null()).then(None).otherwise(pl.concat_str(cols, separator=","))

    def kernel_col(expr: pl.Expr, dtype: pl.DataType | type[pl.DataType]) -> pl.Expr:
        def fetch(ids: pl.Series) -> pl.Series:
            return lazy.gather(ids, [expr], dtype)

        return pl.col("op_id").map_batches(fetch, return_dtype=dtype, is_elementwise=True)

    named = names.rename({"_str": "name"})

    def name(frame: pl.DataFrame) -> pl.Expr:
        return _lookup("name_id", named, "name", default="", key_dtype=frame.schema["name_id"]).alias("name")

    short = pl.col("shortName").replace_strict(strings["_sid"], strings["_str"], default=None, return_dtype=pl.String)
    head: list[pl.Expr | str] = [
        "op_id",
        "kind",
        "start",
        "end",
        "device_id",
        "stream_id",
        pl.col("correlation_id").cast(I64),
        "global_pid",
    ]
    gtid = _api_gather(api, "global_tid")
    tail: list[pl.Expr | str] = [
        "api_id",
        _api_gather(api, "start").alias("api_start"),
        _api_gather(api, "end").alias("api_end"),
        gtid.alias("global_tid"),
        (gtid % (1 << S.TID_BITS)).alias("tid"),
        pl.col("name_id").cast(I64),
    ]
    kernel_view = kernels.lazy().select(
        *head[:1],
        pl.lit("kernel", OP_KIND).alias("kind"),
        *head[2:4],
        kernel_col(pl.col("deviceId"), I64).alias("device_id"),
        kernel_col(pl.col("streamId"), I64).alias("stream_id"),
        kernel_ids.column("op_id", pl.col("correlationId"), I64).alias("correlation_id"),
        kernel_ids.column("op_id", pl.col("globalPid"), I64).alias("global_pid"),
        name(kernels),
        kernel_col(short, pl.String).alias("short_name"),
        pl.lit(0, I64).alias("bytes"),
        pl.lit(None, I64).alias("copy_kind"),
        kernel_col(dims("grid"), pl.String).alias("grid"),
        kernel_col(dims("block"), pl.String).alias("block"),
        kernel_col(pl.col("graphNodeId"), I64).alias("graph_node_id"),
        *tail,
    )

    def small_view(frame: pl.DataFrame, kind: str) -> pl.LazyFrame:
        return frame.lazy().select(
            *head[:1],
            pl.lit(kind, OP_KIND).alias("kind"),
            *head[2:8],
            name(frame),
            name(frame).alias("short_name"),
            "bytes",
            pl.col("copy_kind") if "copy_kind" in frame.columns else pl.lit(None, I64).alias("copy_kind"),
            pl.lit(None, pl.String).alias("grid"),
            pl.lit(None, pl.String).alias("block"),
            "graph_node_id",
            *tail,
        )

    return pl.concat([kernel_view, small_view(copies, "memcpy"), small_view(sets, "memset")], how="vertical")


# ---- synchronizations ----


def _syncs(sync: pl.DataFrame, api: pl.DataFrame) -> pl.LazyFrame:
    labels = pl.DataFrame(
        {"syncType": list(S.SYNC_TYPE_LABELS), "sync_type": list(S.SYNC_TYPE_LABELS.values())},
        schema={"syncType": I64, "sync_type": pl.String},
    )
    base = (
        sync.join(labels, on="syncType", how="left")
        .select(
            "start",
            "end",
            pl.col("sync_type").fill_null("Unknown"),
            pl.col("correlationId").alias("correlation_id"),
            pl.col("globalPid").alias("global_pid"),
        )
        .sort("start")
        .with_row_index("_row")
    )
    base = base.with_columns(_match_launch(base, api, "_row", _api_processes(api))).drop("_row")
    return base.lazy().with_columns(_api_gather(api, "global_tid").alias("global_tid"))
