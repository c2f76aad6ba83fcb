"""Broken traces: what a loaded trace lost, and whether an honest report is left (docs/reliability.md).

nsys exports can lack records a report depends on: the kernel records (an nsys too old for the
program's CUDA loses them), the CUDA API calls that tie GPU work to the NVTX ranges on the CPU
thread (``CUPTI_ACTIVITY_KIND_RUNTIME``), or every NVTX range. Each is detected here from the
loaded frames: refused where no honest report is left (:func:`check_ranges`), otherwise
described by :class:`GpuRecords`, whose :attr:`~GpuRecords.lost` makes the analysis report the
stages without GPU numbers (as for a CPU-only trace) and whose :meth:`~GpuRecords.warnings` say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import attrs
import polars as pl

from dsocr.analyze import schema as S
from dsocr.analyze.trace import Trace
from dsocr.contract.errors import BadInput

#: More than this share lost and the GPU numbers per stage are not reported (they would be mostly missing).
LOST_SHARE: Final = 0.5
#: More than this share lost (up to :data:`LOST_SHARE`) and the GPU numbers are reported with a warning.
WARN_SHARE: Final = 0.01

#: ``GpuRecords.lost``: the kernel records are missing (launch calls without a GPU operation).
LOST_KERNELS: Final = "kernels"
#: ``GpuRecords.lost``: the CUDA API calls are missing (GPU operations without a launching call).
LOST_CALLS: Final = "api_calls"

_TRAP_FIX: Final = (
    "nsys 2023.4 and 2024.2 drop the ranges of the nvtx package >= 0.2.12: "
    '`pip install "nvtx>=0.2.10,<0.2.12"` or use nsys >= 2025.3 and capture again (docs/troubleshooting.md)'
)


def check_ranges(given: Path, trace: Trace) -> None:
    """BadInput when the trace has no NVTX range to analyze (none recorded, or none ever closed)."""
    if trace.ranges.select(pl.len()).collect().item():
        return
    opened = trace.meta.open_ranges
    if opened.count:
        raise BadInput(
            f"{given}: all its NVTX ranges are open, {opened}; the program exited, crashed or the capture "
            "stopped inside them, so no stage has a duration; capture again and let the run finish"
        )
    raise BadInput(
        f"{given}: its NVTX_EVENTS table holds no NVTX ranges (at most marks or domain registrations), so there "
        f"are no stages to report; {_TRAP_FIX}"
    )


def no_stages_error(given: Path, trace: Trace) -> BadInput:
    """The refusal of a trace whose ranges are all operator ranges (``aten::...``) or otherwise not stages."""
    n = trace.ranges.select(pl.len()).collect().item()
    return BadInput(
        f"{given}: none of its {n:,} NVTX ranges is a stage (no ranges in the dsocr domain and no top-level "
        "ranges besides operator ranges such as aten::...); capture with stage ranges (`dsocr capture`, or "
        "nvtx.annotate around the work) and analyze again"
    )


@attrs.frozen
class GpuRecords:
    """Counts that tell whether a trace's GPU records and launch calls are complete."""

    gpu_ops: int  #: kernels, copies, memsets and whole-graph executions
    kernels: int
    ops_without_call: int  #: GPU operations whose launching API call is not in the trace
    launch_calls: int  #: kernel and graph launch calls (``api.category`` launch or graph)
    launches_without_op: int  #: launch calls with no GPU operation recorded
    has_runtime: bool  #: the export has a CUPTI_ACTIVITY_KIND_RUNTIME table
    graphs: int = 0  #: whole CUDA graph executions (``--cuda-graph-trace graph``), counted in ``gpu_ops``

    @property
    def lost(self) -> str | None:
        """:data:`LOST_CALLS` or :data:`LOST_KERNELS` when most of them are missing, else None."""
        if self.gpu_ops and self.ops_without_call > LOST_SHARE * self.gpu_ops:
            return LOST_CALLS
        if self.launch_calls and self.launches_without_op > LOST_SHARE * self.launch_calls:
            return LOST_KERNELS
        return None

    def warnings(self, given: Path) -> list[str]:
        """One line per loss (none for a complete trace), and one for a trace of whole-graph executions."""
        out = [graph_mode_warning(given, self.graphs)] if self.graphs else []
        lost = self.lost
        if lost == LOST_CALLS:
            what = (
                "it has no CUDA API table (CUPTI_ACTIVITY_KIND_RUNTIME)"
                if not self.has_runtime
                else f"{self.ops_without_call:,} of its {self.gpu_ops:,} GPU operations have no launching API call"
            )
            out.append(
                f"{given}: {what}, so its kernels cannot be tied to the NVTX ranges: GPU busy time, kernels, "
                "launches and advice per stage are left out (the whole-trace kernel table stays); the export looks "
                "damaged: export it again from the .nsys-rep"
            )
        elif self.gpu_ops and self.ops_without_call > WARN_SHARE * self.gpu_ops:
            out.append(
                f"{given}: {self.ops_without_call:,} of its {self.gpu_ops:,} GPU operations have no launching API "
                "call in the trace: they are missing from the GPU numbers per stage"
            )
        if lost == LOST_KERNELS:
            what = (
                "no kernel records"
                if not self.kernels
                else f"kernel records for only {self.launch_calls - self.launches_without_op:,} of its launches"
            )
            out.append(
                f"{given}: {self.launch_calls:,} kernel launch calls but {what}: nsys lost them (an nsys older "
                "than the program's CUDA does, see docs/troubleshooting.md); GPU busy time, kernels and advice "
                "per stage are left out; capture again with a newer nsys"
            )
        elif lost is None and self.launch_calls and self.launches_without_op > WARN_SHARE * self.launch_calls:
            out.append(
                f"{given}: {self.launches_without_op:,} of its {self.launch_calls:,} kernel launch calls have no "
                "kernel record (nsys lost them): the GPU numbers per stage miss their work"
            )
        return out


