"""The ``analytic`` section of analysis.json: FLOPs, bytes, MFU, MBU and roofline time per stage.

One analytic estimate per page of a pass (:mod:`dsocr.analyze.workload_from_run`), the
measured stage times of a pass (GPU busy and the stage range's wall time, each summed over the
pages of the pass, then the mean over passes) and the peak of the trace's GPU feed
:func:`dsocr.analytic.metrics.stage_metrics`. All figures are per pass; ``per_page`` divides
by the pages of a pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import polars as pl

from dsocr.analytic.export import peak_dict, to_json
from dsocr.analytic.peaks import Peak, resolve_peak
from dsocr.analyze.nesting import excl
from dsocr.analyze.trace import GpuInfo

if TYPE_CHECKING:  # the metrics and calibration are imported when there is a workload (start-up time)
    from dsocr.analytic.calibration import Calibration
    from dsocr.analytic.metrics import StageMetric, StageTime
    from dsocr.analytic.workload import ModelEstimate
    from dsocr.analyze.workload_from_run import RunWorkload


def timed_stages() -> tuple[str, ...]:
    """Measured stages fed to ``stage_metrics`` (the ``model`` row is derived)."""
    from dsocr.analytic.metrics import METRIC_STAGES

    return tuple(s for s in METRIC_STAGES if s != "model")


@attrs.frozen
class PeakFlags:
    """User overrides of the peak: ``--gpu``, ``--peak-tflops``, ``--peak-tbps``."""

    gpu: str | None = None
    tflops: float | None = None
    tbps: float | None = None
    calibration: Path | None = None  #: ``--calibration FILE`` (default: the run directory's calibration.json)


def _capability(text: str | None) -> tuple[int, int] | None:
    try:
        major, minor = (text or "").split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def trace_peak(gpus: Sequence[GpuInfo], flags: PeakFlags) -> Peak:
    """The peak of the trace's first GPU (``--gpu`` renames it; ``--peak-*`` override the figures)."""
    g = gpus[0] if gpus else None
    return resolve_peak(
        flags.gpu or (g.name if g else None),
        tflops=flags.tflops,
        tbps=flags.tbps,
        sm_count=g.sm_count if g else None,
        clock_hz=float(g.clock_hz) if g and g.clock_hz else None,
        compute_capability=_capability(g.compute_capability) if g else None,
        memory_bandwidth=float(g.memory_bandwidth_bps) if g and g.memory_bandwidth_bps else None,
    )


def stage_times(per_pass: pl.DataFrame) -> tuple[dict[str, StageTime], dict[str, int]]:
    """Mean over passes of each timed stage's per-pass GPU busy and wall (range) time; and the pass counts.

    Where vision ran inside prefill the prefill times are the exclusive ones (prefill - vision):
    the analytic prefill excludes vision, and the ``model`` row then adds each time once.
    """
    from dsocr.analytic.metrics import StageTime

    if per_pass.is_empty():
        return {}, {}
    busy, wall = pl.col("gpu_busy_ns"), pl.col("cpu_ns")
    if excl("cpu_ns") in per_pass.columns:
        # vision ran inside prefill: the model's prefill work excludes vision, so its time does too
        busy = pl.coalesce(excl("gpu_busy_ns"), busy).alias("gpu_busy_ns")
        wall = pl.coalesce(excl("cpu_ns"), wall).alias("cpu_ns")
    means = (
        per_pass.filter(pl.col("stage").is_in(list(timed_stages())))
        .group_by("stage")
        .agg(busy.mean(), wall.mean(), pl.len().alias("passes"))
    )
    times = {s: StageTime(float(b), float(w)) for s, b, w, _ in means.iter_rows()}
    return times, {s: int(n) for s, _, _, n in means.iter_rows()}


def pages_per_pass(per_pass: pl.DataFrame) -> int:
    """Pages in a pass of a foreign trace: the mean number of prefill (else decode) instances per pass."""
    for stage in ("prefill", "decode"):
        part = per_pass.filter(pl.col("stage") == stage) if not per_pass.is_empty() else per_pass
        if part.height:
            return max(1, round(float(part["instances"].mean())))  # type: ignore[arg-type]
    return 1


