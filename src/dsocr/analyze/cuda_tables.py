"""The CUDA tables of a trace: GPUs, API calls, kernels + copies + memsets as one operation frame, and
synchronizations, with the columns each read and the lazy ``Trace`` views over them.
"""

from __future__ import annotations

import polars as pl

from dsocr.analyze import schema as S
from dsocr.analyze.launches import api_gather, api_processes, match_launch
from dsocr.analyze.lookups import I64, lookup, pid_of, tid_of
from dsocr.analyze.trace import GpuInfo

#: ``api.category``: an enum, so that millions of calls carry one byte each, not a string.
API_CATEGORY = pl.Enum(S.API_CATEGORIES)


#: ``gpu_ops.kind``.
OP_KIND = pl.Enum(S.OP_KINDS)


def gpu_infos(df: pl.DataFrame) -> tuple[GpuInfo, ...]:
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


GPU_COLUMNS: dict[str, type[pl.DataType]] = {
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
OP_KEYS: dict[str, type[pl.DataType]] = {"start": I64, "end": I64, "correlationId": I64, "globalPid": I64}


#: Columns of the small copy/memset tables, read at once.
OP_DETAILS: dict[str, type[pl.DataType]] = {"deviceId": I64, "streamId": I64, "graphNodeId": I64, "bytes": I64}


def api_frame(runtime: pl.DataFrame, strings: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
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


def api_view(base: pl.DataFrame, names: pl.DataFrame) -> pl.LazyFrame:
    return base.lazy().select(
        "api_id",
        "start",
        "end",
        lookup("nameId", names, "name", default="", key_dtype=base.schema["nameId"]).alias("name"),
        "global_tid",
        pid_of("global_tid").alias("pid"),
        tid_of("global_tid").alias("tid"),
        lookup("nameId", names, "category", default="other", key_dtype=base.schema["nameId"]).alias("category"),
    )


#: Columns of the whole-graph executions (``--cuda-graph-trace graph``), read at once (one row per graph launch).
GRAPH_COLUMNS: dict[str, type[pl.DataType]] = OP_KEYS | {"deviceId": I64, "streamId": I64, "graphId": I64}


def ops_frames(
    kernel: pl.DataFrame,
    memcpy: pl.DataFrame,
    memset: pl.DataFrame,
    strings: pl.DataFrame,
    api: pl.DataFrame,
    graph: pl.DataFrame | None = None,
) -> tuple[list[pl.DataFrame], pl.DataFrame]:
    """Kernels, copies, memsets and whole-graph executions (numbered in that order) with their launching call,
    and op names (a graph execution is named ``CUDA graph <graphId>``)."""
    if graph is None:
        graph = pl.DataFrame(schema=GRAPH_COLUMNS)
    copy_names = [f"[CUDA memcpy {label}]" for label in S.MEMCPY_KIND_LABELS.values()]
    graph_ids = graph["graphId"].unique().drop_nulls().sort()
    names = pl.concat(
        [
            strings.filter(pl.col("_sid").is_in(kernel["demangledName"].unique().drop_nulls().implode())),
            pl.DataFrame({"_sid": [-1 - k for k in S.MEMCPY_KIND_LABELS], "_str": copy_names}),
            pl.DataFrame({"_sid": [_MEMSET_NAME_ID], "_str": ["[CUDA memset]"]}),
            pl.DataFrame(
                {
                    "_sid": _GRAPH_NAME_BASE - graph_ids,
                    "_str": [S.GRAPH_NAME.format(g) for g in graph_ids.to_list()],
                },
                schema={"_sid": I64, "_str": pl.String},
            ),
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
        graph.select(
            *common,
            (_GRAPH_NAME_BASE - pl.col("graphId")).alias("name_id"),
            *detail[:2],
            pl.lit(None, I64).alias("graph_node_id"),
            pl.lit(0, I64).alias("bytes"),
        ),
    ]
    offset = 0
    numbered = []
    for part in parts:
        numbered.append(part.with_columns(pl.int_range(offset, offset + part.height, dtype=pl.UInt32).alias("op_id")))
        offset += part.height
    api_pids = api_processes(api)
    out = [part.with_columns(match_launch(part, api, "op_id", api_pids)) for part in numbered]
    return out, names


_MEMSET_NAME_ID = -100
#: A graph execution's name id: this less its graph id (below the copies' and memsets' ids).
_GRAPH_NAME_BASE = -1000


def ops_view(parts: list[pl.DataFrame], names: pl.DataFrame, api: pl.DataFrame) -> pl.LazyFrame:
    """kernels + copies + memsets + graph executions as one lazy frame, names looked up when selected (the detail
    columns: :func:`small_details` and :mod:`dsocr.analyze.op_details`)."""
    named = names.rename({"_str": "name"})

    def name(frame: pl.DataFrame) -> pl.Expr:
        return lookup("name_id", named, "name", default="", key_dtype=frame.schema["name_id"]).alias("name")

    gtid = api_gather(api, "global_tid")
    tail: list[pl.Expr | str] = [
        "api_id",
        api_gather(api, "start").alias("api_start"),
        api_gather(api, "end").alias("api_end"),
        gtid.alias("global_tid"),
        (gtid % (1 << S.TID_BITS)).alias("tid"),
        pl.col("name_id").cast(I64),
    ]

    def view(frame: pl.DataFrame, kind: str) -> pl.LazyFrame:
        return frame.lazy().select(
            "op_id",
            pl.lit(kind, OP_KIND).alias("kind"),
            "start",
            "end",
            name(frame),
            "bytes" if "bytes" in frame.columns else pl.lit(0, I64).alias("bytes"),
            pl.col("copy_kind") if "copy_kind" in frame.columns else pl.lit(None, I64).alias("copy_kind"),
            *tail,
        )

    kinds = ("kernel", "memcpy", "memset", "graph")
    return pl.concat([view(frame, kind) for frame, kind in zip(parts, kinds, strict=True)], how="vertical")


def small_details(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """The detail columns the loader holds of the copies, memsets and graph executions (``parts[1:]``)."""
    cols = ["op_id", "device_id", "stream_id", "correlation_id", "global_pid", "graph_node_id", "name_id"]
    typed = [pl.col(c).cast(pl.UInt32 if c == "op_id" else I64) for c in cols]
    return pl.concat([part.select(typed) for part in parts[1:]])


def syncs_view(sync: pl.DataFrame, api: pl.DataFrame) -> pl.LazyFrame:
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
    base = base.with_columns(match_launch(base, api, "_row", api_processes(api))).drop("_row")
    return base.lazy().with_columns(api_gather(api, "global_tid").alias("global_tid"))
