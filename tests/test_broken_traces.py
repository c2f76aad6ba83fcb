"""Broken traces through ``dsocr analyze`` as a subprocess (docs/reliability.md, "Broken traces").

Each trace is built here (tests/tracebuild.py): ranges that never closed, an NVTX table without
ranges, missing kernel, runtime or StringIds tables. A refusal is one ``dsocr: error:`` line with
the documented exit code and nothing written; a degraded report exits 0 and says what is missing
on stderr and first in every report file. The subprocess timeout is far beyond any run here: only
a hang (or the quadratic nesting of unclosed ranges, which ran for minutes) reaches it.
"""

from __future__ import annotations

import html
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dsocr.analyze.pipeline import run_analysis
from dsocr.contract import nvtx_names as nv
from dsocr.contract.errors import BadInput, ExitCode
from tracebuild import TraceBuilder

LAUNCH = "cudaLaunchKernel_v7000"
#: Far beyond the few seconds a run takes here: only a hang gets there.
HANG_S = 300
#: Ranges left open in the "many open" traces: nested in one chain, quadratic work for the old loader.
MANY_OPEN = 20_000


def analyze(trace: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSOCR_")}
    env["DSOCR_CACHE_DIR"] = str(out.parent / "cache")
    return subprocess.run(
        [sys.executable, "-m", "dsocr", "analyze", str(trace), "--out", str(out), "-q", *extra],
        capture_output=True,
        text=True,
        timeout=HANG_S,
        env=env,
        check=False,
    )


def refused(res: subprocess.CompletedProcess[str], out: Path, code: ExitCode = ExitCode.BAD_INPUT) -> str:
    """The one error line of a refusal (checked: exit code, one line, no traceback, nothing written)."""
    lines = res.stderr.strip().splitlines()
    assert res.returncode == code, res.stderr
    assert len(lines) == 1 and lines[0].startswith("dsocr: error: "), res.stderr
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr
    assert not out.exists() or not any(out.iterdir())
    return lines[0]


def reported(res: subprocess.CompletedProcess[str], out: Path) -> tuple[list[str], dict[str, Any]]:
    """The warning lines of a degraded report (exit 0) and its analysis.json; each warning comes first
    in summary.md, report.md and report.html, and in analysis.json right behind the trace."""
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    warnings = [ln.removeprefix("dsocr: warning: ") for ln in res.stderr.splitlines() if ln.startswith("dsocr: warn")]
    text = (out / "analysis.json").read_text(encoding="utf-8")
    doc = json.loads(text)
    assert doc["warnings"] == warnings and list(doc)[:3] == ["schema_version", "trace", "warnings"]
    summary = (out / "summary.md").read_text(encoding="utf-8").splitlines()
    assert summary[2 : 2 + 2 * len(warnings) : 2] == [f"> warning: {w}" for w in warnings]
    report = (out / "report.md").read_text(encoding="utf-8")
    head = report.split("## Summary")[0]
    assert all(f"> warning: {w}" in head for w in warnings)
    assert all(report.count(w) == 1 for w in warnings)  # not again in the summary below
    page = html.unescape((out / "report.html").read_text(encoding="utf-8"))
    top = page.split('<section id="summary"')[1].split("</section>")[0]
    assert all(f"Warning: {w}" in top for w in warnings)
    return warnings, doc


def dsocr_trace(b: TraceBuilder, repeats: int = 2, steps: int = 3, *, kernels: bool = True, t0: int = 1000) -> int:
    """``repeats`` x (page > vision, prefill, decode > ``steps`` decode_step) in the dsocr domain, one kernel
    launch per stage leaf; returns the thread."""
    t = b.thread()
    d = b.domain(nv.DOMAIN, t)
    now = t0

    def leaf(name: str, payload: int | None = None) -> None:
        nonlocal now
        b.range(t, now, now + 100, name, domain=d, payload=payload)
        corr = b.api(t, now + 10, now + 20, LAUNCH)
        if kernels:
            b.kernel(corr, now + 30, now + 60, f"{name}_kernel")
        now += 110

    for r in range(repeats):
        r0 = now
        now += 5
        p0 = now
        now += 5
        leaf(nv.VISION)
        leaf(nv.PREFILL)
        d0 = now
        now += 5
        for s in range(steps):
            leaf(nv.DECODE_STEP, payload=s)
        b.range(t, d0, now, nv.DECODE, domain=d)
        b.range(t, p0, now + 1, nv.PAGE, domain=d, payload=0)
        b.range(t, r0, now + 2, nv.REPEAT, domain=d, payload=r)
        now += 10
    b.session = (0, now + 1000)
    return t


def built(tmp_path: Path, name: str, b: TraceBuilder, **write: Any) -> Path:
    return b.write(tmp_path / f"{name}.sqlite", **write)


# ---- ranges that never closed (issue 13 item 3) ----


def test_all_ranges_open_is_refused_quickly(tmp_path: Path) -> None:
    b = TraceBuilder()
    t = b.thread()
    for i in range(MANY_OPEN):
        b.range(t, 10 + i, None, "step")
    for i in range(50):
        b.kernel(b.api(t, 100 + 1000 * i, 110 + 1000 * i, LAUNCH), 120 + 1000 * i, 130 + 1000 * i, "k")
    out = tmp_path / "out"
    line = refused(analyze(built(tmp_path, "open", b), out), out)
    assert "all its NVTX ranges are open" in line and f"{MANY_OPEN:,} NVTX ranges never closed (step x" in line


def test_many_open_ranges_are_left_out_and_counted(tmp_path: Path) -> None:
    """20,000 unclosed ranges around a complete dsocr trace: the same stages as without them, and counted."""
    clean = TraceBuilder()
    dsocr_trace(clean)
    b = TraceBuilder()
    t = dsocr_trace(b)
    for i in range(MANY_OPEN):
        b.range(t, 1 + i % 900, None, f"leftover_{i % 7}")
    res = analyze(built(tmp_path, "many", b), tmp_path / "out")
    warnings, doc = reported(res, tmp_path / "out")
    assert len(warnings) == 1 and f"{MANY_OPEN:,} NVTX ranges never closed (leftover_0 x2858" in warnings[0]
    assert "the closed ranges inside them are reported" in warnings[0]
    assert doc["trace"]["open_ranges"] == MANY_OPEN and doc["trace"]["gpu_lost"] is None
    expected = run_analysis([built(tmp_path, "clean", clean)])
    got = {(r["stage"], r["instances"], r["cpu_ns"], r["gpu_busy_ns"], r["kernels"]) for r in doc["stages"]}
    assert got == set(expected.stages.select("stage", "instances", "cpu_ns", "gpu_busy_ns", "kernels").rows())
    assert doc["repeats"]["passes"] == 2
    # NVIDIA-equal projection: the open ranges are not in it, the closed ones are as without them
    names = {r["range"] for r in doc["nvtx_projection"]}
    assert names == set(expected.traces[0].nvtx_projection["range"].to_list())


def test_a_pass_cut_short_is_left_out_with_its_open_ranges(tmp_path: Path) -> None:
    """A capture stopped inside the second repeat: its repeat, page and decode never closed."""
    b = TraceBuilder()
    dsocr_trace(b, repeats=2)
    ranges = b.rows["NVTX_EVENTS"]
    repeat = [r for r in ranges if r.get("text") == nv.REPEAT][1]
    cut = repeat["start"] + 400  # inside the second pass's decode
    for r in ranges:
        if r["eventType"] == 59 and r["start"] < cut < r["end"]:
            r["end"] = None
    b.rows["NVTX_EVENTS"] = [r for r in ranges if r["eventType"] != 59 or r["start"] < cut]
    res = analyze(built(tmp_path, "cut", b), tmp_path / "out")
    warnings, doc = reported(res, tmp_path / "out")
    assert warnings[0].endswith("the 3 closed stage ranges of the pass they cut short are left out too")
    assert "4 NVTX ranges never closed (dsocr:decode x1, dsocr:decode_step x1, dsocr:page x1, ...)" in warnings[0]
    assert doc["trace"]["open_ranges"] == 4
    assert {r["stage"]: r["instances"] for r in doc["stages"]} == {
        nv.REPEAT: 1,
        nv.PAGE: 1,
        nv.VISION: 1,
        nv.PREFILL: 1,
        nv.DECODE: 1,
        nv.DECODE_STEP: 3,
    }
    assert doc["repeats"]["passes"] == 1
    assert {r["repeat"] for r in doc["stage_instances"]} == {0}


REPO = Path(__file__).resolve().parents[1]
NSYS_HOME = Path(os.environ.get("DSOCR_NSYS_HOME", REPO / ".tools" / "nsys"))
REPORTS = NSYS_HOME / "usr" / "lib" / "x86_64-linux-gnu" / "nsight-systems" / "target-linux-x64" / "reports"


@pytest.mark.skipif(not REPORTS.is_dir(), reason=f"Debian's nsys not unpacked at {NSYS_HOME} (scripts/install-nsys.sh)")
def test_nvidia_reports_invent_two_different_ends(tmp_path: Path) -> None:
    """What docs/reliability.md says of NVIDIA's scripts: nvtx_sum ends an open range at the last NVTX event
    of any kind, nvtx_gpu_proj_sum at the last range timestamp; dsocr leaves it out and keeps the closed ranges
    as NVIDIA projects them (their nesting level aside: NVIDIA counts the open range as a parent)."""
    import io

    import polars as pl

    from dsocr.analyze.load import load_trace
    from dsocr.analyze.projection import projection_summary

    b = TraceBuilder()
    t, other = b.thread(), b.thread(100, 101)
    b.range(t, 100, None, "open_outer")
    b.range(t, 200, 500, "closed")
    b.range(other, 50, 3000, "other_thread")
    b.mark(other, 4000, "late_mark")
    b.kernel(b.api(t, 210, 220, LAUNCH), 230, 300, "k")
    path = built(tmp_path, "open", b)

    def oracle(report: str) -> pl.DataFrame:
        run = subprocess.run(
            ["bash", str(REPO / "scripts" / "nvidia-oracle.sh"), str(path), report],
            capture_output=True,
            check=True,
            env={**os.environ, "DSOCR_NSYS_HOME": str(NSYS_HOME)},
        )
        return pl.read_csv(io.BytesIO(run.stdout))

    nvtx_sum = dict(oracle("nvtx_sum").select("Range", "Total Time:dur_ns").iter_rows())
    proj = oracle("nvtx_gpu_proj_sum")
    assert nvtx_sum["open_outer"] == 4000 - 100  # the mark is the last NVTX event
    assert proj.filter(pl.col("Range") == "open_outer")["Total Range Time:dur_ns"].item() == 3000 - 100
    nvidia = proj.filter(pl.col("Range") == "closed").row(0, named=True)
    trace = load_trace(path)
    assert trace.meta.open_ranges.count == 1
    ours = projection_summary(trace).row(0, named=True)
    assert (ours["range"], ours["total_proj_ns"], ours["total_range_ns"], ours["gpu_ops"]) == (
        "closed",
        nvidia["Total Proj Time:dur_ns"],
        nvidia["Total Range Time:dur_ns"],
        nvidia["Total GPU Ops"],
    )
    assert (nvidia["Avg Range Lvl"], ours["avg_level"]) == (1.0, 0.0)


# ---- no usable NVTX ranges (item 4) ----


def _no_ranges(kind: str) -> TraceBuilder:
    b = TraceBuilder()
    t = b.thread()
    if kind == "marks":
        b.mark(t, 50, "only a mark")
    if kind in ("domains", "marks"):
        b.domain(nv.DOMAIN, t)
    b.kernel(b.api(t, 100, 110, LAUNCH), 120, 130, "k")
    return b


@pytest.mark.parametrize("kind", ["empty", "marks", "domains"])
def test_nvtx_table_without_ranges_is_refused(tmp_path: Path, kind: str) -> None:
    """What the nvtx/nsys version trap leaves: the table, but no ranges (an internal error before)."""
    out = tmp_path / "out"
    path = built(tmp_path, kind, _no_ranges(kind), force_tables=("NVTX_EVENTS",))
    line = refused(analyze(path, out), out)
    assert "its NVTX_EVENTS table holds no NVTX ranges" in line
    assert 'pip install "nvtx>=0.2.10,<0.2.12"' in line and "docs/troubleshooting.md" in line


def test_only_operator_ranges_are_refused(tmp_path: Path) -> None:
    b = TraceBuilder()
    t = b.thread()
    b.range(t, 100, 200, "aten::mm")
    b.range(t, 300, 400, "aten::add")
    b.kernel(b.api(t, 110, 120, LAUNCH), 130, 140, "k")
    out = tmp_path / "out"
    line = refused(analyze(built(tmp_path, "ops", b), out), out)
    assert "none of its 2 NVTX ranges is a stage" in line


# ---- missing kernel, runtime or StringIds tables (item 7) ----


def _gpu_stage_numbers_absent(doc: dict[str, Any]) -> None:
    assert all(r["gpu_idle_frac"] is None and r["gpu_busy_ns"] == 0 for r in doc["stages"])
    assert doc["top_kernels"] == [] and doc["kernel_categories"] == []


@pytest.mark.parametrize("kernel_table", ["missing", "empty"])
def test_lost_kernel_records_give_no_gpu_numbers_or_advice(tmp_path: Path, kernel_table: str) -> None:
    b = TraceBuilder()
    dsocr_trace(b, kernels=False)
    force = ("CUPTI_ACTIVITY_KIND_KERNEL",) if kernel_table == "empty" else ()
    res = analyze(built(tmp_path, kernel_table, b, force_tables=force), tmp_path / "out")
    warnings, doc = reported(res, tmp_path / "out")
    assert len(warnings) == 1
    assert "10 kernel launch calls but no kernel records: nsys lost them" in warnings[0]
    assert doc["trace"]["gpu_lost"] == "kernels"
    _gpu_stage_numbers_absent(doc)
    summary = (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")
    assert "the GPU time per stage is unknown: the trace lost its kernel records" in summary
    assert "No advice on the GPU side" in summary
    assert "sat idle" not in summary and "kernel launches (more than" not in summary


def test_missing_runtime_table_keeps_the_kernel_table_only(tmp_path: Path) -> None:
    b = TraceBuilder()
    dsocr_trace(b)
    res = analyze(built(tmp_path, "noruntime", b, drop_tables=("CUPTI_ACTIVITY_KIND_RUNTIME",)), tmp_path / "out")
    warnings, doc = reported(res, tmp_path / "out")
    assert len(warnings) == 1 and "it has no CUDA API table (CUPTI_ACTIVITY_KIND_RUNTIME)" in warnings[0]
    assert doc["trace"]["gpu_lost"] == "api_calls"
    _gpu_stage_numbers_absent(doc)
    assert sum(k["instances"] for k in doc["kernels"]) == 10  # the whole-trace kernel table stays
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "The trace lost the records that tie GPU work to the stages" in page
    assert "No advice on the GPU side" in page


def test_some_lost_kernel_records_are_a_warning(tmp_path: Path) -> None:
    b = TraceBuilder()
    dsocr_trace(b)
    b.rows["CUPTI_ACTIVITY_KIND_KERNEL"].pop()  # 1 of 10 launches without its kernel
    res = analyze(built(tmp_path, "some", b), tmp_path / "out")
    warnings, doc = reported(res, tmp_path / "out")
    assert warnings == [
        f"{tmp_path / 'some.sqlite'}: 1 of its 10 kernel launch calls have no kernel record (nsys lost them): "
        "the GPU numbers per stage miss their work"
    ]
    assert doc["trace"]["gpu_lost"] is None
    assert any(r["gpu_idle_frac"] is not None for r in doc["stages"])


@pytest.mark.parametrize("how", ["dropped", "emptied"])
def test_missing_string_ids_are_refused(tmp_path: Path, how: str) -> None:
    b = TraceBuilder()
    dsocr_trace(b)
    path = built(tmp_path, how, b)
    with sqlite3.connect(path) as con:
        con.execute("DROP TABLE StringIds" if how == "dropped" else "DELETE FROM StringIds")
    out = tmp_path / "out"
    line = refused(analyze(path, out), out)
    table = "no StringIds table" if how == "dropped" else "an empty StringIds table"
    assert f"has {table}, so the names of its kernels and CUDA API calls are lost" in line


def test_complete_and_broken_traces_are_not_one_study(tmp_path: Path) -> None:
    good, lost = TraceBuilder(), TraceBuilder()
    dsocr_trace(good)
    dsocr_trace(lost, kernels=False)
    with pytest.raises(BadInput, match="not equally complete GPU records"):
        run_analysis([built(tmp_path, "good", good), built(tmp_path, "lost", lost)])
