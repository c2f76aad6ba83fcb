"""benchmarks/make_synthetic_trace.py: exact replication of a real export, and operator ranges."""

from __future__ import annotations

import importlib.util
import io
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "make_synthetic_trace.py"
NSYS_HOME = Path(os.environ.get("DSOCR_NSYS_HOME", REPO / ".tools" / "nsys"))
REPORTS = NSYS_HOME / "usr" / "lib" / "x86_64-linux-gnu" / "nsight-systems" / "target-linux-x64" / "reports"

EVENT_TABLES = (
    "CUPTI_ACTIVITY_KIND_KERNEL",
    "CUPTI_ACTIVITY_KIND_RUNTIME",
    "CUPTI_ACTIVITY_KIND_MEMCPY",
    "CUPTI_ACTIVITY_KIND_MEMSET",
    "CUPTI_ACTIVITY_KIND_SYNCHRONIZATION",
)


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_synthetic_trace", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["make_synthetic_trace"] = mod
    spec.loader.exec_module(mod)
    return mod


def _count(path: Path, sql: str) -> int:
    with sqlite3.connect(path) as con:
        return int(con.execute(sql).fetchone()[0])


def _frame(path: Path, sql: str) -> pl.DataFrame:
    with sqlite3.connect(path) as con:
        cur = con.execute(sql)
        names = [d[0] for d in cur.description]
        return pl.DataFrame(cur.fetchall(), schema=names, orient="row")


