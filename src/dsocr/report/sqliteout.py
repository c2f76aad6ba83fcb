"""``results.sqlite``: the analysis tables, one SQLite table each (columns
INTEGER, REAL or TEXT, declared as sqlite-utils does)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import polars as pl

from dsocr.analyze.analysis import Analysis
from dsocr.analyze.integrity import graph_mode_warning
from dsocr.analyze.nesting import BESIDE
from dsocr.contract import atomic


def _insert(con: sqlite3.Connection, name: str, df: pl.DataFrame) -> None:
    """Create the table, then bulk-insert the rows (one executemany)."""
    nested = [c for c, t in df.schema.items() if isinstance(t, pl.List | pl.Array | pl.Struct)]
    if nested:
        df = df.with_columns(pl.col(c).map_elements(_json_cell, return_dtype=pl.Utf8) for c in nested)
    decl = ",\n".join(f"   {_quote(c)} {_sql_type(t)}" for c, t in df.schema.items())
    con.execute(f"CREATE TABLE {_quote(name)} (\n{decl}\n)")
    if df.height:
        cols = ", ".join(_quote(c) for c in df.columns)
        marks = ", ".join("?" * df.width)
        con.executemany(f"INSERT INTO {_quote(name)} ({cols}) VALUES ({marks})", df.iter_rows())


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _json_cell(v: Any) -> str:
    return json.dumps(v.to_list() if isinstance(v, pl.Series) else v)


def _sql_type(dtype: pl.DataType) -> str:
    if dtype.is_integer() or dtype == pl.Boolean:
        return "INTEGER"
    if dtype.is_float():
        return "REAL"
    return "TEXT"


def tables(analysis: Analysis) -> dict[str, pl.DataFrame]:
    """The tables ``results.sqlite`` holds, by name."""
    traces = pl.DataFrame(
        [
            {
                "file_index": i,
                "file": t.info.file,
                "path": t.info.path,
                "product_version": t.info.product_version,
                "schema_version": t.info.schema_version,
                "gpu": t.info.gpus[0]["name"] if t.info.gpus else None,
                "has_cuda": t.info.has_cuda,
                "stage_mode": t.info.stage_mode,
            }
            for i, t in enumerate(analysis.traces)
        ]
    )
    nestings = [t.stages.nesting for t in analysis.traces]
    if any(n is not None and n.shape != BESIDE for n in nestings):
        # vision inside prefill somewhere (the checkpoint's own code): each file's shape
        traces = traces.with_columns(pl.Series("vision_nesting", [n.shape if n else None for n in nestings]))
    graphs = [t.info.graph_executions for t in analysis.traces]
    if any(graphs):  # a capture with --cuda-graph-trace graph: the kernels inside graphs are not itemized
        notes = [
            graph_mode_warning(Path(t.info.file), n) if n else None
            for t, n in zip(analysis.traces, graphs, strict=True)
        ]
        traces = traces.with_columns(
            pl.Series("graph_executions", graphs, dtype=pl.Int64), pl.Series("graph_warning", notes, dtype=pl.String)
        )
    proj = pl.concat(
        [t.nvtx_projection.with_columns(pl.lit(i).alias("file_index")) for i, t in enumerate(analysis.traces)],
        how="diagonal_relaxed",
    )
    kern = pl.concat(
        [t.kernels.with_columns(pl.lit(i).alias("file_index")) for i, t in enumerate(analysis.traces)],
        how="diagonal_relaxed",
    )
    extra: dict[str, pl.DataFrame] = {}
    if analysis.analytic is not None and not analysis.analytic.metrics.is_empty():
        extra["stage_metrics"] = analysis.analytic.metrics
    if analysis.analytic is not None and not analysis.analytic.mfu_spread.is_empty():
        extra["mfu_spread"] = analysis.analytic.mfu_spread
    if analysis.modules is not None:
        extra["module_metrics"] = analysis.modules.table
        if not analysis.modules.categories.is_empty():  # module x kernel category: kernels, time and share per pass
            extra["module_categories"] = analysis.modules.categories
    if not analysis.idle_gaps.is_empty():
        extra["idle_gaps"] = analysis.idle_gaps
    if analysis.devices is not None:  # a data-parallel trace (several workers): per-device tables
        extra["device_workers"] = analysis.devices.workers
        extra["device_stages"] = analysis.devices.stages
        extra["device_balance"] = analysis.devices.balance
        extra["device_throughput"] = analysis.devices.throughput
    if analysis.op_memory is not None:
        extra["op_memory_stages"] = analysis.op_memory.stages
        extra["op_memory_operators"] = analysis.op_memory.operators
    return {
        "traces": traces,
        "nvtx_projection": proj,
        "kernels": kern,
        "stages": analysis.stages,
        "stage_instances": analysis.stage_instances,
        "kernel_categories": analysis.categories,
        "top_kernels": analysis.top_kernels,
        "operators": analysis.operators,
        "repeat_passes": analysis.repeats.per_pass,
        "repeat_stats": analysis.repeats.stats,
        **extra,
    }


def build_sqlite(analysis: Analysis, path: Path) -> None:
    """Write every table into a new SQLite file at ``path`` (replaced if it exists).

    ``path`` is a temporary file renamed onto results.sqlite only once complete (:func:`write_sqlite`,
    :mod:`dsocr.report.report_set`), so it is built without a rollback journal or fsync (same bytes, about
    a fifth less time).
    """
    path.unlink(missing_ok=True)
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA journal_mode = OFF")
        con.execute("PRAGMA synchronous = OFF")
        with con:
            for name, df in tables(analysis).items():
                _insert(con, name, df)
    finally:
        con.close()


def write_sqlite(analysis: Analysis, path: Path) -> None:
    """Write ``results.sqlite`` atomically (built beside it, then renamed)."""
    with atomic.atomic_path(path) as tmp:
        build_sqlite(analysis, tmp)
