"""The three outputs: analysis.json carries NVIDIA-equal tables, results.sqlite mirrors it,
report.md renders the document object."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from conftest import read_oracle
from dsocr.analyze.analysis import Analysis
from dsocr.analyze.pipeline import run_analysis
from dsocr.report.jsonout import json_text
from dsocr.report.markdown import markdown_text, render_markdown
from dsocr.report.model import Document, Table, distinct_short_names, frac, short_kernel_name
from dsocr.report.sqliteout import tables, write_sqlite

TOP_LEVEL = {
    "schema_version",
    "trace",
    "traces",
    "nvtx_projection",
    "nvtx_projection_omitted",
    "kernels",
    "stages",
    "stage_instances",
    "kernel_categories",
    "top_kernels",
    "operators",
    "repeats",
    "idle_gaps",
    "analytic",
    "modules",
    "warnings",
}


@pytest.fixture(scope="module")
def h100_analysis(h100_sqlite: Path) -> Analysis:
    return run_analysis([h100_sqlite])


@pytest.fixture(scope="module")
def h100_doc(h100_analysis: Analysis) -> dict[str, Any]:
    return json.loads(json_text(h100_analysis))


@pytest.fixture(scope="module")
def h100_full_doc(h100_analysis: Analysis) -> dict[str, Any]:
    return json.loads(json_text(h100_analysis, full_projection=True))


def test_json_top_level(h100_doc: dict[str, Any], h100_sqlite: Path) -> None:
    assert set(h100_doc) == TOP_LEVEL
    assert h100_doc["schema_version"] == "1.0"
    t = h100_doc["trace"]
    assert (t["file"], t["product_version"], t["schema_version"], t["gpu"]) == (
        str(h100_sqlite),
        "2025.3.2.0",
        "3.20.3",
        "NVIDIA H100 80GB HBM3",
    )
    assert h100_doc["traces"] == []  # one file: its tables are the top-level ones


def test_json_projection_equals_nvidia(h100_full_doc: dict[str, Any]) -> None:
    oracle = read_oracle("nvtx_gpu_proj_sum")
    want = {
        (r["Range"], r["Style"]): (
            r["Range Instances"],
            r["Total Proj Time:dur_ns"],
            r["Total Range Time:dur_ns"],
            r["Total GPU Ops"],
        )
        for r in oracle.iter_rows(named=True)
    }
    got = {
        (r["range"], r["style"]): (r["instances"], r["total_proj_ns"], r["total_range_ns"], r["gpu_ops"])
        for r in h100_full_doc["nvtx_projection"]
    }
    assert got == want
    assert h100_full_doc["nvtx_projection_omitted"]["rows"] == 0
    first = h100_full_doc["nvtx_projection"][0]
    assert {"proj_avg_ns", "proj_median_ns", "proj_min_ns", "proj_max_ns", "proj_stddev_ns"} <= set(first)


def test_json_projection_leaves_out_op_instances(h100_doc: dict[str, Any], h100_full_doc: dict[str, Any]) -> None:
    """By default analysis.json drops the one-row-per-instance operator ranges and says so."""
    full, short = h100_full_doc["nvtx_projection"], h100_doc["nvtx_projection"]
    dropped = [r for r in full if r not in short]
    omitted = h100_doc["nvtx_projection_omitted"]
    assert omitted["rows"] == len(dropped) == 12874 and len(short) == 5
    assert all(", op_id = " in r["range"] and r["instances"] == 1 for r in dropped)
    assert "results.sqlite" in omitted["where"] and "--full-projection" in omitted["option"]
    assert short == [r for r in full if ", op_id = " not in r["range"]]


def test_json_kernels_equal_nvidia(h100_doc: dict[str, Any]) -> None:
    oracle = read_oracle("cuda_gpu_kern_sum")
    want = {r["Name"]: (r["Instances"], r["Total Time:dur_ns"]) for r in oracle.iter_rows(named=True)}
    got = {r["name"]: (r["instances"], r["total_ns"]) for r in h100_doc["kernels"]}
    assert got == want
    assert all(r["category"] != "other" for r in h100_doc["kernels"])


def test_json_stage_rows(h100_doc: dict[str, Any]) -> None:
    dec = next(s for s in h100_doc["stages"] if s["stage"] == "decode")
    proj = next(r for r in h100_doc["nvtx_projection"] if r["range"] == "decode")
    # the stage's GPU span summed over instances is NVIDIA's projected time of the range
    assert dec["gpu_span_ns"] == proj["total_proj_ns"]
    assert dec["cpu_ns"] == proj["total_range_ns"]
    assert dec["gpu_busy_ns"] < dec["gpu_span_ns"]
    assert len(h100_doc["stage_instances"]) == 3 + 3 + 76
    rep = h100_doc["repeats"]
    assert rep["passes"] == 1 and rep["flagged"] == []


def test_sqlite_mirrors_json(h100_analysis: Analysis, h100_doc: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    write_sqlite(h100_analysis, path)
    con = sqlite3.connect(path)
    names = {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
    assert names == set(tables(h100_analysis))
    for table, key in [
        ("stages", "stages"),
        ("stage_instances", "stage_instances"),
        ("nvtx_projection", "nvtx_projection"),
        ("kernels", "kernels"),
        ("top_kernels", "top_kernels"),
        ("operators", "operators"),
        ("kernel_categories", "kernel_categories"),
    ]:
        extra = h100_doc["nvtx_projection_omitted"]["rows"] if table == "nvtx_projection" else 0
        assert con.execute(f"select count(*) from {table}").fetchone() == (len(h100_doc[key]) + extra,), table
    row = con.execute("select instances, decode_steps, launches from stages where stage = 'decode'").fetchone()
    dec = next(s for s in h100_doc["stages"] if s["stage"] == "decode")
    assert row == (dec["instances"], dec["decode_steps"], dec["launches"])
    values = con.execute("select [values] from repeat_stats where stage = 'decode' and metric = 'cpu_ns'").fetchone()
    assert json.loads(values[0]) == [float(dec["cpu_ns"])]


def test_markdown_report(h100_analysis: Analysis) -> None:
    md = markdown_text(h100_analysis)
    for heading in (
        "## Stages",
        "### Per decode step",
        "## Kernel time by category",
        "## Top kernels",
        "## Top operators",
    ):
        assert heading in md
    assert "| decode | 76 |" in md  # per-step table: 76 decode steps
    assert "aten::_grouped_mm" in md
    assert "op_id" not in md.split("## NVTX ranges")[0]


def test_markdown_template_only_lays_out() -> None:
    doc = Document(
        title="T",
        facts=(("a", "b"),),
        warnings=("w1",),
        sections=(("S", (Table("tbl", ("x", "y"), (("1", "2"), ("3", "4")), note="n"),)), ("Empty", ())),
    )
    md = render_markdown(doc)
    assert md.startswith("# T\n")
    assert "- **a**: b" in md and "> warning: w1" in md
    assert "| x | y |\n| --- | --- |\n| 1 | 2 |\n| 3 | 4 |" in md
    assert "## Empty" in md and "No data." in md


def test_cpu_only_outputs(cpu_sqlite: Path, tmp_path: Path) -> None:
    a = run_analysis([cpu_sqlite])
    doc = json.loads(json_text(a))
    assert len(doc["warnings"]) == 1
    sam = next(s for s in doc["stages"] if s["stage"] == "sam")
    assert sam["gpu_idle_frac"] is None and sam["kernels"] == 0
    assert pl.DataFrame(doc["stage_instances"]).height == 2 + 4 * 7 + 20
    md = markdown_text(a)
    assert "## Repeats" in md and "Spread over 2 passes" in md


@pytest.mark.parametrize(
    ("full", "short"),
    [
        (
            "void at::native::elementwise_kernel<(int)128, (int)4, void at::native::gpu_kernel_impl_nocast<"
            "at::native::BinaryFunctor<float, float, float, at::native::binary_internal::MulFunctor<float>>>"
            "(at::TensorIteratorBase &, const T1 &)::[lambda(int) (instance 1)]>(int, T3)",
            "elementwise_kernel<MulFunctor>",
        ),
        (
            "void at::native::<unnamed>::CatArrayBatchedCopy<at::native::<unnamed>::OpaqueType<(unsigned int)2>, "
            "unsigned int, (int)4, (int)64, (int)64>(T1 *, at::native::<unnamed>::CatArrInputTensorMetadata<T1>)",
            "CatArrayBatchedCopy",
        ),
        (
            "void cutlass::device_kernel<at::cuda::detail::enable_3x_kernel_for_sm9x<cutlass::gemm::kernel::"
            "GemmUniversal<cutlass::gemm::GroupProblemShape<cute::tuple<int, int, int>>>>>(T1::Params)",
            "device_kernel<GemmUniversal>",
        ),
        ("nvjet_sm90_tst_64x8_64x16_4x1_v_bz_TNT", "nvjet_sm90_tst_64x8_64x16_4x1_v_bz_TNT"),
        ("at::native::<unnamed>::fill_reverse_indices_kernel(long *, int)", "fill_reverse_indices_kernel"),
    ],
)
def test_short_kernel_names_for_tables(full: str, short: str) -> None:
    assert short_kernel_name(full) == short


def test_markdown_tables_say_their_basis(cpu_sqlite: Path) -> None:
    """Totals over the passes and per-pass means are labelled as such; no CUDA: no 0.000 GPU busy column."""
    md = markdown_text(run_analysis([cpu_sqlite]))
    assert "### Stages (CPU side only: no GPU activity traced; total over 2 passes)" in md
    assert "### Spread over 2 passes (per pass, mean of 2)" in md
    spread = md.split("### Spread over 2 passes", 1)[1].split("\n## ", 1)[0]
    assert "GPU busy" in spread and "| 0.000 |" not in spread  # the note says n/a, no column of zeros
    assert "None" not in md.replace("None of the recommendation rules", "")


def test_markdown_per_stage_tables_in_pipeline_order(h100_analysis: Analysis) -> None:
    md = markdown_text(h100_analysis)
    heads = [ln for ln in md.splitlines() if ln.startswith("### Top kernels: ")]
    assert heads == ["### Top kernels: prefill (total over 1 pass)", "### Top kernels: decode (total over 1 pass)"]
    # one label table: GEMM, never the raw category key
    assert "| GEMM |" in md and "| gemm |" not in md


def test_distinct_short_names_never_merge_kernels() -> None:
    a = (
        "void at::native::elementwise_kernel<(int)128, (int)4, void at::native::gpu_kernel_impl_nocast<"
        "at::native::BinaryFunctor<float, float, float, at::native::binary_internal::MulFunctor<float>>>"
        "(at::TensorIteratorBase &, const T1 &)::[lambda(int) (instance 1)]>(int, T3)"
    )
    b = a.replace("(int)4", "(int)2")  # the same functor, another template: a different kernel
    c = a.replace("MulFunctor", "DivFunctor")
    names = distinct_short_names([a, b, c, a])
    assert names == [
        "elementwise_kernel<MulFunctor>",
        "elementwise_kernel<MulFunctor> #2",
        "elementwise_kernel<DivFunctor>",
        "elementwise_kernel<MulFunctor>",
    ]


def test_small_percentages_keep_significant_digits() -> None:
    assert frac(0.00047859) == "0.048%" and frac(0.0234) == "2.3%" and frac(0.0) == "0.0%"
    assert frac(8.88e-05) == "0.0089%" and frac(None) == "n/a"
    assert frac(1.9e-16) == "0.0%" and frac(-2e-17) == "0.0%"  # float rounding of an exact zero (CV of equal values)


def test_markdown_top_kernels_keep_kernels_apart(h100_analysis: Analysis) -> None:
    """The "Top 30 kernels" table: readable short names, one per kernel (none read the same)."""
    md = markdown_text(h100_analysis)
    table = md.split("### Top 30 kernels", 1)[1].split("\n## ", 1)[0]
    names = [ln.split(" | ")[0].removeprefix("| ") for ln in table.splitlines() if ln.startswith("| ")][2:]
    assert len(names) == 30 and len(set(names)) == 30
    assert "elementwise_kernel<MulFunctor>" in names
    assert not any("gpu_kernel_impl_no" in n for n in names)
