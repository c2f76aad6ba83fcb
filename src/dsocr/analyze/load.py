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

from dsocr.analyze import schema as S
from dsocr.analyze.readers import SQLITE_MAGIC, ParquetDirSource, SqliteSource, TableSource
from dsocr.analyze.sweep import as_int, make_timekey, nesting
from dsocr.analyze.trace import GpuInfo, SchemaVersion, Trace, TraceMeta
from dsocr.contract.errors import BadInput, InputNotFound

I64 = pl.Int64
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
        return _load(source, need_cuda=need_cuda, need_nvtx=need_nvtx)
    except (sqlite3.DatabaseError, RuntimeError, OSError, pl.exceptions.PolarsError) as exc:
        raise BadInput(
            f"{path}: cannot be read, the export looks corrupt or truncated ({_one_line(exc)}); export it again"
        ) from exc
    finally:
        source.close()


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

_OP_KEYS: dict[str, type[pl.DataType]] = {
    "start": I64,
    "end": I64,
    "deviceId": I64,
    "streamId": I64,
    "correlationId": I64,
    "globalPid": I64,
    "graphNodeId": I64,
}


def _requests(source: TableSource) -> dict[str, tuple[str, dict[str, type[pl.DataType]]]]:
    nvtx_cols: dict[str, type[pl.DataType]] = {
        "start": I64,
        "end": I64,
        "eventType": I64,
        "text": pl.String,
        "textId": I64,
        "domainId": I64,
        "globalTid": I64,
        "endGlobalTid": I64,
    }
    nvtx_cols.update(dict.fromkeys(S.PAYLOAD_COLUMNS, I64))
    kernel_cols = dict(_OP_KEYS) | {
        "demangledName": I64,
        "shortName": I64,
        **dict.fromkeys(("gridX", "gridY", "gridZ", "blockX", "blockY", "blockZ"), I64),
    }
    return {
        "strings": (S.STRINGS, {"id": I64, "value": pl.String}),
        "nvtx": (S.NVTX, nvtx_cols),
        "kernel": (S.KERNEL, kernel_cols),
        "memcpy": (S.MEMCPY, dict(_OP_KEYS) | {"bytes": I64, "copyKind": I64}),
        "memset": (S.MEMSET, dict(_OP_KEYS) | {"bytes": I64}),
        "runtime": (
            S.RUNTIME,
            {"start": I64, "end": I64, "globalTid": I64, "correlationId": I64, "nameId": I64},
        ),
        "sync": (
            S.SYNC,
            {"start": I64, "end": I64, "correlationId": I64, "globalPid": I64, "syncType": I64},
        ),
        "gpu": (S.GPU_INFO, _GPU_COLUMNS),
        "analysis": (S.ANALYSIS, {"duration": I64, "startTime": I64, "stopTime": I64}),
        "session": (S.SESSION_START, {"utcEpochNs": I64}),
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
    raw = source.read_many(_requests(source))
    strings = raw["strings"].rename({"id": "_sid", "value": "_str"})

    nvtx = raw["nvtx"]
    api = _api(raw["runtime"], strings)
    gpu_ops = _gpu_ops(raw["kernel"], raw["memcpy"], raw["memset"], strings, api)

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
                api["end"].max(),
                gpu_ops["end"].max(),
            )
            if v is not None
        ]
        session_end = max(as_int(v) for v in highs) if highs else 0

    ranges = _ranges(nvtx, strings, session_end)
    tk = make_timekey([ranges.filter(pl.col("ended_on_start_thread")).select("global_tid", "start", "end")])
    tree = nesting(ranges.filter(pl.col("ended_on_start_thread")), tk)
    ranges = ranges.join(tree, on="range_id", how="left").with_columns(pl.col("depth").fill_null(0)).sort("range_id")
    syncs = _syncs(raw["sync"], api)

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
    return Trace(
        meta=meta,
        gpus=_gpus(raw["gpu"]),
        ranges=ranges.lazy(),
        gpu_ops=_with_launch_shape(gpu_ops),
        api=api.lazy(),
        syncs=syncs.lazy(),
    )


