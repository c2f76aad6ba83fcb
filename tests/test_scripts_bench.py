"""benchmarks/bench_analyze.py: per-process peak memory, the Markdown table, the docs section."""

from __future__ import annotations

import importlib.util
import json
import lzma
import sqlite3
import sys
from pathlib import Path
from types import ModuleType

import pytest

from conftest import H100_DIR, missing_fixture

REPO = Path(__file__).resolve().parents[1]


def _module() -> ModuleType:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("bench_analyze", REPO / "benchmarks" / "bench_analyze.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules["bench_analyze"] = mod
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def test_measure_reports_the_child_own_peak_and_exit_code() -> None:
    bench = _module()
    big = bench.measure([sys.executable, "-c", "b = bytearray(300_000_000); b[::4096] = b'x' * len(b[::4096])"])
    small = bench.measure([sys.executable, "-c", "pass"])
    assert big.rc == 0 and small.rc == 0
    assert big.peak_mb > 290
    assert small.peak_mb < 100  # not the earlier, larger child's peak (RUSAGE_CHILDREN would give that)
    failed = bench.measure([sys.executable, "-c", "raise SystemExit(3)"])
    assert failed.rc == 3


def _case(bench: ModuleType) -> object:
    case = bench.Case("H100 fixture", "/x.sqlite", 17.7, {"CUPTI_ACTIVITY_KIND_KERNEL": 71440, "NVTX ranges": 30646})
    case.dsocr = [bench.Sample(0.6, 1.0, 300.0, 0), bench.Sample(0.5, 0.9, 310.0, 0), bench.Sample(0.9, 1.2, 305.0, 0)]
    case.nvidia = {
        "nvtx_gpu_proj_sum": [bench.Sample(1.0, 1.0, 70.0, 0), bench.Sample(1.2, 1.0, 72.0, 0)],
        "cuda_gpu_kern_sum": [bench.Sample(0.2, 0.2, 50.0, 0), bench.Sample(0.4, 0.2, 52.0, 0)],
    }
    return case


def test_table_uses_medians_and_ratios() -> None:
    bench = _module()
    row = bench.table([_case(bench)]).splitlines()[2]
    # dsocr median 0.6 s; NVIDIA 1.1 + 0.3 = 1.4 s; peaks: 305 vs max(71, 51)
    assert row.startswith("| H100 fixture | 3 | 18 MB | 71,440 | 0 | 30,646 | 0.60 | 1.10 | 0.30 | 1.40 | **0.43** |")
    assert row.endswith("| 305 | 71 | 4.30 | not checked |")


def test_write_docs_replaces_only_its_own_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _module()
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n## Capture\n\nsomeone else's numbers\n")
    monkeypatch.setattr(bench, "DOCS", docs)
    bench.write_docs("first\n")
    bench.write_docs("second\n")
    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\n## Capture\n\nsomeone else's numbers\n\n## Analyzer")
    assert text.count(bench.BEGIN) == 1
    assert "second\n" in text and "first" not in text
    docs.write_text(text + "\n## Later section\n\nkept\n")
    bench.write_docs("third\n")
    assert docs.read_text().endswith("third\n" + bench.END + "\n\n## Later section\n\nkept\n")


def test_agreement_compares_with_nvidia_csvs(tmp_path: Path) -> None:
    bench = _module()
    oracle = H100_DIR
    if not (oracle / "cuda_gpu_kern_sum.csv").exists():
        missing_fixture(f"oracle CSVs in {oracle}")
    proj_csv, kern_csv = tmp_path / "proj.csv", oracle / "cuda_gpu_kern_sum.csv"
    proj_csv.write_bytes(lzma.decompress((oracle / "nvtx_gpu_proj_sum.csv.xz").read_bytes()))
    import polars as pl

    proj = pl.read_csv(proj_csv, infer_schema_length=None).select(
        pl.col("Range").alias("range"),
        pl.col("Style").alias("style"),
        pl.col("Range Instances").alias("instances"),
        pl.col("Total Proj Time:dur_ns").alias("total_proj_ns"),
        pl.col("Total GPU Ops").alias("gpu_ops"),
    )
    kern = pl.read_csv(kern_csv, infer_schema_length=None).select(
        pl.col("Name").alias("name"),
        pl.col("Instances").alias("instances"),
        pl.col("Total Time:dur_ns").alias("total_ns"),
    )
    out = tmp_path / "out"
    out.mkdir()
    doc = out / "analysis.json"
    doc.write_text(json.dumps({"nvtx_projection": proj.to_dicts(), "kernels": kern.to_dicts()}))
    assert bench.agreement(out, proj_csv, kern_csv) == "equal (12,879 ranges, 66 kernels)"
    off_by_one = proj.with_columns(
        pl.when(pl.col("range") == "decode").then(pl.col("total_proj_ns") + 1).otherwise(pl.col("total_proj_ns"))
    )
    doc.write_text(json.dumps({"nvtx_projection": off_by_one.to_dicts(), "kernels": kern.head(65).to_dicts()}))
    assert bench.agreement(out, proj_csv, kern_csv) == "DIFFERENT: 2 range rows, 1 kernel rows"
    # results.sqlite (every row, whatever analysis.json leaves out) wins over analysis.json
    with sqlite3.connect(out / "results.sqlite") as con:
        con.execute(
            "CREATE TABLE nvtx_projection (range TEXT, style TEXT, instances INT, total_proj_ns INT, gpu_ops INT)"
        )
        con.executemany("INSERT INTO nvtx_projection VALUES (?, ?, ?, ?, ?)", proj.rows())
        con.execute("CREATE TABLE kernels (name TEXT, instances INT, total_ns INT)")
        con.executemany("INSERT INTO kernels VALUES (?, ?, ?)", kern.rows())
    assert bench.agreement(out, proj_csv, kern_csv) == "equal (12,879 ranges, 66 kernels)"
    assert bench.agreement(tmp_path / "none", proj_csv, kern_csv) == "no dsocr output"