def gpu_records(trace: Trace) -> GpuRecords:
    """Count the GPU operations without a launching call and the launch calls without a GPU operation."""
    ops = trace.gpu_ops.select(
        "api_id", (pl.col("kind") == "kernel").alias("_kernel"), (pl.col("kind") == "graph").alias("_graph")
    ).collect()
    launched = ops["api_id"].drop_nulls().unique()
    launches = trace.api.filter(pl.col("category").is_in(["launch", "graph"])).select("api_id").collect()["api_id"]
    return GpuRecords(
        gpu_ops=ops.height,
        kernels=int(ops["_kernel"].sum()),
        ops_without_call=ops["api_id"].null_count(),
        launch_calls=launches.len(),
        launches_without_op=int((~launches.is_in(launched.implode())).sum()),
        has_runtime=S.RUNTIME in trace.meta.tables,
        graphs=int(ops["_graph"].sum()),
    )


def graph_mode_warning(given: Path, graphs: int) -> str:
    """The warning of a trace captured with ``--cuda-graph-trace graph`` (``graphs`` whole-graph executions)."""
    executions = "execution" if graphs == 1 else "executions"
    return (
        f"{given}: captured with --cuda-graph-trace graph: its {graphs:,} CUDA graph {executions} count as GPU busy "
        "time of the stage that launched them (rows 'CUDA graph <id>' in the kernel tables), but the kernels "
        "inside graphs are not itemized in this mode: kernel counts, kernel names and categories per stage, the "
        "whole-trace kernel table and the NVTX projection leave them out; capture with --cuda-graph-trace node "
        "to see them"
    )


def open_ranges_warning(given: Path, trace: Trace, cut_short: int = 0) -> str | None:
    """The warning for ranges that never closed (left out by the loader), if there are any.

    ``cut_short``: the stage instances left out with them (a dsocr pass whose repeat never closed).
    """
    opened = trace.meta.open_ranges
    if not opened.count:
        return None
    inside = (
        f"the {cut_short:,} closed stage ranges of the pass they cut short are left out too"
        if cut_short
        else "the closed ranges inside them are reported"
    )
    return (
        f"{given}: {opened}: the program exited, crashed or the capture stopped inside them; they are left out, "
        "as their end and so their time is unknown (NVIDIA's nvtx_sum and nvtx_gpu_proj_sum end them at the last "
        f"NVTX timestamp instead); {inside}"
    )
