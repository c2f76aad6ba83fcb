"""The result of ``dsocr analyze``: :class:`Analysis` (polars frames; columns in docs/analysis-schema.md),
per file :class:`TraceResult` and :class:`TraceInfo`. Computed by :mod:`dsocr.analyze.pipeline`; its JSON
document from :mod:`dsocr.analyze.analysis_json`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import polars as pl

from dsocr.analyze.analysis_json import analysis_document
from dsocr.analyze.repeats import RepeatTables
from dsocr.analyze.stages import StageTables

if TYPE_CHECKING:
    from dsocr.analyze.analytic_section import AnalyticResult
    from dsocr.analyze.devices import DeviceTables
    from dsocr.analyze.modules import ModuleAttribution, ModuleTimes
    from dsocr.analyze.op_memory import OpMemoryTables
    from dsocr.analyze.workload_from_run import RunFiles


@attrs.frozen
class TraceInfo:
    """What one analyzed trace file is."""

    file: str  #: the path as given (run directory, .sqlite, .sqlite.xz, parquet dir)
    path: str  #: the export actually read
    product_version: str
    schema_version: str
    source_format: str
    gpus: tuple[dict[str, Any], ...]
    has_cuda: bool
    has_nvtx: bool
    duration_ns: int | None
    stage_mode: str  #: ``dsocr`` or ``foreign``
    open_ranges: int = 0  #: NVTX ranges that never closed, left out (integrity.open_ranges_warning)
    #: What the GPU records lost (``kernels``, ``api_calls``: no GPU numbers per stage), or None (integrity.GpuRecords)
    gpu_lost: str | None = None
    #: Whole CUDA graph executions (a capture with ``--cuda-graph-trace graph``: kernels inside graphs not itemized)
    graph_executions: int = 0


@attrs.frozen
class TraceResult:
    """The per-file tables: NVIDIA-equal summaries and this file's stage tables."""

    info: TraceInfo
    nvtx_projection: pl.DataFrame
    kernels: pl.DataFrame
    stages: StageTables
    module_times: ModuleTimes | None = None  #: with --module-ranges captures
    idle_gaps: pl.DataFrame | None = None  #: the longest GPU idle gaps per stage
    #: each process's device (``dsocr.analyze.devices.processes``), only for a trace of several workers
    processes: pl.DataFrame | None = None


@attrs.frozen
class Analysis:
    """Everything ``dsocr analyze`` computed (frames; columns in docs/analysis-schema.md)."""

    traces: tuple[TraceResult, ...]
    stage_instances: pl.DataFrame  #: every file's instances, with ``file`` (index)
    stages: pl.DataFrame  #: per stage name over all files
    categories: pl.DataFrame
    top_kernels: pl.DataFrame
    operators: pl.DataFrame
    repeats: RepeatTables
    warnings: tuple[str, ...] = ()
    idle_gaps: pl.DataFrame = attrs.field(factory=pl.DataFrame)  #: stage, range_id, repeat, page, start_ns, ...
    analytic: AnalyticResult | None = None
    modules: ModuleAttribution | None = None
    run: RunFiles | None = None  #: the run directory's files (first trace), if it is one
    #: per-device tables (``dsocr.analyze.devices``), only when a trace holds several workers
    devices: DeviceTables | None = None
    op_memory: OpMemoryTables | None = None  #: the run directory's op_memory.json (``--op-memory``), if any

    def to_dict(self, *, full_projection: bool = False) -> dict[str, Any]:
        """The ``analysis.json`` document (:func:`dsocr.analyze.analysis_json.analysis_document`)."""
        return analysis_document(self, full_projection=full_projection)
