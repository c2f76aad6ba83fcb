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
    #: per (stage, metric mfu_busy|mfu_wall): the spread of the per-pass MFU (analyze.repeats.spread columns)
    mfu_spread: pl.DataFrame = attrs.field(factory=pl.DataFrame)
    #: per stage and pass: mfu_busy, mfu_wall, mbu_busy, mbu_wall (:func:`per_pass_utilization`)
    per_pass: pl.DataFrame = attrs.field(factory=pl.DataFrame)


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
    utilization = per_pass_utilization(per_pass, rows, peak)
    spread = mfu_spread(utilization)
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
        "mfu_spread": _spread_rows(spread),
        "per_pass": _spread_rows(utilization),
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
    return AnalyticResult(doc, table, ests, peak, spread, utilization)


#: The stages whose times make the ``model`` row's time (analytic.metrics.stage_metrics).
MODEL_STAGES = ("vision", "prefill", "decode")


def per_pass_utilization(per_pass: pl.DataFrame, rows: Sequence[StageMetric], peak: Peak) -> pl.DataFrame:
    """Each stage's utilization in every pass ``i``: ``mfu_busy``/``mfu_wall`` = ``flops / (peak x t_i)`` and
    ``mbu_busy``/``mbu_wall`` = ``bytes / (bandwidth x t_i)``, with ``t_i`` the pass's GPU busy or range time
    (null where it is 0); the ``model`` row's ``t_i`` is the sum of the model stages' times in that pass (only
    passes that have them all). The work is a whole pass's (``stage_metrics``)."""
    fps, bps = peak.flops_per_s, peak.bytes_per_s
    work = {r.stage: r for r in rows}
    if not fps or per_pass.is_empty():
        return pl.DataFrame()
    timed = per_pass.filter(pl.col("stage").is_in(list(timed_stages()))).select(
        "stage", "pass", *(_time(per_pass, c) for c in ("gpu_busy_ns", "cpu_ns"))
    )
    measured = set(timed["stage"].to_list())
    # as stage_metrics: a model stage counts when it was measured or has work
    parts = [s for s in MODEL_STAGES if s in measured or (s in work and (work[s].flops or work[s].bytes))]
    model = (
        timed.filter(pl.col("stage").is_in(parts))
        .group_by("pass")
        .agg(pl.col("gpu_busy_ns").sum(), pl.col("cpu_ns").sum(), pl.len().alias("_n"))
        .filter(pl.col("_n") == len(parts))
        .select(pl.lit("model").alias("stage"), "pass", "gpu_busy_ns", "cpu_ns")
    )
    has = [r for r in rows if r.flops or r.bytes]
    amounts = pl.DataFrame(
        {
            "stage": [r.stage for r in has],
            "flops": [float(r.flops) if r.flops else None for r in has],
            "bytes": [float(r.bytes) if r.bytes else None for r in has],
        },
        schema={"stage": pl.Utf8, "flops": pl.Float64, "bytes": pl.Float64},
    )
    per = pl.concat([timed, model], how="vertical_relaxed").join(amounts, on="stage", how="inner")

    def util(amount: str, rate: float | None, t: str) -> pl.Expr:
        return pl.when(pl.col(t) > 0).then(pl.col(amount) / (rate * pl.col(t) * 1e-9)) if rate else pl.lit(None)

    order = {s: i for i, s in enumerate(METRIC_ORDER)}
    return (
        per.select(
            "stage",
            "pass",
            util("flops", fps, "gpu_busy_ns").cast(pl.Float64).alias("mfu_busy"),
            util("flops", fps, "cpu_ns").cast(pl.Float64).alias("mfu_wall"),
            util("bytes", bps, "gpu_busy_ns").cast(pl.Float64).alias("mbu_busy"),
            util("bytes", bps, "cpu_ns").cast(pl.Float64).alias("mbu_wall"),
        )
        .with_columns(pl.col("stage").replace_strict(order, default=len(order), return_dtype=pl.Int64).alias("_o"))
        .sort("_o", "pass")
        .drop("_o")
    )


def mfu_spread(utilization: pl.DataFrame) -> pl.DataFrame:
    """The spread over passes of each stage's MFU (``mfu_busy``, ``mfu_wall``) from
    :func:`per_pass_utilization` (analyze.repeats.spread columns)."""
    from dsocr.analyze.repeats import spread

    if utilization.is_empty():
        return pl.DataFrame()
    with_flops = pl.col("mfu_busy").is_not_null().any().over("stage") | pl.col("mfu_wall").is_not_null().any().over(
        "stage"
    )
    long = (
        utilization.filter(with_flops)
        .select("stage", "pass", "mfu_busy", "mfu_wall")
        .unpivot(index=["stage", "pass"], variable_name="metric", value_name="value")
    )
    order = {s: i for i, s in enumerate(METRIC_ORDER)}
    return (
        spread(long, ["stage", "metric"])
        .with_columns(pl.col("stage").replace_strict(order, default=len(order), return_dtype=pl.Int64).alias("_o"))
        .sort("_o", "metric")
        .drop("_o")
    )


#: Suffix of a stage's exclusive time columns (``cpu_ns_excl``): prefill minus the vision run inside it, in
#: traces of the checkpoint's own code; the analytic prefill excludes vision, so its per-pass MFU uses them.
EXCL_SUFFIX = "_excl"


def _time(per_pass: pl.DataFrame, col: str) -> pl.Expr:
    """A per-pass time column as float, the exclusive one where the table has it (vision inside prefill)."""
    own = pl.col(col).cast(pl.Float64)
    if col + EXCL_SUFFIX in per_pass.columns:
        own = pl.coalesce(pl.col(col + EXCL_SUFFIX).cast(pl.Float64), own)
    return own.alias(col)


#: Row order of the MFU spread table (analytic.metrics.METRIC_STAGES).
METRIC_ORDER = ("vision", "sam", "clip", "projector", "prefill", "decode", "model")


def _spread_rows(df: pl.DataFrame) -> list[dict[str, Any]]:
    """Spread rows as JSON (NaN/inf as None)."""
    if df.is_empty():
        return []
    floats = [c for c, t in df.schema.items() if t == pl.Float64]
    return df.with_columns(pl.when(pl.col(c).is_finite()).then(pl.col(c)).alias(c) for c in floats).to_dicts()


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