@pytest.fixture(scope="module")
def x3(h100_sqlite: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "x3.sqlite"
    _module().build(h100_sqlite, out, scale=3)
    return out


def test_event_rows_exactly_multiplied(h100_sqlite: Path, x3: Path) -> None:
    for table in (*EVENT_TABLES, "PROFILER_OVERHEAD"):
        assert _count(x3, f"SELECT count(*) FROM {table}") == 3 * _count(h100_sqlite, f"SELECT count(*) FROM {table}")
    ranges = "SELECT count(*) FROM NVTX_EVENTS WHERE eventType IN (59, 60, 34)"
    assert _count(x3, ranges) == 3 * _count(h100_sqlite, ranges) == 3 * 30_646
    # metadata is kept once: a second CCCL domain row would duplicate every CCCL range in a join
    for table in ("StringIds", "ThreadNames", "PROCESSES", "TARGET_INFO_GPU"):
        assert _count(x3, f"SELECT count(*) FROM {table}") == _count(h100_sqlite, f"SELECT count(*) FROM {table}")
    assert _count(x3, "SELECT count(*) FROM NVTX_EVENTS WHERE eventType = 75") == 1


def test_replicas_are_shifted_monotonically_and_ids_unique(h100_sqlite: Path, x3: Path) -> None:
    kernels = _frame(x3, "SELECT start, end, correlationId FROM CUPTI_ACTIVITY_KIND_KERNEL")
    runtime = _frame(x3, "SELECT start, end, correlationId FROM CUPTI_ACTIVITY_KIND_RUNTIME")
    n = _count(h100_sqlite, "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL")
    # rows are appended replica by replica: each replica starts after the previous one ended
    spans = kernels.with_row_index("i").group_by(pl.col("i") // n).agg(pl.min("start"), pl.max("end")).sort("i")
    assert spans.height == 3
    assert (spans["start"].slice(1) > spans["end"].slice(0, 2)).all()
    assert runtime["correlationId"].is_unique().all()
    # every kernel still joins exactly one API call, which starts before it
    joined = kernels.join(runtime, on="correlationId", how="inner", suffix="_api")
    assert joined.height == kernels.height
    assert (joined["start_api"] <= joined["start"]).all()
    # the same row one replica later is shifted by one span; the session is stretched by two
    shift = kernels["start"][n] - kernels["start"][0]
    assert kernels["start"][2 * n] - kernels["start"][n] == shift
    duration = "SELECT duration FROM ANALYSIS_DETAILS"
    assert _count(x3, duration) == _count(h100_sqlite, duration) + 2 * shift


def test_open_range_is_closed_except_in_last_replica(tmp_path: Path) -> None:
    src = tmp_path / "tiny.sqlite"
    with sqlite3.connect(src) as con:
        con.execute(
            "CREATE TABLE NVTX_EVENTS (start INTEGER, end INTEGER, eventType INTEGER, rangeId INTEGER, text TEXT)"
        )
        con.executemany(
            "INSERT INTO NVTX_EVENTS VALUES (?, ?, ?, ?, ?)",
            [(5, None, 75, None, "dom"), (10, 20, 59, None, "a"), (12, None, 59, None, "open"), (30, 40, 60, 7, "s")],
        )
    out = tmp_path / "x2.sqlite"
    _module().replicate(src, out, 2)
    rows = _frame(out, "SELECT start, end, eventType, rangeId, text FROM NVTX_EVENTS ORDER BY start, text")
    shift = 40 - 5 + _module().GAP_NS
    assert rows.rows() == [
        (5, None, 75, None, "dom"),
        (10, 20, 59, None, "a"),
        (12, 40, 59, None, "open"),
        (30, 40, 60, 7, "s"),
        (10 + shift, 20 + shift, 59, None, "a"),
        (12 + shift, None, 59, None, "open"),
        (30 + shift, 40 + shift, 60, 7 + 8, "s"),
    ]


def test_op_ranges_nest_around_each_decode_step_launch(h100_sqlite: Path, tmp_path: Path) -> None:
    out = tmp_path / "ops.sqlite"
    counts = _module().build(h100_sqlite, out, scale=1, op_ranges=3)
    added = _frame(
        out,
        "SELECT start, end, globalTid, text FROM NVTX_EVENTS WHERE text LIKE 'aten::%' AND domainId = 0"
        " AND text LIKE '%op_id = 1______,%'",
    )
    # 72,732 GPU ops in decode_step ranges (NVIDIA's nvtx_gpu_proj_sum), one launch each
    assert added.height == 3 * 72_732
    assert counts["NVTX ranges"] == 30_646 + 3 * 72_732
    assert added["text"].str.extract(r"op_id = (\d+)").is_unique().all()
    assert added["text"][0].startswith("aten::linear, seq = 0, op_id = 1000000, sizes = [[1, 1280], [1280, 1280]]")
    # the three ranges of one launch are strictly nested (outermost first)
    triples = added.sort("start").with_row_index("i").group_by(pl.col("i") // 3).agg("start", "end")
    nested = triples.filter(
        (pl.col("start").list.get(0) < pl.col("start").list.get(1))
        & (pl.col("start").list.get(1) < pl.col("start").list.get(2))
        & (pl.col("end").list.get(0) > pl.col("end").list.get(1))
        & (pl.col("end").list.get(1) > pl.col("end").list.get(2))
    )
    assert nested.height == 72_732


def test_cli_bad_input_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite"
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(missing), str(tmp_path / "o.sqlite")], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert f"make_synthetic_trace: {missing}: no such file" in out.stderr


@pytest.mark.nsys
@pytest.mark.skipif(not REPORTS.is_dir(), reason=f"Debian's nsys not unpacked at {NSYS_HOME} (scripts/install-nsys.sh)")
def test_nvidia_kernel_summary_doubles(h100_sqlite: Path, tmp_path: Path) -> None:
    """NVIDIA's cuda_gpu_kern_sum on the 2x file: exactly 2x instances and totals, same min/median/max."""
    out = tmp_path / "x2.sqlite"
    _module().build(h100_sqlite, out, scale=2)

    def kern_sum(path: Path) -> pl.DataFrame:
        run = subprocess.run(
            ["bash", str(REPO / "scripts" / "nvidia-oracle.sh"), str(path), "cuda_gpu_kern_sum"],
            capture_output=True,
            check=True,
            env={**os.environ, "DSOCR_NSYS_HOME": str(NSYS_HOME)},
        )
        return pl.read_csv(io.BytesIO(run.stdout))

    one, two = kern_sum(h100_sqlite), kern_sum(out)
    j = one.join(two, on="Name", how="full", suffix="_2")
    assert one.height == two.height == j.height == 66
    assert (j["Instances_2"] == 2 * j["Instances"]).all()
    assert (j["Total Time:dur_ns_2"] == 2 * j["Total Time:dur_ns"]).all()
    for col in ("Min:dur_ns", "Med:dur_ns", "Max:dur_ns"):
        assert (j[f"{col}_2"] == j[col]).all()
