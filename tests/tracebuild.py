"""Build small nsys-shaped SQLite exports by hand, for unit tests.

The tables and columns carry the exporter's real names (schema 3.20 by default, 3.7 with
``schema="3.7.2"``); like ``nsys export`` in its default lazy mode, a table is created only if
it has rows (``force_tables`` creates empty ones too). Times are integer ns. Example::

    b = TraceBuilder()
    t = b.thread(pid=10, tid=11)
    b.range(t, 0, 100, "outer")
    corr = b.api(t, 10, 20, "cudaLaunchKernel_v7000")
    b.kernel(corr, 30, 40, "gemm", pid=10)
    path = b.write(tmp_path / "t.sqlite")
"""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path
from typing import Any

VM_BITS = 1 << 48

_NVTX_COLUMNS = [
    "start",
    "end",
    "eventType",
    "rangeId",
    "category",
    "color",
    "text",
    "globalTid",
    "endGlobalTid",
    "textId",
    "domainId",
    "uint64Value",
    "int64Value",
    "doubleValue",
    "uint32Value",
    "int32Value",
    "floatValue",
    "jsonTextId",
    "jsonText",
]

_TABLES: dict[str, list[str]] = {
    "StringIds": ["id", "value"],
    "NVTX_EVENTS": _NVTX_COLUMNS,
    "CUPTI_ACTIVITY_KIND_RUNTIME": [
        "start",
        "end",
        "eventClass",
        "globalTid",
        "correlationId",
        "nameId",
        "returnValue",
        "callchainId",
    ],
    "CUPTI_ACTIVITY_KIND_KERNEL": [
        "start",
        "end",
        "deviceId",
        "contextId",
        "streamId",
        "correlationId",
        "globalPid",
        "demangledName",
        "shortName",
        "mangledName",
        "launchType",
        "gridX",
        "gridY",
        "gridZ",
        "blockX",
        "blockY",
        "blockZ",
        "graphNodeId",
    ],
    "CUPTI_ACTIVITY_KIND_MEMCPY": [
        "start",
        "end",
        "deviceId",
        "contextId",
        "streamId",
        "correlationId",
        "globalPid",
        "bytes",
        "copyKind",
        "graphNodeId",
    ],
    "CUPTI_ACTIVITY_KIND_MEMSET": [
        "start",
        "end",
        "deviceId",
        "contextId",
        "streamId",
        "correlationId",
        "globalPid",
        "value",
        "bytes",
        "graphNodeId",
    ],
    "CUPTI_ACTIVITY_KIND_SYNCHRONIZATION": [
        "start",
        "end",
        "deviceId",
        "contextId",
        "streamId",
        "correlationId",
        "globalPid",
        "syncType",
        "eventId",
    ],
    "CUPTI_ACTIVITY_KIND_GRAPH_TRACE": [
        "start",
        "end",
        "deviceId",
        "contextId",
        "greenContextId",
        "streamId",
        "correlationId",
        "globalPid",
        "graphId",
        "graphExecId",
    ],
    "TARGET_INFO_GPU": [
        "vmId",
        "id",
        "name",
        "busLocation",
        "l2CacheSize",
        "totalMemory",
        "memoryBandwidth",
        "clockRate",
        "smCount",
        "uuid",
        "chipName",
        "computeMajor",
        "computeMinor",
    ],
    "ANALYSIS_DETAILS": ["globalVid", "duration", "startTime", "stopTime"],
    "TARGET_INFO_SESSION_START_TIME": ["utcEpochNs", "utcTime", "localTime"],
    "META_DATA_EXPORT": ["name", "value"],
}

_TEXT_COLUMNS = {"value", "text", "jsonText", "name", "busLocation", "uuid", "chipName", "utcTime", "localTime"}


def gtid(pid: int, tid: int) -> int:
    """A globalTid as nsys encodes it (VM id in bit 48, PID bits 24-47, TID bits 0-23)."""
    return VM_BITS | (pid << 24) | tid


