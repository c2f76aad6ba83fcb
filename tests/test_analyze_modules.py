"""Module attribution (``dsocr.module`` ranges) and GPU idle gaps on a hand-built trace with exact times."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from dsocr.analytic.metrics import module_metrics
from dsocr.analytic.peaks import resolve_peak
from dsocr.analytic.workload import estimate
from dsocr.analyze.pipeline import run_analysis
from dsocr.analyze.workload_from_run import WorkloadFlags, from_flags
from tracebuild import TraceBuilder


def build(path: Path) -> Path:
    """One repeat > page > prefill; module ranges decoder.layers.0 (> .attention) and lm_head.

    Kernels: A 100 ns (decoder.layers.0 only), B 50 ns (inside .attention too), C 30 ns (in
    prefill, no module), D 20 ns (lm_head); E 400 ns is launched outside every range, W 100 ns
    in an lm_head range outside the repeat.
    """
    b = TraceBuilder()
    b.gpu()
    t = b.thread()
    dsocr = b.domain("dsocr", t)
    mod = b.domain("dsocr.module", t)
    b.range(t, 0, 10_000, "repeat", domain=dsocr, payload=0)
    b.range(t, 10, 9_990, "page", domain=dsocr, payload=0)
    b.range(t, 20, 5_000, "prefill", domain=dsocr)
    b.range(t, 100, 400, "decoder.layers.0", domain=mod)
    b.range(t, 200, 300, "decoder.layers.0.attention", domain=mod)
    b.range(t, 500, 600, "lm_head", domain=mod)
    b.range(t, 30_000, 30_100, "lm_head", domain=mod)  # a warm-up call outside the repeat: not measured
    for api, (k0, k1), name in (
        (110, (1_000, 1_100), "gemm_A"),
        (210, (1_200, 1_250), "flash_fwd_B"),
        (450, (1_300, 1_330), "C"),
        (510, (1_400, 1_420), "elementwise_D"),
        (20_000, (20_100, 20_500), "E"),
        (30_010, (30_200, 30_300), "W"),
    ):
        corr = b.api(t, api, api + 10, "cudaLaunchKernel_v7000")
        b.kernel(corr, k0, k1, name)
    return b.write(path)


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    return build(tmp_path / "modules.sqlite")


def test_module_times_and_share(trace: Path) -> None:
    mods = run_analysis([trace]).to_dict()["modules"]
    assert mods["passes"] == 1
    # A + B + D inside modules, C not; E is outside the pass (no repeat range around it)
    assert (mods["attributed_gpu_ns"], mods["total_gpu_ns"], mods["unattributed_gpu_ns"]) == (170.0, 200.0, 30.0)
    assert mods["attributed_share"] == pytest.approx(0.85)
    rows = {r["path"]: r for r in mods["rows"]}
    got = {p: (r["calls"], r["measured_ns"], r["self_ns"]) for p, r in rows.items() if r["measured_ns"] is not None}
    assert got == {
        "decoder.layers.0": (1.0, 150.0, 100.0),  # A and B; B belongs to the inner attention range
        "decoder.layers.0.attention": (1.0, 50.0, 50.0),
        "lm_head": (1.0, 20.0, 20.0),
    }
    assert rows["lm_head"]["self_share"] == pytest.approx(20 / 200)
    # categories of the kernels inside each path's ranges: decoder.layers.0 holds a GEMM (100 ns) and the
    # attention kernel of its inner range (50 ns); the warm-up call W outside the pass is not counted
    cats = {(c["path"], c["category"]): (c["kernels"], c["kernel_ns"], c["share"]) for c in mods["categories"]}
    assert cats == {
        ("decoder.layers.0", "gemm"): (1.0, 100.0, pytest.approx(100 / 150)),
        ("decoder.layers.0", "attention"): (1.0, 50.0, pytest.approx(50 / 150)),
        ("decoder.layers.0.attention", "attention"): (1.0, 50.0, 1.0),
        ("lm_head", "elementwise"): (1.0, 20.0, 1.0),
    }


def test_module_times_beside_the_prediction(trace: Path) -> None:
    flags = WorkloadFlags(prefill_tokens=64, max_new_tokens=1)
    mods = run_analysis([trace], workload=flags).to_dict()["modules"]
    rows = {r["path"]: r for r in mods["rows"]}
    est = estimate(from_flags(flags).pages[0])
    predicted = {m.path: m for m in module_metrics(est, resolve_peak("NVIDIA H100 80GB HBM3"))}
    layer0 = rows["decoder.layers.0"]
    assert layer0["flops"] == predicted["decoder.layers.0"].flops
    assert layer0["ratio"] == pytest.approx(150.0 / predicted["decoder.layers.0"].predicted_ops_ns)
    # the model's paths without ranges in the trace stay, unmeasured
    assert rows["decoder.layers.1.moe.experts"]["measured_ns"] is None
    # the memory estimate: weights held (parameters x 2 bytes of bf16) and the largest activation working set
    pm = predicted["decoder.layers.0"]
    assert pm.weight_footprint_bytes > 0 and pm.act_peak_bytes > 0
    assert layer0["weight_footprint_bytes"] == pm.weight_footprint_bytes
    assert layer0["act_peak_bytes"] == pm.act_peak_bytes
    # decoder.layers.0 (attention + dense MLP, hidden 1280): its attention projections alone hold 4 x 1280^2
    assert pm.weight_footprint_bytes >= 4 * 1280 * 1280 * 2


def test_no_module_ranges_no_section(tmp_path: Path) -> None:
    b = TraceBuilder()
    t = b.thread()
    b.range(t, 0, 100, "prefill")
    b.kernel(b.api(t, 10, 20, "cudaLaunchKernel_v7000"), 30, 40, "k")
    assert run_analysis([b.write(tmp_path / "t.sqlite")]).to_dict()["modules"] is None


def test_idle_gaps_innermost_stage(trace: Path) -> None:
    gaps = run_analysis([trace]).to_dict()["idle_gaps"]
    # A|100|B|70... in prefill: gaps 1100-1200 (100), 1250-1300 (50), 1330-1400 (70); page and
    # repeat see the same gaps and do not repeat them
    assert [(g["stage"], g["start_ns"], g["duration_ns"]) for g in gaps] == [
        ("prefill", 1_100, 100),
        ("prefill", 1_330, 70),
        ("prefill", 1_250, 50),
    ]


def test_idle_gaps_ties_and_nesting() -> None:
    """Equal gaps: the earliest wins; a gap a nested instance also sees is the nested stage's."""
    from dsocr.analyze.gaps import idle_gaps

    instances = pl.DataFrame(
        {
            "range_id": [0, 1, 2],
            "stage": ["decode", "decode_step", "decode_step"],
            "depth": [0, 1, 1],
            "repeat": [None, None, None],
            "page": [None, None, None],
            "start": [0, 0, 90],
        },
        schema_overrides={"range_id": pl.UInt32, "depth": pl.UInt32, "repeat": pl.Int64, "page": pl.Int64},
    )
    ops = pl.DataFrame(
        {"op_id": [0, 1, 2, 3], "start": [0, 20, 100, 120], "end": [10, 30, 110, 130]},
        schema_overrides={"op_id": pl.UInt32},
    )
    pairs = pl.DataFrame(
        {"op_id": [0, 1, 2, 3, 0, 1, 2, 3], "range_id": [1, 1, 2, 2, 0, 0, 0, 0]},
        schema={"op_id": pl.UInt32, "range_id": pl.UInt32},
    )
    got = idle_gaps(instances, pairs.lazy(), ops.lazy(), top_n=1)
    assert got.select("stage", "range_id", "start_ns", "duration_ns").rows() == [
        ("decode", 0, 30, 70),
        ("decode_step", 1, 10, 10),
    ]
    assert got.schema["range_id"] == pl.UInt32


