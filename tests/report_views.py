"""Hand-built report views for the report tests (numbers shaped like the H100 capture)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from dsocr.report.view import (
    DecodeStep,
    Identity,
    IdleGap,
    KernelView,
    MemoryView,
    Peaks,
    ReportView,
    RooflinePoint,
    StageView,
    Stat,
    Table,
    TimelineBin,
)


def full_view() -> ReportView:
    """A dsocr capture of three passes with every section filled."""
    stages = (
        StageView(
            "vision",
            range_ns=Stat.of([52e6, 50e6, 51e6]),
            gpu_busy_ns=Stat.of([40e6, 39e6, 40e6]),
            kernels=Stat.of([900, 900, 900]),
            unprofiled_ns=Stat.of([45e6, 44e6, 46e6]),
            launches=Stat.of([950, 950, 950]),
            syncs=Stat.of([1, 1, 1]),
            d2h_copies=Stat.of([0, 0, 0]),
            flops=9.1e12,
            bytes=2.0e9,
            predicted_ns=10e6,
            mfu_busy=Stat.of([0.23, 0.235, 0.23]),
            mfu_wall=Stat.of([0.18, 0.18, 0.18]),
            mbu_busy=Stat.of([0.015, 0.015, 0.015]),
        ),
        StageView(
            "sam",
            range_ns=Stat.of([30e6, 29e6, 30e6]),
            gpu_busy_ns=Stat.of([25e6, 24e6, 25e6]),
            kernels=Stat.of([500, 500, 500]),
            depth=1,
        ),
        StageView(
            "prefill",
            range_ns=Stat.of([80e6, 81e6, 79e6]),
            gpu_busy_ns=Stat.of([60e6, 61e6, 60e6]),
            kernels=Stat.of([1100, 1100, 1100]),
            unprofiled_ns=Stat.of([62e6, 63e6, 61e6]),
            launches=Stat.of([1150, 1150, 1150]),
            syncs=Stat.of([2, 2, 2]),
            d2h_copies=Stat.of([1, 1, 1]),
            tokens=900,
            flops=5.9e12,
            bytes=7.5e9,
            predicted_ns=8e6,
            mfu_busy=Stat.of([0.099, 0.098, 0.099]),
            mfu_wall=Stat.of([0.075, 0.074, 0.075]),
            mbu_busy=Stat.of([0.037, 0.037, 0.037]),
        ),
        StageView(
            "decode",
            range_ns=Stat.of([4.596e9, 4.2e9, 4.9e9]),
            gpu_busy_ns=Stat.of([159e6, 158e6, 160e6]),
            kernels=Stat.of([57000, 57000, 57000]),
            unprofiled_ns=Stat.of([3.3e9, 3.2e9, 3.4e9]),
            launches=Stat.of([57600, 57600, 57600]),
            syncs=Stat.of([0, 0, 0]),
            d2h_copies=Stat.of([64, 64, 64]),
            tokens=64,
            flops=0.37e12,
            bytes=420e9,
            predicted_ns=125e6,
            mfu_busy=Stat.of([0.0024, 0.0024, 0.0024]),
            mfu_wall=Stat.of([0.00008, 0.00008, 0.00008]),
            mbu_busy=Stat.of([0.79, 0.79, 0.79]),
        ),
    )
    categories = (
        ("vision", "gemm", 25e6),
        ("vision", "attention", 10e6),
        ("vision", "elementwise", 4e6),
        ("sam", "attention", 12e6),
        ("sam", "gemm", 10e6),
        ("prefill", "gemm", 40e6),
        ("prefill", "moe_routing", 12e6),
        ("prefill", "attention", 5e6),
        ("decode", "gemm", 70e6),
        ("decode", "moe_routing", 45e6),
        ("decode", "elementwise", 30e6),
        ("decode", "copy", 10e6),
    )
    kernels = (
        KernelView("decode", "nvjet_tst_64x8_64x16_4x1_v_bz_TNT", 40e6, 4000, 0.25, "gemm"),
        KernelView("decode", "void cub::DeviceRadixSortOnesweepKernel<...>", 20e6, 2800, 0.126, "moe_routing"),
        KernelView("prefill", "sm90_xmma_gemm_bf16bf16_bf16f32", 30e6, 60, 0.5, "gemm"),
    )
    operators = (KernelView("decode", "aten::_grouped_mm", 35e6, 704, 0.22, "gemm", "[[6, 1280], [64, 1280, 1792]]"),)
    steps = tuple(DecodeStep(i, 71e6 + (i % 5) * 0.5e6, 2.48e6, 901 + i) for i in range(64))
    timeline = tuple(
        TimelineBin(i * 50e6, (i + 1) * 50e6, 0.8 if i < 3 else 0.035, "prefill" if i < 3 else "decode")
        for i in range(40)
    )
    roof = (
        RooflinePoint("vision", "stage", 4550.0, 230e12),
        RooflinePoint("prefill", "stage", 787.0, 98e12),
        RooflinePoint("decode", "stage", 0.88, 2.3e12),
        RooflinePoint("decoder.layers.5.moe", "module", 0.7, 1.1e12),
    )
    return ReportView(
        identity=Identity(
            trace_files=("runs/test/trace.sqlite",),
            gpu="NVIDIA H100 80GB HBM3",
            driver="580.95",
            cuda="13.0",
            nsys_version="2025.3.2.0",
            schema_version="3.20.3",
            torch="2.11.0",
            model_source="random weights (replica)",
            random_weights=True,
            dtype="bfloat16",
            mode="base",
            pages=1,
            repeats=3,
            prompt_tokens=900,
            new_tokens=65,
        ),
        stages=stages,
        kernels=kernels,
        operators=operators,
        categories=categories,
        decode_steps=steps,
        timeline=timeline,
        roofline=roof,
        peaks=Peaks(989.4, 3.35, "table: NVIDIA H100 80GB HBM3"),
        model_mfu=Stat.of([0.0082, 0.0085, 0.0079]),
        memory=MemoryView(6.67e9, 46e6, (("prefill", 7.1e9), ("decode", 6.9e9)), (("device-to-host", 64, 512.0),)),
        idle_gaps=(IdleGap("decode", 1.2e9, 3.1e6),),
        assumptions=(("context-length mode", "auto"), ("nsys flags", "--trace=cuda,nvtx --sample=none")),
        pages=Table(("name", "kind", "size", "sha256"), (("page-01.png", "synthetic", "1024x1024", "ab12cd"),)),
        caveats=("Random weights: MoE routing is near uniform, unlike a trained checkpoint.",),
    )


def foreign_view() -> ReportView:
    """A foreign trace of one pass: stages only, no manifest, no timing, no analytic model."""
    return ReportView(
        identity=Identity(trace_files=("other.sqlite",), nsys_version="2023.4.4", schema_version="3.7.2"),
        stages=(
            StageView("prefill", Stat.of([80e6]), Stat.of([0.0]), Stat.of([0])),
            StageView("decode", Stat.of([400e6]), Stat.of([0.0]), Stat.of([0])),
        ),
    )


@functools.cache
def h100_analysis(path: str) -> dict[str, Any]:
    """The analysis document of the H100 fixture (computed once per test session)."""
    from dsocr.analyze.pipeline import run_analysis

    return json.loads(json.dumps(run_analysis([Path(path)]).to_dict(), default=str))
