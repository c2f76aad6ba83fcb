"""MFU, MBU, roofline-predicted time and measured/predicted ratios: pure functions on an estimate.

MFU = FLOPs / (peak FLOP/s x time); MBU = bytes / (peak bandwidth x time); the roofline
prediction is max(FLOPs / peak FLOP/s, bytes / bandwidth). Times come from the analyzer for
one page pass (GPU busy and wall, in ns); every ratio is given against both, labelled.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Final

import attrs

from dsocr.analytic.calibration import Calibration, calibrated_time
from dsocr.analytic.cost import Cost, Op
from dsocr.analytic.hierarchy import module_rows
from dsocr.analytic.peaks import Peak
from dsocr.analytic.roofline import arithmetic_intensity, ops_roofline_ns, roofline
from dsocr.analytic.tree import Module
from dsocr.analytic.workload import VISION_PARTS, ModelEstimate

#: Stage names ``stage_metrics`` reports, in order; ``model`` is the three stages together.
METRIC_STAGES: Final = ("vision", "sam", "clip", "projector", "prefill", "decode", "model")


@attrs.frozen
class StageTime:
    """Measured time of one stage for one page pass (ns); either may be unknown."""

    gpu_busy_ns: float | None = None  #: union of kernel/memcpy time on the GPU
    wall_ns: float | None = None  #: the stage's NVTX range (or CUDA-event) duration


def _ops(modules: Iterable[Module]) -> Iterator[Op]:
    for m in modules:
        yield from m.all_ops()


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


@attrs.frozen
class StageMetric:
    """Analytic work of a stage beside its measured times."""

    stage: str
    flops: int
    tensor_flops: int
    bytes: int
    intensity: float | None
    predicted_ns: float | None  #: roofline time of the stage as a whole
    bound: str | None
    predicted_ops_ns: float | None  #: sum of each operation's roofline time (unfused kernels)
    gpu_busy_ns: float | None
    wall_ns: float | None
    mfu_busy: float | None  #: FLOPs / (peak x GPU busy)
    mfu_wall: float | None  #: FLOPs / (peak x wall)
    mbu_busy: float | None
    mbu_wall: float | None
    ratio_busy: float | None  #: measured GPU busy / predicted
    ratio_wall: float | None  #: measured wall / predicted
    calibrated_ns: float | None = None  #: sum of the primitives' calibrated (measured alone) times
    calibrated_fallback_ns: float | None = None  #: part of calibrated_ns taken from the roofline (missing signatures)
    ratio_calibrated: float | None = None  #: measured GPU busy / calibrated
    calibrated_warm_ns: float | None = None  #: the same with the primitives timed warm (no L2 flush)


def metric(
    name: str, modules: Iterable[Module], time: StageTime | None, peak: Peak, calibration: Calibration | None = None
) -> StageMetric:
    """One row: the work of ``modules`` measured at ``time`` against ``peak`` (and ``calibration``)."""
    mods = tuple(modules)
    cost = Cost()
    for m in mods:
        cost = cost + m.total()
    t = time or StageTime()
    roof = roofline(cost, peak)
    fps, bps = peak.flops_per_s, peak.bytes_per_s

    def util(amount: int, rate: float | None, ns: float | None) -> float | None:
        return amount / (rate * ns * 1e-9) if rate and ns else None

    cal = calibrated_time(_ops(mods), calibration, peak) if calibration is not None else None
    warm = calibration.warm_view() if calibration is not None else None
    cal_warm = calibrated_time(_ops(mods), warm, peak) if warm is not None else None

    return StageMetric(
        stage=name,
        flops=cost.flops,
        tensor_flops=cost.tensor_flops,
        bytes=cost.bytes,
        intensity=arithmetic_intensity(cost),
        predicted_ns=roof.predicted_ns,
        bound=roof.bound,
        predicted_ops_ns=ops_roofline_ns(_ops(mods), peak),
        gpu_busy_ns=t.gpu_busy_ns,
        wall_ns=t.wall_ns,
        mfu_busy=util(cost.flops, fps, t.gpu_busy_ns),
        mfu_wall=util(cost.flops, fps, t.wall_ns),
        mbu_busy=util(cost.bytes, bps, t.gpu_busy_ns),
        mbu_wall=util(cost.bytes, bps, t.wall_ns),
        ratio_busy=_ratio(t.gpu_busy_ns, roof.predicted_ns),
        ratio_wall=_ratio(t.wall_ns, roof.predicted_ns),
        calibrated_ns=cal.ns if cal else None,
        calibrated_fallback_ns=cal.fallback_ns if cal else None,
        ratio_calibrated=_ratio(t.gpu_busy_ns, cal.ns) if cal else None,
        calibrated_warm_ns=cal_warm.ns if cal_warm else None,
    )


def _sum_times(times: list[StageTime | None], field: str) -> float | None:
    values = [getattr(t, field) if t is not None else None for t in times]
    return sum(v for v in values if v is not None) if all(v is not None for v in values) else None


def stage_metrics(
    estimate: ModelEstimate | Sequence[ModelEstimate],
    stage_times: Mapping[str, StageTime],
    peak: Peak,
    calibration: Calibration | None = None,
) -> list[StageMetric]:
    """MFU/MBU/roofline rows for vision (and its parts sam, clip, projector), prefill, decode and the model.

    ``estimate`` is one page's estimate, or a list of per-page estimates (pages may differ in
    crop grid) whose work adds up. ``stage_times`` maps stage names (``vision``, ``sam``,
    ``clip``, ``projector``, ``prefill``, ``decode``) to the measured times of the same work
    (one page, or those pages together); missing stages get ``None`` metrics. The ``model`` row
    sums vision, prefill and decode (its time is known only when all those with work are).
    With a ``calibration`` each row also gets the calibrated prediction.
    """
    ests = (estimate,) if isinstance(estimate, ModelEstimate) else tuple(estimate)
    rows: list[StageMetric] = []
    for name in METRIC_STAGES:
        mods: tuple[Module, ...]
        if name in VISION_PARTS:
            parts = (e.stage("vision").module(VISION_PARTS[name]) for e in ests)
            mods = tuple(m for m in parts if m is not None)
            time = stage_times.get(name)
        elif name == "model":
            mods = tuple(m for e in ests for s in e.stages for m in s.modules)
            # a stage with no work and no measured time (vision of a decoder-only trace) adds nothing
            done = {r.stage: r for r in rows}
            times = [
                stage_times.get(s)
                for s in ("vision", "prefill", "decode")
                if s in stage_times or s not in done or done[s].flops or done[s].bytes
            ]
            time = StageTime(_sum_times(times, "gpu_busy_ns"), _sum_times(times, "wall_ns"))
        else:
            mods = tuple(m for e in ests for m in e.stage(name).modules)
            time = stage_times.get(name)
        rows.append(metric(name, mods, time, peak, calibration))
    return rows


@attrs.frozen
class ModuleMetric:
    """One module's analytic work, roofline times and (optionally) measured GPU time."""

    path: str
    kind: str
    calls: int
    flops: int
    bytes: int
    intensity: float | None
    predicted_ns: float | None  #: roofline time of the module as a whole
    bound: str | None
    predicted_ops_ns: float | None  #: sum of its operations' roofline times
    measured_ns: float | None
    ratio: float | None  #: measured / predicted_ops_ns
    calibrated_ns: float | None = None  #: sum of its primitives' calibrated times
    ratio_calibrated: float | None = None  #: measured / calibrated_ns


def module_metrics(
    estimate: ModelEstimate,
    peak: Peak,
    measured_ns: Mapping[str, float] | None = None,
    calibration: Calibration | None = None,
) -> list[ModuleMetric]:
    """Roofline (and calibrated) time per module (all stages together), beside measured GPU time if given."""
    measured = measured_ns or {}
    out: list[ModuleMetric] = []
    for row in module_rows(estimate):
        roof = roofline(row.cost, peak)
        got = measured.get(row.path)
        ops_ns = ops_roofline_ns(row.all_ops, peak)
        cal = calibrated_time(row.all_ops, calibration, peak).ns if calibration is not None else None
        out.append(
            ModuleMetric(
                row.path,
                row.kind,
                row.calls,
                row.cost.flops,
                row.cost.bytes,
                arithmetic_intensity(row.cost),
                roof.predicted_ns,
                roof.bound,
                ops_ns,
                got,
                _ratio(got, ops_ns),
                cal,
                _ratio(got, cal),
            )
        )
    return out
