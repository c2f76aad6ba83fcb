"""Columns few analyses need, read from the export when one asks for them, then joined by row id.

The loader keeps what every analysis reads (times, names, launching calls). A GPU operation's device,
stream, correlation id, process, short name, grid, block and graph node, and an API call's correlation
id, cost a scan of the largest tables, so :func:`with_op_details` / :func:`with_api_details` read them
explicitly (kernels and API calls from the export, copies, memsets and graph executions from memory)
before the caller's lazy query joins them on ``op_id`` / ``api_id``: no read hides inside a polars
expression.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Final

import attrs
import polars as pl

from dsocr.analyze import schema as S
from dsocr.analyze.lookups import I64, lookup
from dsocr.analyze.readers import TableSource
from dsocr.analyze.trace import Trace

#: The detail columns of ``gpu_ops`` (dtype), in this order.
OP_DETAIL_COLUMNS: Final[dict[str, pl.DataType | type[pl.DataType]]] = {
    "device_id": I64,
    "stream_id": I64,
    "correlation_id": I64,
    "global_pid": I64,
    "short_name": pl.String,
    "grid": pl.String,
    "block": pl.String,
    "graph_node_id": I64,
}

#: The detail columns of ``api``.
API_DETAIL_COLUMNS: Final[dict[str, pl.DataType | type[pl.DataType]]] = {"correlation_id": I64}

#: The kernel table's columns behind each detail column.
_KERNEL_SOURCES: Final[dict[str, tuple[str, ...]]] = {
    "device_id": ("deviceId",),
    "stream_id": ("streamId",),
    "correlation_id": ("correlationId",),
    "global_pid": ("globalPid",),
    "short_name": ("shortName",),
    "grid": ("gridX", "gridY", "gridZ"),
    "block": ("blockX", "blockY", "blockZ"),
    "graph_node_id": ("graphNodeId",),
}


def _dims(prefix: str) -> pl.Expr:
    cols = [pl.col(f"{prefix}{axis}").cast(pl.String) for axis in "XYZ"]
    return pl.when(pl.col(f"{prefix}X").is_null()).then(None).otherwise(pl.concat_str(cols, separator=","))


@attrs.define(eq=False)
class TraceDetails:
    """Where the detail columns of one loaded trace come from.

    ``small``: ``op_id``, ``device_id``, ``stream_id``, ``correlation_id``, ``global_pid``,
    ``graph_node_id``, ``name_id`` of the copies, memsets and graph executions (in memory); ``names``:
    ``_sid`` -> ``_str`` of their names. Kernels are op ids ``0..kernels-1`` and API calls ids
    ``0..n-1``, both in table order.
    """

    source: TableSource
    strings: pl.DataFrame
    small: pl.DataFrame
    names: pl.DataFrame
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    def _kernel_table(self, columns: Sequence[str]) -> pl.DataFrame:
        wanted = {c: I64 for name in columns for c in _KERNEL_SOURCES[name]}
        with self._lock:  # the Dask path may ask from several threads
            raw = self.source.read(S.KERNEL, wanted)
        short = pl.col("shortName").replace_strict(
            self.strings["_sid"], self.strings["_str"], default=None, return_dtype=pl.String
        )
        exprs = {
            "short_name": short,
            "grid": _dims("grid"),
            "block": _dims("block"),
            **{name: pl.col(src[0]) for name, src in _KERNEL_SOURCES.items() if len(src) == 1 and name != "short_name"},
        }
        return raw.select(
            pl.int_range(raw.height, dtype=pl.UInt32).alias("op_id"),
            *(exprs[c].cast(OP_DETAIL_COLUMNS[c]).alias(c) for c in columns),
        )

    def ops(self, columns: Sequence[str]) -> pl.DataFrame:
        """``op_id`` and ``columns`` (of :data:`OP_DETAIL_COLUMNS`) of every GPU operation: the kernels' read now."""
        unknown = [c for c in columns if c not in OP_DETAIL_COLUMNS]
        if unknown:
            raise ValueError(f"not detail columns of gpu_ops: {unknown}")
        kernels = self._kernel_table(columns)
        named = self.names.rename({"_str": "short_name"})
        small = self.small.select(
            "op_id",
            *(
                lookup("name_id", named, "short_name", default="", key_dtype=self.small.schema["name_id"]).alias(c)
                if c == "short_name"
                else pl.lit(None, pl.String).alias(c)
                if c in ("grid", "block")
                else pl.col(c).cast(OP_DETAIL_COLUMNS[c])
                for c in columns
            ),
        )
        return pl.concat([kernels, small], how="vertical")

    def api(self, columns: Sequence[str]) -> pl.DataFrame:
        """``api_id`` and ``columns`` (of :data:`API_DETAIL_COLUMNS`) of every API call, read now."""
        unknown = [c for c in columns if c not in API_DETAIL_COLUMNS]
        if unknown:
            raise ValueError(f"not detail columns of api: {unknown}")
        with self._lock:
            raw = self.source.read(S.RUNTIME, {"correlationId": I64})
        return raw.select(
            pl.int_range(raw.height, dtype=pl.UInt32).alias("api_id"),
            *(pl.col("correlationId").alias(c) for c in columns),
        )


def with_op_details(trace: Trace, ops: pl.LazyFrame, columns: Sequence[str]) -> pl.LazyFrame:
    """``ops`` (a frame with ``op_id`` from ``trace.gpu_ops``) with the detail ``columns`` joined on, read from
    the export here (a trace built in memory, without ``details``, carries them in ``gpu_ops``)."""
    details = trace.details
    missing = [c for c in columns if c not in ops.collect_schema()]
    if details is None or not missing:
        return ops
    return ops.join(details.ops(missing).lazy(), on="op_id", how="left", maintain_order="left")


def with_api_details(trace: Trace, api: pl.LazyFrame, columns: Sequence[str]) -> pl.LazyFrame:
    """``api`` (a frame with ``api_id`` from ``trace.api``) with the detail ``columns`` joined on, read from the
    export here."""
    details = trace.details
    missing = [c for c in columns if c not in api.collect_schema()]
    if details is None or not missing:
        return api
    return api.join(details.api(missing).lazy(), on="api_id", how="left", maintain_order="left")
