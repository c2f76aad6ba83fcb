"""A data-parallel export (2 workers on 2 GPUs, built from the H100 fixture by
benchmarks/make_multi_trace.py): dsocr's projection and kernel tables equal NVIDIA's scripts on it,
and the per-device tables see both devices."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from dsocr.analyze.kernels import KERNEL_COLUMNS, kernel_summary
from dsocr.analyze.load import load_trace
from dsocr.analyze.op_details import with_op_details
from dsocr.analyze.projection import SUMMARY_COLUMNS, projection_summary

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


@pytest.fixture(scope="module")
def two_gpus(h100_sqlite: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from make_multi_trace import multi_device

    out = tmp_path_factory.mktemp("multi") / "two-gpus.sqlite"
    multi_device(h100_sqlite, out, 2)
    return out


def _oracle(path: Path, report: str) -> pl.DataFrame | None:
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "nvidia-oracle.sh"), str(path), report], capture_output=True, text=True
    )
    if done.returncode == 3:
        return None
    assert done.returncode == 0, done.stderr
    return pl.read_csv(io.StringIO(done.stdout), infer_schema_length=None)


def test_the_synthetic_export_has_two_processes_on_two_devices(two_gpus: Path, h100_sqlite: Path) -> None:
    h100 = h100_sqlite
    trace = load_trace(two_gpus)
    detailed = with_op_details(trace, trace.gpu_ops, ["device_id", "global_pid"])
    ops = detailed.group_by("device_id").agg(pl.col("global_pid").n_unique()).collect().sort("device_id")
    assert ops.rows() == [(0, 1), (1, 1)]
    assert sorted(g.device_id for g in trace.gpus) == [0, 1]
    # every copy and memset finds its launching call in its own process (the loader's multi-process join)
    unmatched = trace.gpu_ops.group_by("kind").agg(pl.col("api_id").null_count()).collect().sort("kind")
    one = load_trace(h100).gpu_ops.group_by("kind").agg(pl.col("api_id").null_count()).collect().sort("kind")
    assert unmatched["api_id"].to_list() == [2 * n for n in one["api_id"].to_list()]


@pytest.mark.nsys
@pytest.mark.slow
def test_projection_and_kernels_equal_nvidia_on_two_gpus(two_gpus: Path) -> None:
    trace = load_trace(two_gpus)
    oracle = _oracle(two_gpus, "nvtx_gpu_proj_sum")
    if oracle is None:
        pytest.skip("no nsys reports (scripts/install-nsys.sh or DSOCR_NSYS_HOME)")
    oracle.columns = list(SUMMARY_COLUMNS)
    mine = projection_summary(trace)
    assert mine.height == oracle.height
    joined = oracle.join(mine, on=["range", "style"], how="full", suffix="_me", coalesce=True)
    for c in SUMMARY_COLUMNS[2:]:
        assert joined.filter((pl.col(c) != pl.col(f"{c}_me")) | pl.col(f"{c}_me").is_null()).height == 0, c
    assert mine["total_proj_ns"].to_list() == oracle["total_proj_ns"].to_list()
    kern = _oracle(two_gpus, "cuda_gpu_kern_sum")
    assert kern is not None
    kern = kern.drop("_Q1", "_Q3") if "_Q1" in kern.columns else kern
    kern.columns = list(KERNEL_COLUMNS)
    mine_k = kernel_summary(trace)
    assert mine_k.rows() == kern.select(mine_k.columns).rows()


def test_per_device_tables_of_two_gpus(two_gpus: Path, h100_sqlite: Path, tmp_path: Path) -> None:
    import json
    import sqlite3

    from dsocr.analyze.pipeline import run_analysis
    from dsocr.cli import main

    one = run_analysis([h100_sqlite])
    assert one.devices is None  # one worker: no per-device tables, outputs as before
    two = run_analysis([two_gpus])
    d = two.devices
    assert d is not None
    assert d.workers.select("worker", "device_id", "gpu").rows() == [
        (0, 0, "NVIDIA H100 80GB HBM3"),
        (1, 1, "NVIDIA H100 80GB HBM3"),
    ]
    # each worker is the whole source trace: its stage sums are the one-GPU trace's
    single = one.stages.select("stage", "cpu_ns", "gpu_busy_ns").sort("stage")
    for w in (0, 1):
        mine = d.stages.filter(pl.col("worker") == w).select("stage", "cpu_ns", "gpu_busy_ns").sort("stage")
        assert mine.rows() == single.filter(pl.col("stage").is_in(mine["stage"].implode())).rows()
    assert d.balance["ratio"].to_list() == [1.0] * d.balance.height
    assert d.throughput.select("workers", "devices").rows() == [(2, 2)]
    span = d.throughput["span_ns"].item()
    assert span == int(d.workers["span_ns"].max()) + 137_000  # worker 1 starts 137 us later  # type: ignore[arg-type]
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(two_gpus), "--out", str(tmp_path / "o"), "--format", "json,md,sqlite,html", "--quiet"])
    assert exc.value.code == 0
    doc = json.loads((tmp_path / "o" / "analysis.json").read_text())
    assert [w["device_id"] for w in doc["devices"]["workers"]] == [0, 1]
    assert "## Devices (data-parallel workers)" in (tmp_path / "o" / "report.md").read_text()
    html = (tmp_path / "o" / "report.html").read_text()
    assert '<section id="devices">' in html and "Load balance" in html
    with sqlite3.connect(tmp_path / "o" / "results.sqlite") as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"device_workers", "device_stages", "device_balance", "device_throughput"} <= tables
