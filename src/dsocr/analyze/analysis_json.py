"""The ``analysis.json`` document of an :class:`~dsocr.analyze.analysis.Analysis` (docs/analysis-schema.md):
table rows with NaN/inf as ``None``, the projection without per-instance operator ranges unless asked.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

import attrs
import polars as pl

from dsocr.analyze.repeats import CV_LIMIT

if TYPE_CHECKING:
    from dsocr.analyze.analysis import Analysis, TraceInfo, TraceResult
from dsocr.contract import rundir
from dsocr.contract.jsondoc import JsonDoc


def _json(doc: JsonDoc | None) -> dict[str, Any] | None:
    return doc.to_json() if doc is not None else None


def analysis_document(analysis: Analysis, *, full_projection: bool = False) -> dict[str, Any]:
    """The ``analysis.json`` document (NaN/inf in the tables as ``None``).

    Without ``full_projection`` the ``nvtx_projection`` rows of per-instance operator
    ranges (``aten::...`` with a unique ``op_id``, from ``--op-ranges`` captures) are left
    out; ``nvtx_projection_omitted`` says how many and where they are (results.sqlite).
    """
    from dsocr.analyze.workload_from_run import compact_timing

    first = analysis.traces[0]
    extra: dict[str, Any] = {}
    if analysis.run is not None:
        extra = {
            "run_dir": str(analysis.run.directory),
            "manifest": _json(analysis.run.manifest),
            "timing": _json(compact_timing(analysis.run.timing)),
            "baseline": _json(compact_timing(analysis.run.baseline)),
        }

    def projection(t: TraceResult) -> dict[str, Any]:
        rows, omitted = _projection_rows(t.nvtx_projection, full_projection)
        return {"nvtx_projection": rows, "nvtx_projection_omitted": omitted}

    return {
        "schema_version": rundir.ANALYSIS_SCHEMA_VERSION,
        "trace": _info_dict(first.info),
        "warnings": list(analysis.warnings),  # first: a broken or partial trace shows at the top
        "traces": [{**_info_dict(t.info), **projection(t), "kernels": table_rows(t.kernels)} for t in analysis.traces]
        if len(analysis.traces) > 1
        else [],
        **projection(first),
        "kernels": table_rows(first.kernels),
        **_nesting_dict(analysis),
        "stages": table_rows(analysis.stages),
        "stage_instances": table_rows(analysis.stage_instances),
        "kernel_categories": table_rows(analysis.categories),
        "top_kernels": table_rows(analysis.top_kernels),
        "operators": table_rows(analysis.operators),
        "repeats": {
            "passes": analysis.repeats.passes,
            "cv_limit": CV_LIMIT,
            "flagged": list(analysis.repeats.flagged),
            "per_pass": table_rows(analysis.repeats.per_pass),
            "stats": table_rows(analysis.repeats.stats),
        },
        "idle_gaps": table_rows(analysis.idle_gaps),
        "analytic": analysis.analytic.doc if analysis.analytic is not None else None,
        "modules": analysis.modules.to_dict() if analysis.modules is not None else None,
        **extra,
        **({"devices": analysis.devices.to_dict()} if analysis.devices is not None else {}),
        **_op_memory_dict(analysis),
    }


def _op_memory_dict(analysis: Analysis) -> dict[str, Any]:
    """``op_memory`` (only when the run directory has op_memory.json; docs/analysis-schema.md)."""
    mem = analysis.op_memory
    if mem is None:
        return {}
    return {
        "op_memory": {
            "device": mem.device,
            "measures": mem.measures,
            "top_n": mem.top_n,
            "stages": table_rows(mem.stages),
            "operators": table_rows(mem.operators),
        }
    }


def _nesting_dict(analysis: Analysis) -> dict[str, Any]:
    """``stage_nesting``, only for traces with vision inside (or overlapping) prefill: a trace with
    vision beside prefill (dsocr's own capture) gives the document it always had."""
    from dsocr.analyze import nesting as ns

    found = [(t.info.file, t.stages.nesting) for t in analysis.traces if t.stages.nesting is not None]
    if all(n.shape == ns.BESIDE for _, n in found):
        return {}
    exclusive = any(n.exclusive for _, n in found)
    shapes = {n.shape for _, n in found}
    return {
        "stage_nesting": {
            "shape": shapes.pop() if len(shapes) == 1 else ns.MIXED,
            "host": ns.HOST,
            "nested": ns.GUEST,
            "note": ns.NOTE,
            "exclusive_columns": list(ns.EXCL_COLUMNS) if exclusive else [],
            "files": [n.to_dict(f) for f, n in found],
        }
    }


#: ``nvtx_projection`` rows of one operator range instance each (``--op-ranges`` names carry a unique op_id).
PER_INSTANCE_OP_RANGE: Final = r", op_id = \d+"


#: Keys of :meth:`Analysis.to_dict` whose values are table rows (already free of NaN/inf).
TABLE_KEYS: Final = frozenset(
    {
        "traces",
        "nvtx_projection",
        "kernels",
        "stages",
        "stage_instances",
        "kernel_categories",
        "top_kernels",
        "operators",
        "idle_gaps",
    }
)


def _projection_rows(df: pl.DataFrame, full: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The projection rows for analysis.json and what was left out of them."""
    kept = df if full or df.is_empty() else df.filter(~pl.col("range").str.contains(PER_INSTANCE_OP_RANGE))
    omitted = {
        "rows": df.height - kept.height,
        "what": "per-instance operator ranges (aten::..., op_id = N); the operators table groups them",
        "where": f"{rundir.RESULTS_SQLITE} table nvtx_projection (all rows)",
        "option": "--full-projection puts them in analysis.json",
    }
    return table_rows(kept), omitted


def table_rows(df: pl.DataFrame) -> list[dict[str, Any]]:
    """The rows of ``df`` as dicts, NaN/inf as ``None`` (JSON has neither)."""
    if any(t.is_nested() for t in df.schema.values()):
        return [_finite(r) for r in df.to_dicts()]
    floats = [c for c, t in df.schema.items() if t.is_float()]
    if floats:
        df = df.with_columns(pl.when(pl.col(c).is_finite()).then(pl.col(c)).alias(c) for c in floats)
    return df.to_dicts()


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


def _info_dict(info: TraceInfo) -> dict[str, Any]:
    d = attrs.asdict(info)
    if not info.graph_executions:  # only a trace of whole-graph executions carries the count
        del d["graph_executions"]
    d["gpus"] = list(info.gpus)
    d["gpu"] = info.gpus[0]["name"] if info.gpus else None
    return d
