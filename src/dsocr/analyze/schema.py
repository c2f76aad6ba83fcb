"""Facts about the nsys SQLite/Parquet export schema that the loader relies on.

Checked against exports of nsys 2023.4 (schema 3.7.2) and 2025.3 (3.20.3). Table and column
names are the exporter's own.
"""

from __future__ import annotations

import re
from typing import Final

#: Schema majors the loader understands (a major change breaks queries; minors only add).
SUPPORTED_MAJORS: Final = frozenset({3})
#: The oldest schema tested (nsys 2023.4).
MIN_TESTED: Final = (3, 7)

META_TABLES: Final = ("META_DATA_EXPORT", "EXPORT_META_DATA")

STRINGS: Final = "StringIds"
NVTX: Final = "NVTX_EVENTS"
KERNEL: Final = "CUPTI_ACTIVITY_KIND_KERNEL"
MEMCPY: Final = "CUPTI_ACTIVITY_KIND_MEMCPY"
MEMSET: Final = "CUPTI_ACTIVITY_KIND_MEMSET"
RUNTIME: Final = "CUPTI_ACTIVITY_KIND_RUNTIME"
SYNC: Final = "CUPTI_ACTIVITY_KIND_SYNCHRONIZATION"
GPU_INFO: Final = "TARGET_INFO_GPU"
ANALYSIS: Final = "ANALYSIS_DETAILS"
SESSION_START: Final = "TARGET_INFO_SESSION_START_TIME"
#: One row per CUDA graph execution, from captures with ``--cuda-graph-trace graph`` (schema 3.11+): the
#: kernels inside the graph have no rows of their own then.
GRAPH_TRACE: Final = "CUPTI_ACTIVITY_KIND_GRAPH_TRACE"

CUDA_ACTIVITY_TABLES: Final = frozenset({KERNEL, MEMCPY, MEMSET, GRAPH_TRACE})
#: Tables that mark a directory of Parquet files as an nsys export even without its metadata.
NSYS_TABLES: Final = frozenset({STRINGS, NVTX, RUNTIME}) | CUDA_ACTIVITY_TABLES
#: Schema reported for such an export (the metadata table is what tells the real one).
ASSUMED_SCHEMA: Final = "3.0.0"

# NVTX_EVENTS.eventType values (ENUM_NSYS_EVENT_TYPE).
EVENT_MARK: Final = 34
EVENT_PUSHPOP: Final = 59
EVENT_STARTEND: Final = 60
EVENT_NVTXT_PUSHPOP: Final = 70
EVENT_NVTXT_STARTEND: Final = 71
EVENT_DOMAIN_CREATE: Final = 75
RANGE_EVENTS: Final = (EVENT_PUSHPOP, EVENT_STARTEND, EVENT_NVTXT_PUSHPOP, EVENT_NVTXT_STARTEND)
PUSHPOP_EVENTS: Final = (EVENT_PUSHPOP, EVENT_NVTXT_PUSHPOP)

#: NVTX integer payload columns, in the order they are tried.
PAYLOAD_COLUMNS: Final = ("int64Value", "uint64Value", "int32Value", "uint32Value")

#: globalTid layout: TID bits 0-23, PID bits 24-47.
TID_BITS: Final = 24
ID_MASK: Final = 0xFFFFFF

#: CUPTI memcpy kinds (ENUM_CUDA_MEMCPY_OPER labels), as nsys names the copies.
MEMCPY_KIND_LABELS: Final[dict[int, str]] = {
    0: "Unknown",
    1: "Host-to-Device",
    2: "Device-to-Host",
    3: "Host-to-Array",
    4: "Array-to-Host",
    5: "Array-to-Array",
    6: "Array-to-Device",
    7: "Device-to-Array",
    8: "Device-to-Device",
    9: "Host-to-Host",
    10: "Peer-to-Peer",
    11: "Unified Host-to-Device",
    12: "Unified Device-to-Host",
    13: "Unified Device-to-Device",
}

#: CUPTI synchronization types (ENUM_CUPTI_SYNC_TYPE labels).
SYNC_TYPE_LABELS: Final[dict[int, str]] = {
    0: "Unknown",
    1: "Event sync",
    2: "Stream wait sync",
    3: "Stream sync",
    4: "Context sync",
}

#: API name (version suffix removed) -> category; first match wins. ``sync`` means the host
#: blocks until the device (or a stream/event) is done: ``*Synchronize``. ``cudaStreamWaitEvent``
#: makes a *stream* wait and does not block the host, so it is ``other``, as are the
#: non-blocking polls ``cudaStreamQuery``/``cudaEventQuery``.
API_CATEGORY_PATTERNS: Final[tuple[tuple[str, str], ...]] = (
    ("graph", r"^cu(da)?GraphLaunch"),
    ("launch", r"^cu(da)?Launch(Cooperative)?Kernel|^cuLaunchGrid|^cudaLaunch$"),
    ("memcpy", r"^cu(da)?Memcpy"),
    ("memset", r"^cu(da)?Memset"),
    ("sync", r"Synchronize$"),
)

#: Every API category, in alphabetical order (the values of the ``api.category`` enum).
API_CATEGORIES: Final = ("graph", "launch", "memcpy", "memset", "other", "sync")

#: GPU operation kinds (the values of the ``gpu_ops.kind`` enum); ``graph``: one whole CUDA graph execution
#: (graph-level tracing, :data:`GRAPH_TRACE`).
OP_KINDS: Final = ("kernel", "memcpy", "memset", "graph")

#: ``CUDA graph 7``: the name of a graph execution's row (graph id 7) in the GPU operations.
GRAPH_NAME: Final = "CUDA graph {}"

#: ``cudaLaunchKernel_v7000`` -> ``cudaLaunchKernel``.
API_VERSION_SUFFIX: Final = r"_v\d+$"


def api_category(name: str) -> str:
    """The category of one API name (the same rule the loader applies to the whole column)."""
    base = re.sub(API_VERSION_SUFFIX, "", name)
    for category, pattern in API_CATEGORY_PATTERNS:
        if re.search(pattern, base):
            return category
    return "other"
