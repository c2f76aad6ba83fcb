"""CUDA graph launches in both nsys modes: ``--cuda-graph-trace node`` (one kernel row per graph node, all
sharing the ``cudaGraphLaunch``'s correlation id) and ``graph`` (one CUPTI_ACTIVITY_KIND_GRAPH_TRACE row per
graph execution, no kernel rows for the nodes). Expected numbers are computed by hand from the trace below.

Each pass: prefill launches two kernels one by one; decode has two steps, each an operator range around one
``cudaGraphLaunch`` (graph 5: three kernels, two of them overlapping) and one ``cudaStreamSynchronize``.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
from pathlib import Path

import polars as pl
import pytest

from dsocr.analyze.kernels import KERNEL_COLUMNS, kernel_summary
from dsocr.analyze.load import load_trace
from dsocr.analyze.op_details import with_op_details
from dsocr.analyze.pipeline import run_analysis
from dsocr.analyze.projection import SUMMARY_COLUMNS, projection_summary
from dsocr.cli import main
from tracebuild import TraceBuilder

REPO = Path(__file__).resolve().parents[1]
STEP = 20_000  #: decode step 1 is decode step 0 shifted by this
#: graph 5's nodes in decode step 0 (node mode): name, start, end, stream
NODES = (
    ("gemm_kernel", 32_000, 34_000, 7),
    ("rms_norm_kernel", 33_500, 36_000, 8),
    ("elementwise_kernel", 37_000, 38_000, 7),
)
GRAPH = (32_000, 38_000)  #: graph 5's execution in decode step 0 (graph mode)
OPERATOR = "aten::graph_replay, op_id = 7, sizes = [[1, 8]]"


def build(path: Path, mode: str, *, prefill_graph: bool = False) -> Path:
    """The trace of one pass in ``mode`` (``node`` or ``graph``); ``prefill_graph``: prefill replays graph 9 too,
    so that the trace has no kernel rows at all in graph mode."""
    b = TraceBuilder()
    t = b.thread()
    d = b.domain("dsocr", t)
    b.range(t, 0, 100_000, "repeat", domain=d, payload=0)
    b.range(t, 100, 99_000, "page", domain=d, payload=0)
    b.range(t, 200, 20_000, "prefill", domain=d)
    if prefill_graph:
        corr = b.api(t, 300, 600, "cudaGraphLaunch_v10000")
        if mode == "node":
            b.kernel(corr, 1_000, 5_000, "gemm_kernel", graph_node=91)
            b.kernel(corr, 5_000, 6_000, "elementwise_kernel", graph_node=92)
        else:
            b.graph_exec(corr, 1_000, 6_000, 9, exec_id=2)
    else:
        b.kernel(b.api(t, 300, 400, "cudaLaunchKernel_v7000"), 1_000, 5_000, "gemm_kernel")
        b.kernel(b.api(t, 500, 600, "cudaLaunchKernel_v7000"), 5_000, 6_000, "elementwise_kernel")
    b.range(t, 30_000, 90_000, "decode", domain=d)
    for step in range(2):
        at = step * STEP
        b.range(t, 31_000 + at, 50_000 + at, "decode_step", domain=d, payload=step)
        b.range(t, 31_100 + at, 31_900 + at, OPERATOR)
        corr = b.api(t, 31_200 + at, 31_800 + at, "cudaGraphLaunch_v10000")
        if mode == "node":
            for node, (name, start, end, stream) in enumerate(NODES):
                b.kernel(corr, start + at, end + at, name, stream=stream, graph_node=node + 1)
        else:
            b.graph_exec(corr, GRAPH[0] + at, GRAPH[1] + at, 5)
        sync = b.api(t, 40_000 + at, 45_000 + at, "cudaStreamSynchronize_v3020")
        b.sync(sync, 40_100 + at, 44_900 + at)
    b.gpu()
    return b.write(path)


def _stage(analysis_stages: pl.DataFrame, stage: str) -> dict[str, object]:
    return analysis_stages.filter(pl.col("stage") == stage).row(0, named=True)


@pytest.mark.parametrize("mode", ["node", "graph"])
def test_decode_step_counts_one_launch_per_graph(tmp_path: Path, mode: str) -> None:
    """Launches are API calls (one per cudaGraphLaunch), syncs one per step; kernels and GPU busy by mode."""
    a = run_analysis([build(tmp_path / f"{mode}.sqlite", mode)])
    decode = _stage(a.stages, "decode")
    step = _stage(a.stages, "decode_step")
    assert decode["decode_steps"] == 2
    assert decode["launches_per_step"] == 1.0
    assert decode["syncs_per_step"] == 1.0
    assert step["launches"] == 2 and step["syncs"] == 2 and step["sync_records"] == 2
    if mode == "node":
        # per step: union of [32000, 34000), [33500, 36000), [37000, 38000) = 4000 + 1000; kernel time 5500
        assert decode["kernels_per_step"] == 3.0
        assert decode["gpu_busy_ns_per_step"] == 5_000.0
        assert (step["kernels"], step["gpu_ops"], step["kernel_ns"], step["gpu_busy_ns"]) == (6, 6, 11_000, 10_000)
    else:
        # per step: one graph execution [32000, 38000); no kernel rows inside graphs
        assert decode["kernels_per_step"] == 0.0
        assert decode["gpu_busy_ns_per_step"] == 6_000.0
        assert (step["kernels"], step["gpu_ops"], step["kernel_ns"], step["gpu_busy_ns"]) == (0, 2, 0, 12_000)
    # prefill: two kernels launched one by one, back to back
    prefill = _stage(a.stages, "prefill")
    assert (prefill["launches"], prefill["kernels"], prefill["gpu_busy_ns"]) == (2, 2, 5_000)
    # the pass: prefill + both steps
    assert _stage(a.stages, "repeat")["gpu_busy_ns"] == 5_000 + (10_000 if mode == "node" else 12_000)


def test_node_mode_attributes_every_kernel_of_a_graph_launch(tmp_path: Path) -> None:
    """Every node kernel finds the one cudaGraphLaunch; operators and kernel tables count each kernel."""
    path = build(tmp_path / "node.sqlite", "node")
    trace = load_trace(path)
    detailed = with_op_details(trace, trace.gpu_ops, ["graph_node_id"])
    ops = detailed.filter(pl.col("graph_node_id").is_not_null()).select("api_id", "tid").collect()
    assert ops.height == 6 and ops["api_id"].null_count() == 0 and ops["api_id"].n_unique() == 2
    a = run_analysis([path])
    op = a.operators.filter(pl.col("stage") == "decode_step").row(0, named=True)
    assert (op["operator"], op["calls"], op["kernels"], op["gpu_ops"], op["gpu_ns"]) == (
        "aten::graph_replay",
        2,
        6,
        6,
        11_000,
    )
    top = a.top_kernels.filter(pl.col("stage") == "decode_step").select("name", "instances", "total_ns").rows()
    assert top == [("rms_norm_kernel", 2, 5_000), ("gemm_kernel", 2, 4_000), ("elementwise_kernel", 2, 2_000)]
    assert not [w for w in a.warnings if "graph" in w]  # node mode itemizes the kernels: nothing to warn about


def test_graph_mode_reports_graph_rows_and_warns(tmp_path: Path) -> None:
    path = build(tmp_path / "graph.sqlite", "graph")
    a = run_analysis([path])
    top = a.top_kernels.filter(pl.col("stage") == "decode_step").select("name", "category", "instances", "total_ns")
    assert top.rows() == [("CUDA graph 5", "cuda_graph", 2, 12_000)]
    cats = a.categories.filter(pl.col("stage") == "decode").select("category", "kernels", "total_ns", "pct")
    assert cats.rows() == [("cuda_graph", 2, 12_000, 100.0)]
    op = a.operators.filter(pl.col("stage") == "decode_step").row(0, named=True)
    assert (op["calls"], op["kernels"], op["gpu_ops"], op["gpu_ns"]) == (2, 0, 2, 12_000)
    # NVIDIA's tables read kernels, copies and memsets only: the graph executions are not in them
    assert "CUDA graph 5" not in a.traces[0].kernels["name"].to_list()
    warned = [w for w in a.warnings if "--cuda-graph-trace graph" in w]
    assert len(warned) == 1
    assert "2 CUDA graph executions" in warned[0] and "not itemized" in warned[0]
    assert not [w for w in a.warnings if "no kernel record" in w]  # the graph launches have their GPU records


def test_graph_mode_without_any_kernel_row(tmp_path: Path) -> None:
    """Graph rows and no kernel table at all: GPU numbers per stage from the graphs, not a CPU-only report."""
    path = build(tmp_path / "graphs-only.sqlite", "graph", prefill_graph=True)
    with sqlite3.connect(path) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "CUPTI_ACTIVITY_KIND_KERNEL" not in tables
    a = run_analysis([path])
    assert _stage(a.stages, "prefill")["gpu_busy_ns"] == 5_000
    assert _stage(a.stages, "decode")["gpu_busy_ns_per_step"] == 6_000.0
    assert _stage(a.stages, "decode")["gpu_idle_frac"] is not None
    assert [w for w in a.warnings if "3 CUDA graph executions" in w]
    assert not [w for w in a.warnings if "no CUDA activity" in w]


def test_graph_mode_warning_in_every_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = build(tmp_path / "graph.sqlite", "graph")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(path), "--out", str(out), "-q"])
    assert exc.value.code == 0, capsys.readouterr().err
    needle = "kernels inside graphs are not itemized"
    for name in ("report.md", "summary.md", "report.html"):
        assert needle in (out / name).read_text(), name
    doc = json.loads((out / "analysis.json").read_text())
    assert any(needle in w for w in doc["warnings"])
    with sqlite3.connect(out / "results.sqlite") as con:
        rows = con.execute("SELECT graph_executions, graph_warning FROM traces").fetchall()
    assert rows[0][0] == 2 and needle in rows[0][1]
    assert doc["trace"]["graph_executions"] == 2


def _oracle(path: Path, report: str) -> pl.DataFrame | None:
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "nvidia-oracle.sh"), str(path), report], capture_output=True, text=True
    )
    if done.returncode == 3:
        return None
    assert done.returncode == 0, done.stderr
    return pl.read_csv(io.StringIO(done.stdout), infer_schema_length=None)


@pytest.mark.nsys
def test_node_mode_equals_nvidia(tmp_path: Path) -> None:
    """NVIDIA's nvtx_gpu_proj_sum counts a graph launch once (distinct correlation ids) and spans its kernels."""
    path = build(tmp_path / "node.sqlite", "node")
    oracle = _oracle(path, "nvtx_gpu_proj_sum")
    if oracle is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no nsys reports in CI (scripts/install-nsys.sh)")
        pytest.skip("no nsys reports (scripts/install-nsys.sh or DSOCR_NSYS_HOME)")
    oracle.columns = list(SUMMARY_COLUMNS)
    trace = load_trace(path)
    mine = projection_summary(trace)
    joined = oracle.join(mine, on=["range", "style"], how="full", suffix="_me", coalesce=True)
    assert joined.height == mine.height == oracle.height
    for c in SUMMARY_COLUMNS[2:]:
        assert joined.filter((pl.col(c) != pl.col(f"{c}_me")) | pl.col(f"{c}_me").is_null()).height == 0, c
    # by hand: each step's launch spans 32000..38000 (6000 ns), one GPU op (the launch) per step
    step = mine.filter(pl.col("range") == "dsocr:decode_step").row(0, named=True)
    assert (step["total_proj_ns"], step["gpu_ops"]) == (12_000, 2)
    kern = _oracle(path, "cuda_gpu_kern_sum")
    assert kern is not None
    kern = kern.drop("_Q1", "_Q3") if "_Q1" in kern.columns else kern
    kern.columns = list(KERNEL_COLUMNS)
    mine_k = kernel_summary(trace)
    assert mine_k.rows() == kern.select(mine_k.columns).rows()
