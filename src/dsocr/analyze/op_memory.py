"""Operator memory of a run directory (``op_memory.json``, ``dsocr capture --op-memory``) as tables.

The document is the caching allocator's view from one extra pass under the PyTorch profiler (see
:mod:`dsocr.contract.op_memory`); it is joined onto the operator tables by stage and operator name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import attrs
import polars as pl

from dsocr.contract import rundir
from dsocr.contract.errors import BadInput
from dsocr.contract.op_memory import OpMemory

#: What the reports say when a run directory has no op_memory.json.
HOW_TO: Final = (
    "not captured: `dsocr capture --op-memory` adds the allocator's bytes per operator and stage "
    "(one extra PyTorch-profiler pass)"
)

_STAGE_SCHEMA: Final = {
    "stage": pl.String,
    "instances": pl.Int64,
    "allocated_bytes": pl.Int64,
    "freed_bytes": pl.Int64,
    "allocations": pl.Int64,
    "peak_bytes": pl.Int64,
    "peak_increase_bytes": pl.Int64,
    "operators_total": pl.Int64,
}
_OP_SCHEMA: Final = {
    "stage": pl.String,
    "rank": pl.Int64,
    "operator": pl.String,
    "calls": pl.Int64,
    "allocations": pl.Int64,
    "allocated_bytes": pl.Int64,
    "freed_bytes": pl.Int64,
}
#: Columns the join adds to the operators table.
JOINED: Final = ("mem_allocated_bytes", "mem_allocations", "stage_peak_bytes")


@attrs.frozen
class OpMemoryTables:
    """op_memory.json as frames: per stage (``stages``) and its top operators (``operators``)."""

    device: str
    measures: str
    top_n: int
    stages: pl.DataFrame
    operators: pl.DataFrame


def tables(doc: OpMemory) -> OpMemoryTables:
    """The frames of one document (stages in the document's order, operators ranked by allocated bytes)."""
    stages = pl.DataFrame(
        [
            {
                "stage": s.stage,
                "instances": s.instances,
                "allocated_bytes": s.allocated_bytes,
                "freed_bytes": s.freed_bytes,
                "allocations": s.allocations,
                "peak_bytes": s.peak_bytes,
                "peak_increase_bytes": s.peak_increase_bytes,
                "operators_total": s.operators_total,
            }
            for s in doc.stages
        ],
        schema=_STAGE_SCHEMA,
    )
    ops = pl.DataFrame(
        [
            {"stage": s.stage, "rank": i, **o.to_json()}
            for s in doc.stages
            for i, o in enumerate(sorted(s.operators, key=lambda o: (-o.allocated_bytes, o.operator)), 1)
        ],
        schema=_OP_SCHEMA,
    )
    return OpMemoryTables(doc.device, doc.measures, doc.top_n, stages, ops)


def read_run(directory: Path) -> tuple[OpMemoryTables | None, str | None]:
    """op_memory.json as tables; (None, warning) when it is unreadable, (None, None) when absent."""
    path = directory / rundir.OP_MEMORY
    if not path.is_file():
        return None, None
    try:
        return tables(OpMemory.read(path)), None
    except BadInput as exc:
        return None, f"{exc.message} (operator memory is left out of the reports)"


def join_operators(operators: pl.DataFrame, mem: OpMemoryTables) -> pl.DataFrame:
    """``operators`` (stage, operator, ...) with the allocator's bytes and allocations of that operator in
    that stage and the stage's peak (null where the operator is not among the stage's top ones)."""
    if operators.is_empty() or "operator" not in operators.columns:
        return operators
    ops = mem.operators.select(
        "stage",
        "operator",
        pl.col("allocated_bytes").alias(JOINED[0]),
        pl.col("allocations").alias(JOINED[1]),
    )
    peaks = mem.stages.select("stage", pl.col("peak_bytes").alias(JOINED[2]))
    return operators.join(ops, on=["stage", "operator"], how="left").join(peaks, on="stage", how="left")