def test_idle_gaps_one_pass_equals_per_depth(h100_sqlite: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gaps of all depths found in one pass equal those found depth by depth (H100 fixture)."""
    import dsocr.analyze.gaps as gaps_mod
    from dsocr.analyze.attribution import attribute
    from dsocr.analyze.load import load_trace
    from dsocr.analyze.stages import analyze_stages

    trace = load_trace(h100_sqlite)
    att = attribute(trace)
    instances = analyze_stages(trace, att.op_ranges.lazy(), att.api_ranges.lazy()).instances
    assert instances["depth"].n_unique() > 1
    one = gaps_mod.idle_gaps(instances, att.op_ranges.lazy(), trace.gpu_ops, top_n=20)
    monkeypatch.setattr(gaps_mod, "ONE_PASS_PAIRS", -1)
    per_depth = gaps_mod.idle_gaps(instances, att.op_ranges.lazy(), trace.gpu_ops, top_n=20)
    assert one.height > 20
    key = ["duration_ns", "start_ns", "range_id"]
    assert one.sort(key).equals(per_depth.sort(key))


def test_module_tables_in_report_md_and_html(trace: Path) -> None:
    import json

    from dsocr.report.adapt import view_from_analysis
    from dsocr.report.html import render_html
    from dsocr.report.markdown import markdown_text

    flags = WorkloadFlags(prefill_tokens=64, max_new_tokens=1)
    analysis = run_analysis([trace], workload=flags)
    md = markdown_text(analysis)
    assert "### Measured vs predicted GPU time per module" in md and "### Kernel categories per module" in md
    # decoder.layers.0: GEMM 1 kernel, 0.000100 ms, 66.7% of its 150 ns of kernel time
    assert "| decoder.layers.0 | GEMM | 1.0 | 0.000 | 66.7% |" in md
    assert "weights (analytic)" in md and "activations peak (analytic)" in md
    view = view_from_analysis(json.loads(json.dumps(analysis.to_dict(), default=str)))
    assert view.modules is not None and view.module_categories is not None
    rows = {r[0]: r for r in view.modules.rows}
    assert set(rows) == {"decoder.layers.0", "decoder.layers.0.attention", "lm_head"}
    assert rows["decoder.layers.0"][1:3] == ("1.0", "0.000 ms")  # one call, 150 ns
    assert view.modules_note is not None and "85.0% of the pass's GPU busy time" in view.modules_note
    html = render_html(view)
    assert 'id="module-table"' in html and 'id="module-categories"' in html and "<td>attention</td>" in html


def test_module_categories_in_results_sqlite(trace: Path, tmp_path: Path) -> None:
    """results.sqlite's module_categories: per pass, the kernels of each path's ranges by category."""
    import sqlite3

    from dsocr.report.sqliteout import build_sqlite

    out = tmp_path / "results.sqlite"
    build_sqlite(run_analysis([trace]), out)
    with sqlite3.connect(out) as con:
        decl = {r[1]: r[2] for r in con.execute("PRAGMA table_info(module_categories)")}
        rows = con.execute("SELECT * FROM module_categories ORDER BY path, kernel_ns DESC").fetchall()
    assert decl == {"path": "TEXT", "category": "TEXT", "kernels": "REAL", "kernel_ns": "REAL", "share": "REAL"}
    # decoder.layers.0: A (GEMM, 100 ns) and B (attention, 50 ns) of its 150 ns; .attention: B only;
    # lm_head: D (elementwise, 20 ns); W, the lm_head call outside the pass, is not measured
    assert rows == [
        ("decoder.layers.0", "gemm", 1.0, 100.0, pytest.approx(100 / 150)),
        ("decoder.layers.0", "attention", 1.0, 50.0, pytest.approx(50 / 150)),
        ("decoder.layers.0.attention", "attention", 1.0, 50.0, 1.0),
        ("lm_head", "elementwise", 1.0, 20.0, 1.0),
    ]


def test_no_module_ranges_no_module_tables_in_results_sqlite(tmp_path: Path) -> None:
    import sqlite3

    from dsocr.report.sqliteout import build_sqlite

    b = TraceBuilder()
    t = b.thread()
    b.range(t, 0, 1_000, "step")
    b.kernel(b.api(t, 10, 20, "cudaLaunchKernel_v7000"), 30, 40, "gemm")
    out = tmp_path / "results.sqlite"
    build_sqlite(run_analysis([b.write(tmp_path / "t.sqlite")]), out)
    with sqlite3.connect(out) as con:
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "stages" in names and not names & {"module_metrics", "module_categories"}