class TraceBuilder:
    """Collects rows, then writes them as an nsys SQLite export."""

    def __init__(self, schema: str = "3.20.3", product: str = "2025.3.2.0") -> None:
        self.schema = schema
        self.product = product
        self.rows: dict[str, list[dict[str, Any]]] = {name: [] for name in _TABLES}
        self._strings: dict[str, int] = {}
        self._corr = itertools.count(1)
        self._domains = itertools.count(1)
        self.session: tuple[int, int] | None = (0, 1_000_000)

    def string(self, value: str) -> int:
        """The StringIds id of ``value`` (added on first use)."""
        if value not in self._strings:
            self._strings[value] = len(self._strings) + 1
            self.rows["StringIds"].append({"id": self._strings[value], "value": value})
        return self._strings[value]

    def thread(self, pid: int = 100, tid: int = 100) -> int:
        """The globalTid of (pid, tid)."""
        return gtid(pid, tid)

    def domain(self, name: str, thread: int, start: int = 0, *, registered: bool = False) -> int:
        """Create an NVTX domain (event type 75) and return its domainId."""
        domain_id = next(self._domains)
        row = {"start": start, "eventType": 75, "globalTid": thread, "domainId": domain_id}
        row |= {"textId": self.string(name)} if registered else {"text": name}
        self.rows["NVTX_EVENTS"].append(row)
        return domain_id

    def range(
        self,
        thread: int,
        start: int,
        end: int | None,
        text: str,
        *,
        domain: int = 0,
        style: str = "PushPop",
        registered: bool = False,
        payload: int | None = None,
        payload_column: str = "int64Value",
        end_thread: int | None = None,
    ) -> None:
        """An NVTX range; ``end=None`` leaves it open at exit, ``end_thread`` ends it elsewhere."""
        row: dict[str, Any] = {
            "start": start,
            "end": end,
            "eventType": 59 if style == "PushPop" else 60,
            "globalTid": thread,
            "endGlobalTid": end_thread,
            "domainId": domain,
            "color": 255,
        }
        row |= {"textId": self.string(text)} if registered else {"text": text}
        if payload is not None:
            row[payload_column] = payload
        self.rows["NVTX_EVENTS"].append(row)

    def mark(self, thread: int, at: int, text: str, *, domain: int = 0) -> None:
        """An NVTX mark (event type 34): not a range."""
        self.rows["NVTX_EVENTS"].append(
            {"start": at, "eventType": 34, "globalTid": thread, "domainId": domain, "text": text}
        )

    def api(self, thread: int, start: int, end: int, name: str, *, correlation: int | None = None) -> int:
        """A CUDA runtime/driver API call; returns its correlation id."""
        corr = next(self._corr) if correlation is None else correlation
        self.rows["CUPTI_ACTIVITY_KIND_RUNTIME"].append(
            {
                "start": start,
                "end": end,
                "eventClass": 0,
                "globalTid": thread,
                "correlationId": corr,
                "nameId": self.string(name),
                "returnValue": 0,
            }
        )
        return corr

    def _gpid(self, pid: int) -> int:
        return VM_BITS | (pid << 24)

    def kernel(
        self,
        correlation: int,
        start: int,
        end: int,
        name: str,
        *,
        pid: int = 100,
        short: str | None = None,
        stream: int = 7,
        grid: tuple[int, int, int] = (1, 1, 1),
        block: tuple[int, int, int] = (128, 1, 1),
        graph_node: int | None = None,
    ) -> None:
        """A kernel launched by the API call with ``correlation`` in process ``pid``."""
        self.rows["CUPTI_ACTIVITY_KIND_KERNEL"].append(
            {
                "start": start,
                "end": end,
                "deviceId": 0,
                "contextId": 1,
                "streamId": stream,
                "correlationId": correlation,
                "globalPid": self._gpid(pid),
                "demangledName": self.string(name),
                "shortName": self.string(short or name.split("(")[0]),
                "mangledName": self.string("_Z" + name),
                "launchType": 0,
                "gridX": grid[0],
                "gridY": grid[1],
                "gridZ": grid[2],
                "blockX": block[0],
                "blockY": block[1],
                "blockZ": block[2],
                "graphNodeId": graph_node,
            }
        )

    def memcpy(self, correlation: int, start: int, end: int, nbytes: int, kind: int = 1, *, pid: int = 100) -> None:
        """A copy (kind 1 HtoD, 2 DtoH, 8 DtoD)."""
        self.rows["CUPTI_ACTIVITY_KIND_MEMCPY"].append(
            {
                "start": start,
                "end": end,
                "deviceId": 0,
                "contextId": 1,
                "streamId": 7,
                "correlationId": correlation,
                "globalPid": self._gpid(pid),
                "bytes": nbytes,
                "copyKind": kind,
            }
        )

    def memset(self, correlation: int, start: int, end: int, nbytes: int, *, pid: int = 100) -> None:
        """A memset."""
        self.rows["CUPTI_ACTIVITY_KIND_MEMSET"].append(
            {
                "start": start,
                "end": end,
                "deviceId": 0,
                "contextId": 1,
                "streamId": 7,
                "correlationId": correlation,
                "globalPid": self._gpid(pid),
                "value": 0,
                "bytes": nbytes,
            }
        )

    def graph_exec(
        self, correlation: int, start: int, end: int, graph_id: int, *, exec_id: int = 1, pid: int = 100
    ) -> None:
        """A whole CUDA graph execution (``--cuda-graph-trace graph``) launched by the call with ``correlation``."""
        self.rows["CUPTI_ACTIVITY_KIND_GRAPH_TRACE"].append(
            {
                "start": start,
                "end": end,
                "deviceId": 0,
                "contextId": 1,
                "streamId": 7,
                "correlationId": correlation,
                "globalPid": self._gpid(pid),
                "graphId": graph_id,
                "graphExecId": exec_id,
            }
        )

    def sync(self, correlation: int, start: int, end: int, sync_type: int = 3, *, pid: int = 100) -> None:
        """A CUPTI synchronization record (3 stream sync, 4 context sync)."""
        self.rows["CUPTI_ACTIVITY_KIND_SYNCHRONIZATION"].append(
            {
                "start": start,
                "end": end,
                "deviceId": 0,
                "contextId": 1,
                "streamId": 7,
                "correlationId": correlation,
                "globalPid": self._gpid(pid),
                "syncType": sync_type,
            }
        )

    def gpu(self, name: str = "NVIDIA H100 80GB HBM3", sm_count: int = 132) -> None:
        """A TARGET_INFO_GPU row."""
        self.rows["TARGET_INFO_GPU"].append(
            {
                "vmId": VM_BITS,
                "id": 0,
                "name": name,
                "busLocation": "0000:00:06.0",
                "l2CacheSize": 52428800,
                "totalMemory": 85017493504,
                "memoryBandwidth": 3352320000000,
                "clockRate": 1980000000,
                "smCount": sm_count,
                "uuid": "00000000-0000-0000-0000-000000000000",
                "chipName": "GH100",
                "computeMajor": 9,
                "computeMinor": 0,
            }
        )

    def _meta(self) -> list[dict[str, Any]]:
        major, minor, micro = [*self.schema.split("."), "0", "0"][:3]
        values = {
            "EXPORT_PRODUCT_NAME": "NVIDIA Nsight Systems",
            "EXPORT_PRODUCT_VERSION": self.product,
            "EXPORT_SCHEMA_VERSION": self.schema,
            "EXPORT_SCHEMA_VERSION_MAJOR": major,
            "EXPORT_SCHEMA_VERSION_MINOR": minor,
            "EXPORT_SCHEMA_VERSION_MICRO": micro,
        }
        return [{"name": k, "value": v} for k, v in values.items()]

    def write(
        self,
        path: Path,
        *,
        force_tables: tuple[str, ...] = (),
        drop_tables: tuple[str, ...] = (),
        meta_table: str | None = "META_DATA_EXPORT",
    ) -> Path:
        """Write the export to ``path`` (replacing it) and return ``path``."""
        rows = {k: list(v) for k, v in self.rows.items()}
        if self.session is not None:
            start, stop = self.session
            rows["ANALYSIS_DETAILS"] = [
                {"globalVid": VM_BITS, "duration": stop - start, "startTime": start, "stopTime": stop}
            ]
            rows["TARGET_INFO_SESSION_START_TIME"] = [{"utcEpochNs": 1_700_000_000_000_000_000}]
        rows["META_DATA_EXPORT"] = self._meta() if meta_table else []
        path.unlink(missing_ok=True)
        con = sqlite3.connect(path)
        try:
            for table, columns in _TABLES.items():
                if table in drop_tables or (not rows[table] and table not in force_tables):
                    continue
                cols = columns
                if table == "NVTX_EVENTS" and self.schema.startswith("3.20"):
                    cols = [*columns, "binaryData"]
                name = meta_table if table == "META_DATA_EXPORT" and meta_table else table
                decl = ", ".join(f"{c} {'TEXT' if c in _TEXT_COLUMNS else 'INTEGER'}" for c in cols)
                con.execute(f"CREATE TABLE {name} ({decl})")
                con.executemany(
                    f"INSERT INTO {name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    [tuple(r.get(c) for c in cols) for r in rows[table]],
                )
            con.commit()
        finally:
            con.close()
        return path
