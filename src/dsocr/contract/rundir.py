"""The run-directory layout written by ``dsocr capture`` and read by ``dsocr analyze``."""

from __future__ import annotations

from typing import Final

MANIFEST: Final = "manifest.json"
TIMING: Final = "timing.json"
#: The unprofiled baseline pass's timing (same schema as timing.json).
TIMING_BASELINE: Final = "timing-baseline.json"
#: The allocator's memory per operator and stage (``dsocr capture --op-memory``, docs/op-memory-schema.md).
OP_MEMORY: Final = "op_memory.json"
CALIBRATION: Final = "calibration.json"  #: per-primitive GPU times (dsocr calibrate), read by analyze
#: Further unprofiled runs (``--baseline-runs`` above 1): k is the run's 1-based place among the
#: unprofiled runs in execution order; the first run after the profiled pass keeps TIMING_BASELINE.
#: The manifest's ``timing.runs`` lists every run in order with its position and start time.
TIMING_BASELINE_NUMBERED: Final = "timing-baseline-{k}.json"
TIMING_BASELINE_GLOB: Final = "timing-baseline-*.json"
TRACE_REP: Final = "trace.nsys-rep"
TRACE_SQLITE: Final = "trace.sqlite"
TRACE_SQLITE_XZ: Final = "trace.sqlite.xz"
ANALYSIS_JSON: Final = "analysis.json"
REPORT_MD: Final = "report.md"
REPORT_HTML: Final = "report.html"
SUMMARY_MD: Final = "summary.md"
RESULTS_SQLITE: Final = "results.sqlite"
DEFAULT_REPORT_DIR: Final = "dsocr-report"
RUNS_DIR: Final = "runs"

#: Version of analysis.json (docs/analysis-schema.md); bump the major on breaking changes.
ANALYSIS_SCHEMA_VERSION: Final = "1.0"
