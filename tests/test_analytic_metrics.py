"""MFU, MBU, roofline and measured/predicted: the formulas of docs/metrics.md on known numbers."""

from __future__ import annotations

import pytest

from dsocr.analytic.cost import Cost
from dsocr.analytic.metrics import StageTime, module_metrics, stage_metrics
from dsocr.analytic.peaks import resolve_peak
from dsocr.analytic.roofline import roofline
from dsocr.analytic.workload import Workload, estimate

PEAK = resolve_peak(None, tflops=1000.0, tbps=2.0)  # 1e15 FLOP/s, 2e12 B/s: ridge at 500 FLOP/byte
EST = estimate(Workload(mode="gundam", crop_grid=(2, 2), new_tokens=16))


def test_roofline_bounds() -> None:
    compute = roofline(Cost(tensor_flops=10**12, read_bytes=10**9), PEAK)
    assert compute.predicted_ns == pytest.approx(1e6) and compute.bound == "compute"
    memory = roofline(Cost(tensor_flops=10**9, read_bytes=10**10), PEAK)
    assert memory.predicted_ns == pytest.approx(5e6) and memory.bound == "memory"
    assert roofline(Cost(tensor_flops=1), resolve_peak("NVIDIA L40")).predicted_ns is None


def test_stage_metrics_formulas() -> None:
    times = {
        "vision": StageTime(gpu_busy_ns=20e6, wall_ns=25e6),
        "prefill": StageTime(gpu_busy_ns=10e6, wall_ns=12e6),
        "decode": StageTime(gpu_busy_ns=50e6, wall_ns=400e6),
        "sam": StageTime(gpu_busy_ns=15e6),
    }
    rows = {r.stage: r for r in stage_metrics(EST, times, PEAK)}
    assert list(rows) == ["vision", "sam", "clip", "projector", "prefill", "decode", "model"]
    pre = EST.stage("prefill").cost
    r = rows["prefill"]
    assert r.flops == pre.flops and r.bytes == pre.bytes
    assert r.mfu_busy == pytest.approx(pre.flops / (1e15 * 10e-3))
    assert r.mfu_wall == pytest.approx(pre.flops / (1e15 * 12e-3))
    assert r.mbu_busy == pytest.approx(pre.bytes / (2e12 * 10e-3))
    predicted = max(pre.flops / 1e15, pre.bytes / 2e12) * 1e9
    assert r.predicted_ns == pytest.approx(predicted)
    assert r.ratio_busy == pytest.approx(10e6 / predicted)
    assert r.intensity == pytest.approx(pre.flops / pre.bytes)
    assert r.predicted_ops_ns is not None and r.predicted_ops_ns >= r.predicted_ns * (1 - 1e-9)
    model = rows["model"]
    assert model.gpu_busy_ns == pytest.approx(80e6) and model.wall_ns == pytest.approx(437e6)
    assert model.mfu_busy == pytest.approx(EST.total.flops / (1e15 * 80e-3))
    assert rows["sam"].mfu_busy == pytest.approx(EST.vision_part("sam").flops / (1e15 * 15e-3))
    assert rows["clip"].mfu_busy is None  # no time given


def test_model_time_unknown_when_a_stage_is_missing() -> None:
    rows = {r.stage: r for r in stage_metrics(EST, {"prefill": StageTime(1e6, 1e6)}, PEAK)}
    assert rows["model"].gpu_busy_ns is None and rows["model"].mfu_busy is None


def test_module_metrics_with_measured_time() -> None:
    rows = {m.path: m for m in module_metrics(EST, PEAK, {"lm_head": 2e6})}
    head = rows["lm_head"]
    assert head.calls == 16
    assert head.measured_ns == 2e6
    assert head.predicted_ops_ns is not None
    assert head.ratio == pytest.approx(2e6 / head.predicted_ops_ns)
    assert head.bound == "memory"  # one position per call: weight-read bound
    assert rows["vision.sam"].measured_ns is None


def test_several_pages_add_up() -> None:
    """Pages with different crop grids: the work of a pass is the sum of the per-page estimates."""
    pages = [estimate(Workload(crop_grid=g, new_tokens=16)) for g in ((2, 2), (2, 3), (1, 1))]
    times = {s: StageTime(gpu_busy_ns=30e6, wall_ns=40e6) for s in ("vision", "prefill", "decode", "sam")}
    rows = {r.stage: r for r in stage_metrics(pages, times, PEAK)}
    for stage in ("vision", "prefill", "decode"):
        assert rows[stage].flops == sum(p.stage(stage).cost.flops for p in pages)
        assert rows[stage].bytes == sum(p.stage(stage).cost.bytes for p in pages)
    assert rows["sam"].flops == sum(p.vision_part("sam").flops for p in pages)
    assert rows["model"].flops == sum(p.total.flops for p in pages)
    assert rows["decode"].mfu_busy == pytest.approx(rows["decode"].flops / (1e15 * 30e-3))