def _pid(col: str) -> pl.Expr:
    return (pl.col(col) // (1 << S.TID_BITS)) % (1 << S.TID_BITS)


def _tid(col: str) -> pl.Expr:
    return pl.col(col) % (1 << S.TID_BITS)


def _gpid(col: str) -> pl.Expr:
    """globalPid of a globalTid: the TID bits cleared."""
    return pl.col(col) - pl.col(col) % (1 << S.TID_BITS)


def _ranges(nvtx: pl.DataFrame, strings: pl.DataFrame, session_end: int) -> pl.DataFrame:
    resolved = nvtx.join(strings, left_on="textId", right_on="_sid", how="left").with_columns(
        pl.coalesce("_str", "text").alias("_text"), _pid("globalTid").alias("pid")
    )
    domains = (
        resolved.filter(pl.col("eventType") == S.EVENT_DOMAIN_CREATE)
        .sort("start")
        .group_by("domainId", "pid", maintain_order=True)
        .agg(pl.col("_text").first().alias("domain"))
    )
    payload = pl.coalesce(*(pl.col(c).cast(I64) for c in S.PAYLOAD_COLUMNS))
    message = pl.col("_text").fill_null("")
    return (
        resolved.filter(pl.col("eventType").is_in(S.RANGE_EVENTS))
        .join(domains, on=["domainId", "pid"], how="left")
        .with_row_index("range_id")
        .select(
            pl.col("range_id").cast(pl.UInt32),
            pl.col("start"),
            pl.col("end").fill_null(session_end).alias("end"),
            message.alias("message"),
            pl.col("domain"),
            pl.when(pl.col("domain").is_null()).then(message).otherwise(pl.col("domain") + ":" + message).alias("name"),
            pl.when(pl.col("eventType").is_in(S.PUSHPOP_EVENTS))
            .then(pl.lit("PushPop"))
            .otherwise(pl.lit("StartEnd"))
            .alias("style"),
            pl.col("globalTid").alias("global_tid"),
            pl.col("pid"),
            _tid("globalTid").alias("tid"),
            (pl.col("endGlobalTid").is_null() | (pl.col("endGlobalTid") == pl.col("globalTid"))).alias(
                "ended_on_start_thread"
            ),
            payload.alias("payload"),
        )
    )


def _api(runtime: pl.DataFrame, strings: pl.DataFrame) -> pl.DataFrame:
    names = strings.filter(pl.col("_sid").is_in(runtime["nameId"].unique().drop_nulls().implode())).select(
        pl.col("_sid").alias("nameId"),
        pl.col("_str").str.replace(S.API_VERSION_SUFFIX, "").alias("name"),
    )
    category: pl.Expr = pl.lit("other")
    for cat, pattern in reversed(S.API_CATEGORY_PATTERNS):
        category = pl.when(pl.col("name").str.contains(pattern)).then(pl.lit(cat)).otherwise(category)
    names = names.with_columns(category.alias("category"))
    return (
        runtime.sort("start")
        .with_row_index("api_id")
        .join(names, on="nameId", how="left")
        .select(
            pl.col("api_id").cast(pl.UInt32),
            "start",
            "end",
            pl.col("name").fill_null(""),
            pl.col("correlationId").alias("correlation_id"),
            pl.col("globalTid").alias("global_tid"),
            _pid("globalTid").alias("pid"),
            _tid("globalTid").alias("tid"),
            pl.col("category").fill_null("other"),
        )
        .sort("api_id")
    )


def _launching_api(api: pl.DataFrame) -> pl.DataFrame:
    """API calls keyed by (correlation_id, global_pid), first call kept if a key repeats."""
    return api.select(
        "correlation_id",
        _gpid("global_tid").alias("global_pid"),
        "api_id",
        pl.col("start").alias("api_start"),
        pl.col("end").alias("api_end"),
        "global_tid",
        "tid",
    ).unique(subset=["correlation_id", "global_pid"], keep="first", maintain_order=False)


def _gpu_ops(
    kernel: pl.DataFrame, memcpy: pl.DataFrame, memset: pl.DataFrame, strings: pl.DataFrame, api: pl.DataFrame
) -> pl.DataFrame:
    common: list[pl.Expr | str] = [
        "start",
        "end",
        pl.col("deviceId").alias("device_id"),
        pl.col("streamId").alias("stream_id"),
        pl.col("correlationId").alias("correlation_id"),
        pl.col("globalPid").alias("global_pid"),
        pl.col("graphNodeId").alias("graph_node_id"),
    ]
    dims = ["gridX", "gridY", "gridZ", "blockX", "blockY", "blockZ"]
    kernels = (
        kernel.join(strings.rename({"_str": "name"}), left_on="demangledName", right_on="_sid", how="left")
        .join(strings.rename({"_str": "short_name"}), left_on="shortName", right_on="_sid", how="left")
        .select(
            pl.lit("kernel").alias("kind"),
            *common,
            pl.col("name").fill_null(""),
            pl.col("short_name").fill_null(""),
            pl.lit(0, I64).alias("bytes"),
            pl.lit(None, I64).alias("copy_kind"),
            *dims,
        )
    )
    copy_names = pl.DataFrame(
        {
            "copyKind": list(S.MEMCPY_KIND_LABELS),
            "name": [f"[CUDA memcpy {label}]" for label in S.MEMCPY_KIND_LABELS.values()],
        },
        schema={"copyKind": I64, "name": pl.String},
    )
    no_dims = [pl.lit(None, I64).alias(d) for d in dims]
    copies = memcpy.join(copy_names, on="copyKind", how="left").select(
        pl.lit("memcpy").alias("kind"),
        *common,
        pl.col("name").fill_null("[CUDA memcpy Unknown]"),
        pl.col("name").fill_null("[CUDA memcpy Unknown]").alias("short_name"),
        "bytes",
        pl.col("copyKind").alias("copy_kind"),
        *no_dims,
    )
    sets = memset.select(
        pl.lit("memset").alias("kind"),
        *common,
        pl.lit("[CUDA memset]").alias("name"),
        pl.lit("[CUDA memset]").alias("short_name"),
        "bytes",
        pl.lit(None, I64).alias("copy_kind"),
        *no_dims,
    )
    ops = pl.concat([kernels, copies, sets], how="vertical_relaxed").sort("start", "end")
    return (
        ops.with_row_index("op_id")
        .with_columns(pl.col("op_id").cast(pl.UInt32))
        .join(_launching_api(api), on=["correlation_id", "global_pid"], how="left")
        .sort("op_id")
    )


def _with_launch_shape(ops: pl.DataFrame) -> pl.LazyFrame:
    """Grid/block as ``x,y,z`` strings, computed only if a query selects them."""

    def dim(prefix: str) -> pl.Expr:
        cols = [pl.col(f"{prefix}{axis}").cast(pl.String) for axis in "XYZ"]
        return pl.when(pl.col(f"{prefix}X").is_null()).then(None).otherwise(pl.concat_str(cols, separator=","))

    return (
        ops.lazy()
        .with_columns(dim("grid").alias("grid"), dim("block").alias("block"))
        .drop("gridX", "gridY", "gridZ", "blockX", "blockY", "blockZ")
    )


def _syncs(sync: pl.DataFrame, api: pl.DataFrame) -> pl.DataFrame:
    labels = pl.DataFrame(
        {"syncType": list(S.SYNC_TYPE_LABELS), "sync_type": list(S.SYNC_TYPE_LABELS.values())},
        schema={"syncType": I64, "sync_type": pl.String},
    )
    launching = _launching_api(api).select("correlation_id", "global_pid", "api_id", "global_tid")
    return (
        sync.join(labels, on="syncType", how="left")
        .select(
            "start",
            "end",
            pl.col("sync_type").fill_null("Unknown"),
            pl.col("correlationId").alias("correlation_id"),
            pl.col("globalPid").alias("global_pid"),
        )
        .join(launching, on=["correlation_id", "global_pid"], how="left")
        .sort("start")
    )
