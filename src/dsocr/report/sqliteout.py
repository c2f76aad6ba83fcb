"""``results.sqlite``: the analysis tables, one SQLite table each (sqlite-utils)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import sqlite_utils

from dsocr.analyze.analysis import Analysis
from dsocr.contract import atomic


def _sql_value(v: Any) -> Any:
    if isinstance(v, list | tuple | dict):
        return json.dumps(v)
    return v


def _insert(db: sqlite_utils.Database, name: str, df: pl.DataFrame) -> None:
    rows = [{k: _sql_value(v) for k, v in r.items()} for r in df.to_dicts()]
    table = db.table(name)
    if rows:
        table.insert_all(rows)
    else:
        table.create({c: _sql_type(t) for c, t in df.schema.items()})


def _sql_type(dtype: pl.DataType) -> type:
    if dtype.is_integer() or dtype == pl.Boolean:
        return int
    if dtype.is_float():
        return float
    return str


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
    proj = pl.concat(
        [t.nvtx_projection.with_columns(pl.lit(i).alias("file_index")) for i, t in enumerate(analysis.traces)],
        how="diagonal_relaxed",
    )
    kern = pl.concat(
        [t.kernels.with_columns(pl.lit(i).alias("file_index")) for i, t in enumerate(analysis.traces)],
        how="diagonal_relaxed",
    )
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
    }


def write_sqlite(analysis: Analysis, path: Path) -> None:
    """Write every table into a new SQLite file, atomically (built beside it, then renamed)."""
    with atomic.atomic_path(path) as tmp:
        tmp.unlink()
        db = sqlite_utils.Database(tmp)
        try:
            for name, df in tables(analysis).items():
                _insert(db, name, df)
        finally:
            db.close()
