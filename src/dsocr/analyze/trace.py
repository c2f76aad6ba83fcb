"""The loaded trace: what every analysis reads (the interface between loading and analysis).

:func:`dsocr.analyze.load.load_trace` fills a :class:`Trace` from an nsys SQLite export or a
``parquetdir`` export. All times are integer ns on the export's own time base (as stored in
the export and printed by NVIDIA's reports; ``meta.session_start_ns``/``session_end_ns`` bound
the session). Frames are lazy; each analysis selects the columns it needs, and only what it
selects is computed (names are looked up in memory). Rarely used columns (the *detail columns*
below) are not in the frames of a loaded trace: :func:`dsocr.analyze.op_details.with_op_details` and
``with_api_details`` read them from the export, explicitly, and join them on. On big traces select
few columns (group kernels by ``name_id`` and look the names up afterwards, rather than carrying
``name`` through millions of rows).

Columns (dtype) of each frame
-----------------------------
``ranges`` (NVTX push/pop and start/end ranges, one row per range instance, in the order
of the export's table; marks and domain/category/thread-name events are not here, nor ranges
that never closed, counted in ``meta.open_ranges``):
    ``range_id`` (u32, row number, unique), ``start`` (i64), ``end`` (i64), ``message`` (str),
    ``domain`` (str, null for the default domain), ``name`` (str: ``domain:message``, or the bare message in the default
    domain, as NVIDIA's 2023.4 report scripts print it), ``style`` (str: ``PushPop`` or
    ``StartEnd``), ``global_tid`` (i64), ``pid`` (i64), ``tid`` (i64),
    ``ended_on_start_thread`` (bool), ``payload`` (i64, null when there is no integer payload),
    ``depth`` (u32, nesting level on the thread, 0 = outermost),
    ``parent_id`` (u32, the enclosing range on the same thread, null at depth 0; the enclosing
    range that starts last, which for nested ranges is the innermost). Ranges that ended on
    another thread than they started on have depth 0, no parent and enclose nothing.
``gpu_ops`` (kernels, memcpys, memsets, CUDA graph executions; one row per GPU operation; kernels first,
then copies, then memsets, then graph executions, each in table order; graph executions exist only in
captures with ``--cuda-graph-trace graph``, where the kernels inside a graph have no rows):
    ``op_id`` (u32, row number, unique), ``kind`` (enum of str: ``kernel``, ``memcpy``, ``memset``,
    ``graph``), ``start``, ``end`` (i64), ``name`` (str: kernel demangled name;
    ``[CUDA memcpy Host-to-Device]`` style names for copies and ``[CUDA memset]`` for memsets, as nsys
    prints them, ``CUDA graph <graphId>`` for a graph execution), ``bytes`` (i64, 0 for kernels),
    ``copy_kind`` (i64, null unless memcpy: 1 HtoD, 2 DtoH, 8 DtoD, 10 PtoP), and from the launching API
    call (joined by correlation id within the process; null when none was recorded): ``api_id`` (u32),
    ``api_start``, ``api_end`` (i64), ``global_tid``, ``tid`` (i64); ``name_id`` (i64: the
    ``StringIds`` id of a kernel's name, negative ids for copies, memsets and graph executions; same
    name, same id).
    Detail columns (``with_op_details``): ``device_id``, ``stream_id``, ``correlation_id``,
    ``global_pid`` (i64), ``short_name`` (str), ``grid`` (str ``x,y,z`` or null), ``block`` (str or
    null), ``graph_node_id`` (i64 or null).
``api`` (CUDA runtime and driver API calls, one row per call, in table order):
    ``api_id`` (u32, row number), ``start``, ``end`` (i64), ``name`` (str, e.g. ``cudaLaunchKernel``,
    version suffix ``_v7000`` removed), ``global_tid``, ``pid``, ``tid`` (i64), ``category`` (enum of
    str, one byte per call: ``launch``, ``memcpy``, ``memset``, ``sync``, ``graph``, ``other``, ordered
    alphabetically; ``sync`` is a host-blocking ``*Synchronize`` call, see
    :data:`dsocr.analyze.schema.API_CATEGORY_PATTERNS`).
    Detail column (``with_api_details``): ``correlation_id`` (i64).
``syncs`` (CUPTI synchronization records: the host waiting on the device):
    ``start``, ``end`` (i64), ``sync_type`` (str), ``correlation_id``, ``global_pid`` (i64),
    ``api_id`` (u32 or null), ``global_tid`` (i64 or null).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import polars as pl

from dsocr.analyze.sweep import Enclosing, RangeIndex

if TYPE_CHECKING:
    from dsocr.analyze.op_details import TraceDetails


@attrs.frozen
class SchemaVersion:
    """An export schema version such as 3.20.3."""

    major: int
    minor: int
    micro: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.micro}"


@attrs.frozen
class GpuInfo:
    """One GPU as ``TARGET_INFO_GPU`` describes it."""

    device_id: int
    name: str
    chip_name: str | None = None
    sm_count: int | None = None
    clock_hz: int | None = None
    memory_bandwidth_bps: int | None = None
    total_memory_bytes: int | None = None
    l2_cache_bytes: int | None = None
    compute_capability: str | None = None
    uuid: str | None = None


@attrs.frozen
class OpenRanges:
    """The NVTX ranges that never closed (``end`` null in the export), left out of ``Trace.ranges``."""

    count: int = 0
    #: The most frequent names (``domain:message``) with their counts, most frequent first.
    names: tuple[tuple[str, int], ...] = ()

    def __str__(self) -> str:
        """``3 NVTX ranges never closed (dsocr:decode x2, dsocr:repeat x1)``; long names cut."""
        shown = ", ".join(f"{_cut(n or '(unnamed)')} x{c}" for n, c in self.names)
        more = ", ..." if sum(c for _, c in self.names) < self.count else ""
        ranges = "NVTX range" if self.count == 1 else "NVTX ranges"
        return f"{self.count:,} {ranges} never closed" + (f" ({shown}{more})" if shown else "")


def _cut(name: str, limit: int = 48) -> str:
    return name if len(name) <= limit else name[: limit - 3] + "..."


@attrs.frozen
class TraceMeta:
    """What the export says about itself."""

    path: Path
    product_version: str  #: e.g. ``2025.3.2.0``
    schema: SchemaVersion
    source_format: str  #: ``sqlite`` or ``parquetdir``
    tables: frozenset[str]
    session_start_utc_ns: int | None = None
    duration_ns: int | None = None
    session_start_ns: int | None = None  #: ANALYSIS_DETAILS.startTime, on the trace time base
    session_end_ns: int | None = None  #: ANALYSIS_DETAILS.stopTime (or start + duration)
    open_ranges: OpenRanges = OpenRanges()  #: ranges never closed, left out of ``ranges``

    @property
    def has_cuda(self) -> bool:
        """Whether the export holds any CUDA activity (kernels, copies, memsets, whole-graph executions)."""
        return bool(
            self.tables
            & {
                "CUPTI_ACTIVITY_KIND_KERNEL",
                "CUPTI_ACTIVITY_KIND_MEMCPY",
                "CUPTI_ACTIVITY_KIND_MEMSET",
                "CUPTI_ACTIVITY_KIND_GRAPH_TRACE",
            }
        )

    @property
    def has_nvtx(self) -> bool:
        """Whether the export holds an NVTX table."""
        return "NVTX_EVENTS" in self.tables


@attrs.define(eq=False)
class TraceIndex:
    """What later steps reuse from earlier ones on one trace, filled on first use."""

    #: The ranges that ended on their own thread, sorted for the attribution sweep (the loader's, or built
    #: by :func:`dsocr.analyze.attribution.trace_range_index` for a trace made without one).
    ranges: RangeIndex | None = None
    #: Every API call's enclosing ranges, found by :func:`dsocr.analyze.attribution.attribute` and reused
    #: by the projection (over ``ranges``).
    api_enclosing: Enclosing | None = None


@attrs.frozen
class Trace:
    """A loaded trace: metadata and lazy frames (columns in the module docstring)."""

    meta: TraceMeta
    gpus: tuple[GpuInfo, ...]
    ranges: pl.LazyFrame
    gpu_ops: pl.LazyFrame
    api: pl.LazyFrame
    syncs: pl.LazyFrame
    #: Intermediate results later steps reuse (an implementation detail, filled on first use).
    index: TraceIndex = attrs.field(factory=TraceIndex, eq=False, repr=False)
    #: Where the detail columns come from (:mod:`dsocr.analyze.op_details`); None for a trace built in memory,
    #: whose frames carry them.
    details: TraceDetails | None = attrs.field(default=None, eq=False, repr=False)
