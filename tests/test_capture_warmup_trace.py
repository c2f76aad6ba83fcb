"""The capture warm-up in a GPU trace: a top-level ``dsocr:warmup`` range holding a pass's kernels but no stage.

Two hand-built traces, equal but for the warm-up (range, module range and kernels before the first
repeat): every stage, per-pass, category, top-kernel, idle-gap and module table of the analyzer is the
same; only the whole-file tables (NVIDIA's kernel summary) count the warm-up's kernels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dsocr.analyze.pipeline import run_analysis
from dsocr.contract import nvtx_names as nv
from tracebuild import TraceBuilder

pytest.importorskip("polars")

#: (stage, start, end, payload) of one pass, relative to its start; kernels as (launch, start, end, name).
PASS_RANGES = (
    (nv.PAGE, 10, 8_990, 0),
    (nv.VISION, 20, 3_000, None),
    (nv.SAM, 30, 1_000, None),
    (nv.PREFILL, 3_000, 5_000, None),
    (nv.DECODE, 5_000, 8_000, None),
    (nv.DECODE_STEP, 5_010, 6_000, 0),
)
PASS_KERNELS = ((100, 200, 700, "sam_gemm"), (3_100, 3_200, 3_900, "prefill_gemm"), (5_100, 5_200, 5_300, "gemv"))


def _pass_work(b: TraceBuilder, t: int, mod: int, base: int) -> None:
    """A pass's GPU work: its kernels, and an ``lm_head`` module range around the prefill launch."""
    b.range(t, base + 3_050, base + 3_200, "lm_head", domain=mod)
    for launch, k0, k1, name in PASS_KERNELS:
        corr = b.api(t, base + launch, base + launch + 10, "cudaLaunchKernel_v7000")
        b.kernel(corr, base + k0, base + k1, name)


def build(path: Path, warmup: bool) -> Path:
    """2 repeats x 1 page at 20 us and 30 us; with ``warmup`` one untimed pass in a ``warmup`` range at 5 us."""
    b = TraceBuilder()
    b.gpu()
    t = b.thread()
    dsocr = b.domain(nv.DOMAIN, t)
    mod = b.domain(nv.MODULE_DOMAIN, t)
    if warmup:
        b.range(t, 5_000, 14_500, nv.WARMUP, domain=dsocr)
        _pass_work(b, t, mod, 5_000)
    for r in range(2):
        base = 20_000 + 10_000 * r
        b.range(t, base, base + 9_000, nv.REPEAT, domain=dsocr, payload=r)
        for stage, s0, s1, payload in PASS_RANGES:
            b.range(t, base + s0, base + s1, stage, domain=dsocr, payload=payload)
        _pass_work(b, t, mod, base)
    return b.write(path)


def _tables(path: Path) -> dict[str, Any]:
    d = run_analysis([path]).to_dict()
    keys = ("stages", "kernel_categories", "top_kernels", "repeats", "modules", "analytic")
    out = {k: d[k] for k in keys}
    for k in ("stage_instances", "idle_gaps"):  # range ids count the warmup range: compare without them
        out[k] = [{c: v for c, v in r.items() if c != "range_id"} for r in d[k]]
    return out


def test_the_warmup_changes_no_stage_or_pass_table(tmp_path: Path) -> None:
    cold, warm = build(tmp_path / "cold.sqlite", False), build(tmp_path / "warm.sqlite", True)
    a, b = _tables(cold), _tables(warm)
    assert b == a
    stages = {s["stage"]: (s["instances"], s["kernels"]) for s in b["stages"]}
    assert stages == {
        "repeat": (2, 6),
        "page": (2, 6),
        "vision": (2, 2),
        "sam": (2, 2),
        "prefill": (2, 2),
        "decode": (2, 2),
        "decode_step": (2, 2),
    }
    assert b["repeats"]["passes"] == 2 and b["modules"]["passes"] == 2
    assert {r["path"]: r["calls"] for r in b["modules"]["rows"] if r["measured_ns"] is not None} == {"lm_head": 1.0}


def test_only_the_whole_file_kernel_summary_counts_the_warmup(tmp_path: Path) -> None:
    cold = run_analysis([build(tmp_path / "cold.sqlite", False)]).to_dict()
    warm = run_analysis([build(tmp_path / "warm.sqlite", True)]).to_dict()
    assert {k["name"]: k["instances"] for k in cold["kernels"]} == {"sam_gemm": 2, "prefill_gemm": 2, "gemv": 2}
    assert {k["name"]: k["instances"] for k in warm["kernels"]} == {"sam_gemm": 3, "prefill_gemm": 3, "gemv": 3}
