"""The ``analysis.json`` document, typed (docs/analysis-schema.md): built once per ``dsocr analyze`` from the
:class:`~dsocr.analyze.analysis.Analysis`, written as analysis.json, rendered into summary.md, report.html
and the plots (``dsocr.report.adapt``), and read back from analysis.json by ``dsocr diff``.

Tables are lists of row objects (NaN/inf already ``null``); the run directory's documents are their typed
classes (:class:`~dsocr.contract.run_manifest.RunManifest`, :class:`~dsocr.contract.run_timing.RunTiming`,
compacted). Keys keep their order, so the document writes back byte for byte (:mod:`dsocr.contract.jsondoc`).
"""

from __future__ import annotations

from typing import Any

import attrs

from dsocr.contract import jsondoc as jd
from dsocr.contract.run_manifest import RunManifest
from dsocr.contract.run_timing import RunTiming

_rows = jd.listed(jd.obj)
_opt_obj = jd.optional(jd.obj)

#: One table: its rows (column -> value).
Rows = tuple[dict[str, Any], ...]


@attrs.frozen
class AnalysisDocument(jd.JsonDoc):
    """The whole ``analysis.json`` (every key optional on reading: the reader says what it lacks)."""

    schema_version: str | None = jd.field(jd.optional(jd.string))
    trace: dict[str, Any] | None = jd.field(_opt_obj)  #: the first trace: file, versions, GPUs, has_cuda, ...
    warnings: tuple[str, ...] = jd.field(jd.listed(jd.string), (), dump=jd.dump_list)
    traces: Rows = jd.field(
        _rows, (), dump=jd.dump_list
    )  #: several traces: one object per trace (with its projection and kernels)
    nvtx_projection: Rows = jd.field(_rows, (), dump=jd.dump_list)
    nvtx_projection_omitted: dict[str, Any] | None = jd.field(_opt_obj)
    kernels: Rows = jd.field(_rows, (), dump=jd.dump_list)
    stage_nesting: dict[str, Any] | None = jd.field(_opt_obj)  #: only with vision inside prefill
    stages: Rows = jd.field(_rows, (), dump=jd.dump_list)
    stage_instances: Rows = jd.field(_rows, (), dump=jd.dump_list)
    kernel_categories: Rows = jd.field(_rows, (), dump=jd.dump_list)
    top_kernels: Rows = jd.field(_rows, (), dump=jd.dump_list)
    operators: Rows = jd.field(_rows, (), dump=jd.dump_list)
    repeats: dict[str, Any] | None = jd.field(_opt_obj)  #: passes, cv_limit, flagged, per_pass, stats
    idle_gaps: Rows = jd.field(_rows, (), dump=jd.dump_list)
    analytic: dict[str, Any] | None = jd.field(_opt_obj)  #: the analytic model, stage_metrics, MFU spread
    modules: dict[str, Any] | None = jd.field(_opt_obj)
    run_dir: str | None = jd.field(jd.optional(jd.string))
    manifest: RunManifest | None = jd.field(jd.optional(jd.nested(RunManifest)), dump=jd.dump_doc)
    timing: RunTiming | None = jd.field(jd.optional(jd.nested(RunTiming)), dump=jd.dump_doc)  #: compacted
    baseline: RunTiming | None = jd.field(jd.optional(jd.nested(RunTiming)), dump=jd.dump_doc)  #: compacted
    devices: dict[str, Any] | None = jd.field(_opt_obj)  #: data-parallel traces: per device
    op_memory: dict[str, Any] | None = jd.field(_opt_obj)  #: with op_memory.json in the run directory

    @classmethod
    def from_json(cls, data: Any, source: str = "analysis.json") -> AnalysisDocument:
        """Build from JSON data; BadInput names ``source`` and the field on a bad value."""
        return jd.parse(cls, data, jd.Where(source))

    def repeats_value(self, key: str) -> Any:
        """One key of ``repeats`` (None when absent)."""
        return (self.repeats or {}).get(key)

    def trace_value(self, key: str) -> Any:
        """One fact of the first trace (None when absent)."""
        return (self.trace or {}).get(key)
