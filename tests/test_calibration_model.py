"""Kernel signatures on the analytic primitives and the calibrated prediction (pure Python)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dsocr.analytic import primitives as p
from dsocr.analytic.calibration import (
    Calibration,
    calibrated_time,
    load_calibration,
    parse_calibration,
    required_kernels,
)
from dsocr.analytic.metrics import StageTime, stage_metrics
from dsocr.analytic.peaks import resolve_peak
from dsocr.analytic.roofline import ops_roofline_ns
from dsocr.analytic.signature import Kernel, parse_key, unique
from dsocr.analytic.workload import Workload, estimate
from dsocr.contract.errors import BadInput, DsocrError, ExitCode
from dsocr.contract.run_calibration import SCHEMA

PEAK = resolve_peak("NVIDIA H100 80GB HBM3")
GUNDAM_2X3 = Workload(mode="gundam", crop_grid=(2, 3), prompt_tokens=12, new_tokens=32)


def _counts(est_stage: object) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in est_stage.modules:  # type: ignore[attr-defined]
        for op in m.all_ops():
            for k, c in op.kernels:
                out[k.kind] = out.get(k.kind, 0.0) + c
    return out


def test_key_is_canonical_and_parses_back() -> None:
    k = Kernel.of("linear", out=2304, rows=4096, bias=1, **{"in": 768})
    assert k.key == "linear[rows=4096,in=768,out=2304,bias=1]"
    assert parse_key(k.key) == k
    a = Kernel.of(
        "attention", batch=2, heads=12, kv_heads=12, q=196, kv=196, head_dim=64, causal=0, impl="sdpa", mask=1
    )
    assert parse_key(a.key) == a and a.param("impl") == "sdpa"
    assert unique([k, a, Kernel.of("linear", rows=4096, out=2304, bias=1, **{"in": 768})]) == [k, a]


def test_bad_signatures_name_the_problem() -> None:
    with pytest.raises(ValueError, match="unknown kernel kind 'matmul'"):
        Kernel.of("matmul", rows=1)
    with pytest.raises(ValueError, match=r"missing parameters \['bias'\]"):
        Kernel.of("linear", rows=1, out=2, **{"in": 3})
    with pytest.raises(ValueError, match="not of the form"):
        parse_key("linear(rows=1)")


def test_primitives_tag_one_op_per_primitive() -> None:
    lin = p.linear("qkv", 100, 768, 2304, bias=True, b=2)
    assert lin.kernels == ((Kernel.of("linear", rows=100, out=2304, bias=1, **{"in": 768}), 1.0),)
    router = p.router(10, 1280, 64, 6, 2)
    assert [op.kernels[0][0].kind if op.kernels else None for op in router] == ["router", None, None]
    experts = p.routed_experts(10, 1280, 896, 64, 6, 2)
    assert [op.kernels[0][0].key if op.kernels else None for op in experts] == [
        "routed_experts[rows=10,hidden=1280,inter=896,experts=64,top_k=6]",
        None,
        None,
        None,
    ]
    eager = p.attention(2, 4, 8, 8, 16, b=2, impl="eager")
    assert [bool(op.kernels) for op in eager] == [True, False, False]
    assert eager[0].kernels[0][0].param("impl") == "eager"
    assert lin.times(3).kernels[0][1] == 3.0


def test_kernel_counts_of_a_gundam_page() -> None:
    est = estimate(GUNDAM_2X3)
    vision = _counts(est.stage("vision"))
    # SAM: 12 blocks per view group (crops, global); CLIP: 24 layers per group
    assert vision["attention"] == 2 * 12 + 2 * 24
    assert vision["rel_pos"] == 2 * 12
    assert vision["conv2d"] == 2 * (1 + 2 + 2)  # patch embed, neck x2, compressor x2
    prefill = _counts(est.stage("prefill"))
    assert prefill["router"] == 11 and prefill["routed_experts"] == 11
    assert prefill["rms_norm"] == 12 * 2 + 1
    decode = _counts(est.stage("decode"))
    steps = GUNDAM_2X3.new_tokens - 1
    # the context-dependent kernels are interpolated between two signatures; counts still add to the steps
    assert decode["kv_append"] == pytest.approx(12 * steps)
    assert decode["attention"] == pytest.approx(12 * steps)
    assert decode["router"] == pytest.approx(11 * steps)
    kv = {
        k.key: c
        for m in est.stage("decode").modules
        for op in m.all_ops()
        for k, c in op.kernels
        if k.kind == "kv_append"
    }
    first, last, _ = est.decode_context
    pasts = sorted(parse_key(key).param("past") for key in kv)
    assert pasts == [first - 1, last - 1]


def test_required_kernels_are_distinct_and_cover_every_stage() -> None:
    ests = [estimate(GUNDAM_2X3), estimate(Workload(mode="gundam", crop_grid=(3, 2), prompt_tokens=12, new_tokens=32))]
    keys = [k.key for k in required_kernels(ests)]
    assert len(keys) == len(set(keys))
    assert {parse_key(k).kind for k in keys} == {
        "linear",
        "conv2d",
        "layer_norm",
        "rms_norm",
        "activation",
        "gated",
        "elementwise",
        "copy",
        "embedding",
        "attention",
        "rel_pos",
        "rope",
        "kv_append",
        "router",
        "routed_experts",
    }
    assert "layer_norm[rows=9600,dim=256,layout=2d]" in keys  # the neck of six 640 crops (6 x 40 x 40)


def test_calibrated_time_sums_counts_and_falls_back_to_the_roofline() -> None:
    est = estimate(GUNDAM_2X3)
    vision = est.stage("vision")
    ops = [op for m in vision.modules for op in m.all_ops()]
    every = Calibration({k.key: 1000.0 for k in required_kernels([est])})
    got = calibrated_time(ops, every, PEAK)
    assert got.ns == pytest.approx(1000.0 * sum(c for op in ops for _, c in op.kernels))
    assert got.fallback_ns == 0 and got.missing == ()
    empty = calibrated_time(ops, Calibration({}), PEAK)
    assert empty.fallback_ns == empty.ns
    assert len(empty.missing) == len({k.key for op in ops for k, _ in op.kernels})
    # ops covered by another op's signature add no roofline time: below the all-ops roofline
    assert 0 < empty.ns <= (ops_roofline_ns(ops, PEAK) or 0)


def test_stage_metrics_carry_the_calibrated_prediction() -> None:
    est = estimate(GUNDAM_2X3)
    cal = Calibration({k.key: 500.0 for k in required_kernels([est])})
    rows = {r.stage: r for r in stage_metrics(est, {"prefill": StageTime(2_000_000.0, 5_000_000.0)}, PEAK, cal)}
    pre = rows["prefill"]
    n = sum(c for m in est.stage("prefill").modules for op in m.all_ops() for _, c in op.kernels)
    assert pre.calibrated_ns == pytest.approx(500.0 * n)
    assert pre.ratio_calibrated == pytest.approx(2_000_000.0 / (500.0 * n))
    assert rows["model"].calibrated_ns == pytest.approx(
        sum(rows[s].calibrated_ns or 0 for s in ("vision", "prefill", "decode"))
    )
    assert stage_metrics(est, {}, PEAK)[0].calibrated_ns is None


def _doc(**over: object) -> dict[str, object]:
    return {
        "schema": SCHEMA,
        "version": 1,
        "gpu": "NVIDIA H100 80GB HBM3",
        "device": "cuda",
        "dtype": "bf16",
        "kernels": [
            {"key": "gated[elements=10]", "median_ns": 1500, "error": None},
            {"key": "gated[elements=20]", "median_ns": None, "error": "CUDA out of memory"},
        ],
        **over,
    }


def test_calibration_file_round_trip_and_failed_entries(tmp_path: Path) -> None:
    f = tmp_path / "calibration.json"
    f.write_text(json.dumps(_doc()))
    cal = load_calibration(f)
    assert cal.times == {"gated[elements=10]": 1500.0}
    assert cal.failed == {"gated[elements=20]": "CUDA out of memory"}
    assert cal.describe()["gpu"] == "NVIDIA H100 80GB HBM3" and cal.source == str(f)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "calibration file not found; make one with `dsocr calibrate"),
        ("{not json", "calibration file is not valid JSON (line 1)"),
        (json.dumps({"schema": "other"}), "not a dsocr calibration file (schema is not dsocr.calibration)"),
        (json.dumps(_doc(version=7)), "calibration version 7 is not supported"),
        (json.dumps(_doc(kernels={})), 'has no "kernels" list'),
    ],
)
def test_bad_calibration_files_give_one_line(tmp_path: Path, content: str | None, message: str) -> None:
    f = tmp_path / "cal.json"
    if content is not None:
        f.write_text(content)
    with pytest.raises(DsocrError, match=message.replace("(", r"\(").replace(")", r"\)")) as exc:
        load_calibration(f)
    assert exc.value.exit_code == (ExitCode.NOT_FOUND if content is None else ExitCode.BAD_INPUT)
    assert "\n" not in message


def test_parse_rejects_entries_without_key() -> None:
    with pytest.raises(BadInput, match='entry has no "key"'):
        parse_calibration(_doc(kernels=[{"median_ns": 5}]))


def test_analyze_uses_the_run_directory_calibration(tmp_path: Path) -> None:
    from dsocr.analyze.input_files import sample_trace
    from dsocr.analyze.pipeline import run_analysis
    from dsocr.analyze.workload_from_run import WorkloadFlags, run_files, workloads_for

    run = tmp_path / "run"
    shutil.copytree(sample_trace(), run)
    files = run_files(run)
    work, _ = workloads_for(files, WorkloadFlags(), 2)
    assert work is not None
    ests = [estimate(w) for w in work.pages]
    keys = [k.key for k in required_kernels(ests)]
    dropped = next(k for k in keys if k.startswith("kv_append["))  # a decoder-only signature
    kept = [k for k in keys if k != dropped]
    doc = _doc(kernels=[{"key": k, "median_ns": 1000, "error": None} for k in kept], gpu="NVIDIA A100")
    (run / "calibration.json").write_text(json.dumps(doc))
    analysis = run_analysis([run])
    a = analysis.analytic
    assert a is not None
    cal = a.doc["calibration"]
    assert cal["required"] == len(keys) and cal["missing"] == 1 and cal["missing_keys"] == [dropped]
    assert any("measured on NVIDIA A100, the trace ran on NVIDIA H100 80GB HBM3" in w for w in analysis.warnings)
    rows = {r["stage"]: r for r in a.doc["stage_metrics"]}
    sam = [e.stage("vision").module("vision.sam") for e in ests]
    sam_n = sum(c for m in sam if m is not None for op in m.all_ops() for _, c in op.kernels)
    assert rows["sam"]["calibrated_ns"] == pytest.approx(1000.0 * sam_n)
    assert rows["sam"]["calibrated_fallback_ns"] == 0
    assert rows["prefill"]["calibrated_fallback_ns"] > 0  # the dropped kv_append falls back to its roofline
    busy, calibrated = rows["prefill"]["gpu_busy_ns"], rows["prefill"]["calibrated_ns"]
    assert rows["prefill"]["ratio_calibrated"] == pytest.approx(busy / calibrated)
