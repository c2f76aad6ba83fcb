"""The capture warm-up pass (``dsocr:warmup``, docs/nvtx-contract.md) in report.md's kernel tables.

A hand-built trace: warm-up pass (one ``warm_gemm`` of 5,000 ns and one ``step_gemm`` of 700 ns)
then one repeat > page > prefill launching ``step_gemm`` (300 ns). The whole-file kernel table
(NVIDIA's cuda_gpu_kern_sum) counts the warm-up and says so; the per-stage tables do not.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from dsocr.analyze.pipeline import run_analysis
from dsocr.report.markdown import markdown_text
from tracebuild import TraceBuilder


def _trace(path: Path, *, warmup: bool) -> Path:
    b = TraceBuilder()
    b.gpu()
    t = b.thread()
    dom = b.domain("dsocr", t)
    if warmup:
        b.kernel(b.api(t, 1_100, 1_110, "cudaLaunchKernel_v7000"), 1_200, 6_200, "warm_gemm")
        b.kernel(b.api(t, 6_300, 6_310, "cudaLaunchKernel_v7000"), 6_400, 7_100, "step_gemm")
        b.range(t, 1_000, 8_000, "warmup", domain=dom)
    b.kernel(b.api(t, 10_100, 10_110, "cudaLaunchKernel_v7000"), 10_200, 10_500, "step_gemm")
    b.range(t, 10_050, 11_000, "prefill", domain=dom)
    b.range(t, 10_020, 11_100, "page", domain=dom, payload=0)
    b.range(t, 10_000, 11_200, "repeat", domain=dom, payload=0)
    return b.write(path)


def test_whole_file_kernels_say_they_hold_the_warmup(tmp_path: Path) -> None:
    a = run_analysis([_trace(tmp_path / "w.sqlite", warmup=True)])
    whole = {n: (i, ns) for n, i, ns in a.traces[0].kernels.select("name", "instances", "total_ns").iter_rows()}
    assert whole == {"warm_gemm": (1, 5_000), "step_gemm": (2, 1_000)}  # NVIDIA's view: the warm-up counted
    per_stage = a.top_kernels.filter(pl.col("stage") == "prefill").select("name", "instances", "total_ns").rows()
    assert per_stage == [("step_gemm", 1, 300)]  # the stage tables: the repeat only
    proj = a.traces[0].nvtx_projection.filter(pl.col("range") == "dsocr:warmup")
    assert proj["total_proj_ns"].to_list() == [7_100 - 1_200]
    md = markdown_text(a)
    assert "total over the file, the capture warm-up pass included)" in md
    # the warm-up range projected onto the GPU: from the first kernel's start (1,200) to the last one's end (7,100)
    assert "the capture warm-up pass (`dsocr:warmup`, --capture-warmup; projected onto the GPU it spans 0.006 ms)" in md


def test_no_warmup_no_note(tmp_path: Path) -> None:
    md = markdown_text(run_analysis([_trace(tmp_path / "n.sqlite", warmup=False)]))
    assert "total over the file)" in md and "warm-up" not in md