def _metric_dict(m: StageMetric, pages: int) -> dict[str, Any]:
    d = attrs.asdict(m)
    d["per_page"] = {
        k: (d[k] / pages if d[k] is not None else None)
        for k in (
            "flops",
            "tensor_flops",
            "bytes",
            "predicted_ns",
            "predicted_ops_ns",
            "calibrated_ns",
            "gpu_busy_ns",
            "wall_ns",
        )
    }
    return d


@attrs.frozen
class AnalyticResult:
    """The analytic section and its per-stage table."""

    doc: dict[str, Any]
    metrics: pl.DataFrame  #: one row per stage (columns of StageMetric plus ``passes``)
    estimates: tuple[ModelEstimate, ...] = ()
    peak: Peak | None = None


def analytic_section(
    workload: RunWorkload | None,
    reason: str | None,
    per_pass: pl.DataFrame,
    peak: Peak,
    calibration: Calibration | None = None,
) -> AnalyticResult:
    """The ``analytic`` document: the model JSON of the first page, per-page digests and ``stage_metrics``.

    With a ``calibration`` the stage metrics carry the calibrated prediction too.
    """
    if workload is None:
        return AnalyticResult({"available": False, "reason": reason, "peak": peak_dict(peak)}, pl.DataFrame(), (), peak)
    from dsocr.analytic.metrics import stage_metrics
    from dsocr.analytic.workload import estimate

    ests = tuple(estimate(w) for w in workload.pages)
    times, passes = stage_times(per_pass)
    rows = stage_metrics(ests, times, peak, calibration)
    n = len(ests)
    metrics = [_metric_dict(m, n) for m in rows]
    model = next(m for m in metrics if m["stage"] == "model")
    doc = {
        **to_json(ests[0], peak),
        "available": True,
        "reason": None if peak.known else "peak unknown: give --peak-tflops and --peak-tbps (or --gpu)",
        "workload_source": workload.source,
        "pages_per_pass": n,
        "pages": [_page_dict(name, e) for name, e in zip(workload.names, ests, strict=True)],
        "stage_metrics": [{**m, "passes": passes.get(m["stage"], 0)} for m in metrics],
        "model_mfu": {k: model[k] for k in ("mfu_busy", "mfu_wall", "mbu_busy", "mbu_wall")},
        "calibration": calibration_doc(ests, calibration),
        "note": "stage_metrics are per pass (all pages of one repeat), times the mean over passes; "
        "the model JSON above (workload, stages, modules) is the first page's",
    }
    if excl("cpu_ns") in per_pass.columns:
        doc["prefill_times"] = (
            "exclusive: vision ran inside prefill (the checkpoint's own code) and the analytic prefill excludes "
            "vision, so the prefill row's gpu_busy_ns and wall_ns are prefill - vision; the model row adds vision, "
            "exclusive prefill and decode, each once"
        )
    table = pl.DataFrame(
        [{k: v for k, v in m.items() if k != "per_page"} | {"passes": passes.get(m["stage"], 0)} for m in metrics],
        infer_schema_length=None,
    )
    return AnalyticResult(doc, table, ests, peak)


def calibration_doc(ests: Sequence[ModelEstimate], calibration: Calibration | None) -> dict[str, Any] | None:
    """Where the calibration came from and which of this workload's signatures it lacks."""
    if calibration is None:
        return None
    from dsocr.analytic.calibration import required_kernels

    needed = required_kernels(ests)
    missing = [k.key for k in needed if k.key not in calibration.times]
    return {
        **calibration.describe(),
        "required": len(needed),
        "missing": len(missing),
        "missing_keys": missing[:20],
        "note": "calibrated_ns = sum over each stage's primitives of count x their GPU time measured alone "
        "(cold L2, same PyTorch operators as the replica); missing signatures fall back to their roofline time",
    }


def _page_dict(name: str, est: ModelEstimate) -> dict[str, Any]:
    w = est.workload
    return {
        "name": name,
        "image_size": list(w.image_size) if w.image_size else None,
        "crop_grid": list(w.crop_grid),
        "image_embeddings": w.image_embeddings,
        "prefill_length": w.prefill_length,
        "stages": {s.name: {"flops": s.cost.flops, "bytes": s.cost.bytes} for s in est.stages},
    }
