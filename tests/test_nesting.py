"""Vision inside prefill (the checkpoint's own code): detection, exclusive columns, analytic times, reports.

The traces are built by hand (tests/tracebuild.py); every expected number below is computed
here from the times written into them.
"""

from __future__ import annotations

import html
import itertools
import json
import sqlite3
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from dsocr.analyze.nesting import BESIDE, EXCL_COLUMNS, MIXED, NESTED, NOTE
from dsocr.analyze.pipeline import run_analysis
from dsocr.cli import main
from dsocr.contract.errors import BadInput
from dsocr.report.adapt import view_from_analysis
from dsocr.report.summary import build, cost_centers, resolve
from tracebuild import TraceBuilder

#: One page of the vendor's shape, per repeat (times in ns from the page's origin):
#: page > prefill > (embed kernel, vision > sam, clip (+ a sync), projector, then the decoder's kernels,
#: a DtoH copy and a sync), decode > 2 decode_steps that each run to the next step's start.
KERNELS = {  # name: (launch start, kernel start, kernel end)
    "embed": (300, 320, 420),
    "sam_gemm": (700, 720, 1220),
    "clip_gemm": (1700, 1720, 2020),
    "proj_gemm": (2600, 2620, 2670),
    "prefill_gemm": (3100, 3120, 4120),
    "prefill_attn": (3200, 4120, 4420),
    "decode_gemm_0": (5200, 5220, 5420),
    "decode_gemm_1": (7500, 7520, 7720),
}
PAGE_SPAN = 10_000  # one repeat's share of the time axis

# hand-computed per repeat (every repeat the same)
VISION = {"cpu_ns": 2500, "gpu_busy_ns": 500 + 20 + 300 + 50, "kernels": 3, "launches": 3, "syncs": 1, "d2h_copies": 0}
PREFILL_INCL = {
    "cpu_ns": 4800,  # [200, 5000]
    "gpu_busy_ns": 100 + VISION["gpu_busy_ns"] + 1000 + 300 + 20,  # embed, vision's, gemm + attn, the DtoH copy
    "kernels": 6,
    "launches": 6,
    "syncs": 2,
    "d2h_copies": 1,
}
PREFILL_EXCL = {k: PREFILL_INCL[k] - VISION[k] for k in PREFILL_INCL}
DECODE = {"cpu_ns": 4700, "gpu_busy_ns": 400, "kernels": 2}


def build_trace(path: Path, *, nested: bool = True, repeats: int = 2, beside_pages: tuple[int, ...] = ()) -> Path:
    """``repeats`` repeats of one page; vision inside prefill (the vendor's shape), or beside it.

    Beside (``nested=False``, or the repeats in ``beside_pages``): the same kernels, but the
    vision range [500, 3000] sits before a prefill range [3050, 5000] (the embed kernel then
    belongs to no stage but the page).
    """
    b = TraceBuilder()
    b.gpu()
    t = b.thread()
    dom = b.domain("dsocr", t)
    for rep in range(repeats):
        o = 1_000 + rep * PAGE_SPAN
        inside = nested and rep not in beside_pages
        b.range(t, o, o + 9950, "repeat", domain=dom, payload=rep)
        b.range(t, o + 100, o + 9900, "page", domain=dom, payload=0)
        b.range(t, o + (200 if inside else 3050), o + 5000, "prefill", domain=dom)
        b.range(t, o + 500, o + 3000, "vision", domain=dom)
        b.range(t, o + 600, o + 1500, "sam", domain=dom)
        b.range(t, o + 1600, o + 2400, "clip", domain=dom)
        b.range(t, o + 2500, o + 2900, "projector", domain=dom)
        b.range(t, o + 5100, o + 9800, "decode", domain=dom)
        b.range(t, o + 5100, o + 7400, "decode_step", domain=dom, payload=0)
        b.range(t, o + 7400, o + 9800, "decode_step", domain=dom, payload=1)
        for name, (launch, k0, k1) in KERNELS.items():
            corr = b.api(t, o + launch, o + launch + 10, "cudaLaunchKernel_v7000")
            b.kernel(corr, o + k0, o + k1, name.removesuffix("_0").removesuffix("_1"))
        corr = b.api(t, o + 1300, o + 1310, "cudaMemcpyAsync_v3020")  # in sam: an HtoD copy
        b.memcpy(corr, o + 1320, o + 1340, 128, kind=1)
        corr = b.api(t, o + 2100, o + 2200, "cudaStreamSynchronize_v3020")
        b.sync(corr, o + 2100, o + 2200)
        corr = b.api(t, o + 4500, o + 4510, "cudaMemcpyAsync_v3020")
        b.memcpy(corr, o + 4520, o + 4540, 64, kind=2)
        corr = b.api(t, o + 4550, o + 4600, "cudaStreamSynchronize_v3020")
        b.sync(corr, o + 4550, o + 4600)
    b.session = (0, 1_000 + repeats * PAGE_SPAN)
    return b.write(path)


def make_run(root: Path, *, nested: bool = True) -> Path:
    """A run directory around the trace (manifest and timing files: the analytic workload)."""
    run = root / ("vendor-run" if nested else "replica-run")
    run.mkdir()
    build_trace(run / "trace.sqlite", nested=nested)
    page = {"index": 0, "name": "p.png", "path": "p.png", "width": 1240, "height": 1754, "grid": [2, 3], "crops": 6}
    timing = {
        "schema": "dsocr.timing/1",
        "profiled": True,
        "config": {"mode": "gundam", "max_new_tokens": 3, "prompt_tokens": 12, "dtype": "auto"},
        "environment": {"dtype": "bfloat16"},
        "prompt": {"tokens": 12},
        "pages": [page],
        "records": [],
    }
    (run / "timing.json").write_text(json.dumps(timing))
    (run / "manifest.json").write_text(json.dumps({"settings": {"mode": "gundam", "max_new_tokens": 3}}))
    return run


def _row(df: pl.DataFrame, stage: str) -> dict[str, Any]:
    return df.filter(pl.col("stage") == stage).row(0, named=True)


def test_nested_instances_have_exclusive_prefill(tmp_path: Path) -> None:
    a = run_analysis([build_trace(tmp_path / "t.sqlite")])
    nest = a.traces[0].stages.nesting
    assert nest is not None and (nest.shape, nest.vision, nest.inside, nest.overlapping) == (NESTED, 2, 2, 0)
    inst = a.stage_instances
    assert set(EXCL_COLUMNS) <= set(inst.columns)
    for pre in inst.filter(pl.col("stage") == "prefill").iter_rows(named=True):
        for k, v in PREFILL_INCL.items():
            assert pre[k] == v, k
            assert pre[f"{k}_excl"] == PREFILL_EXCL[k], k
        assert pre["gpu_idle_frac_excl"] == pytest.approx(1 - PREFILL_EXCL["gpu_busy_ns"] / PREFILL_EXCL["cpu_ns"])
        assert pre["kernel_ns_excl"] == 100 + 1000 + 300
    # only prefill rows carry exclusive values
    assert inst.filter(pl.col("stage") != "prefill")["cpu_ns_excl"].null_count() == inst.height - 2
    # the vision stages keep their own numbers, one nesting level deeper than prefill
    vis = _row(inst, "vision")
    assert {k: vis[k] for k in VISION} == VISION
    assert vis["depth"] == _row(inst, "prefill")["depth"] + 1


def test_nested_stage_summary_and_passes(tmp_path: Path) -> None:
    a = run_analysis([build_trace(tmp_path / "t.sqlite")])
    pre = _row(a.stages, "prefill")
    for k in PREFILL_INCL:
        assert (pre[k], pre[f"{k}_excl"]) == (2 * PREFILL_INCL[k], 2 * PREFILL_EXCL[k]), k
    assert pre["gpu_idle_frac_excl"] == pytest.approx(1 - PREFILL_EXCL["gpu_busy_ns"] / PREFILL_EXCL["cpu_ns"])
    assert _row(a.stages, "decode")["cpu_ns_excl"] is None
    per = a.repeats.per_pass.filter(pl.col("stage") == "prefill")
    assert per["gpu_busy_ns_excl"].to_list() == [PREFILL_EXCL["gpu_busy_ns"]] * 2
    assert per["cpu_ns_excl"].to_list() == [PREFILL_EXCL["cpu_ns"]] * 2
    # inclusive = vision + exclusive, per pass
    vis = a.repeats.per_pass.filter(pl.col("stage") == "vision")
    assert (vis["gpu_busy_ns"] + per["gpu_busy_ns_excl"]).to_list() == per["gpu_busy_ns"].to_list()


def test_nested_document_says_so(tmp_path: Path) -> None:
    doc = run_analysis([build_trace(tmp_path / "t.sqlite")]).to_dict()
    sn = doc["stage_nesting"]
    assert (sn["shape"], sn["host"], sn["nested"], sn["note"]) == (NESTED, "prefill", "vision", NOTE)
    assert sn["exclusive_columns"] == list(EXCL_COLUMNS)
    assert sn["files"] == [
        {"file": str(tmp_path / "t.sqlite"), "shape": NESTED, "vision": 2, "inside": 2, "overlapping": 0}
    ]
    assert doc["warnings"] == []


def test_beside_trace_has_no_nesting_fields(tmp_path: Path) -> None:
    a = run_analysis([build_trace(tmp_path / "t.sqlite", nested=False)])
    nest = a.traces[0].stages.nesting
    assert nest is not None and nest.shape == BESIDE and not nest.exclusive
    doc = a.to_dict()
    assert "stage_nesting" not in doc and "prefill_times" not in (doc["analytic"] or {})
    assert not any(c.endswith("_excl") for c in a.stage_instances.columns + a.stages.columns)
    assert not any(c.endswith("_excl") for c in a.repeats.per_pass.columns)
    pre = _row(a.stages, "prefill")
    # beside: the prefill range [3050, 5000] holds only the decoder's work
    assert (pre["cpu_ns"], pre["gpu_busy_ns"], pre["kernels"]) == (2 * 1950, 2 * 1320, 2 * 2)


def test_mixed_shape_is_warned_and_subtracts_only_what_is_inside(tmp_path: Path) -> None:
    a = run_analysis([build_trace(tmp_path / "t.sqlite", beside_pages=(1,))])
    nest = a.traces[0].stages.nesting
    assert nest is not None and (nest.shape, nest.vision, nest.inside) == (MIXED, 2, 1)
    assert any("1 of 2 vision ranges lie inside a prefill range" in w for w in a.warnings)
    pre = a.stage_instances.filter(pl.col("stage") == "prefill").sort("start")
    assert pre["cpu_ns_excl"].to_list() == [PREFILL_EXCL["cpu_ns"], 1950]  # the beside prefill: excl = incl
    assert a.to_dict()["stage_nesting"]["shape"] == MIXED


def test_overlapping_vision_is_odd(tmp_path: Path) -> None:
    b = TraceBuilder()
    t = b.thread()
    dom = b.domain("dsocr", t)
    b.range(t, 0, 1000, "page", domain=dom, payload=0)
    b.range(t, 100, 500, "vision", domain=dom)
    b.range(t, 400, 900, "prefill", domain=dom)  # starts inside vision, ends after it
    a = run_analysis([b.write(tmp_path / "o.sqlite")])
    nest = a.traces[0].stages.nesting
    assert nest is not None and (nest.shape, nest.inside, nest.overlapping) == (MIXED, 0, 1)
    assert any("1 overlap a prefill range without being inside it" in w for w in a.warnings)
    assert "cpu_ns_excl" not in a.stage_instances.columns


def test_nested_and_beside_files_are_not_one_study(tmp_path: Path) -> None:
    nested = build_trace(tmp_path / "n.sqlite")
    beside = build_trace(tmp_path / "b.sqlite", nested=False)
    with pytest.raises(BadInput, match=r"ran vision inside prefill .* beside it"):
        run_analysis([nested, beside])


def test_analytic_prefill_uses_exclusive_times(tmp_path: Path) -> None:
    an = run_analysis([make_run(tmp_path)]).to_dict()["analytic"]
    rows = {r["stage"]: r for r in an["stage_metrics"]}
    assert (rows["prefill"]["gpu_busy_ns"], rows["prefill"]["wall_ns"]) == (
        PREFILL_EXCL["gpu_busy_ns"],
        PREFILL_EXCL["cpu_ns"],
    )
    assert (rows["vision"]["gpu_busy_ns"], rows["decode"]["gpu_busy_ns"]) == (VISION["gpu_busy_ns"], 400)
    # the model row adds each stage once: vision + exclusive prefill + decode = the whole pass's GPU busy
    busy = VISION["gpu_busy_ns"] + PREFILL_EXCL["gpu_busy_ns"] + DECODE["gpu_busy_ns"]
    assert busy == PREFILL_INCL["gpu_busy_ns"] + DECODE["gpu_busy_ns"]
    assert rows["model"]["gpu_busy_ns"] == busy
    assert rows["model"]["wall_ns"] == VISION["cpu_ns"] + PREFILL_EXCL["cpu_ns"] + DECODE["cpu_ns"]
    assert an["model_mfu"]["mfu_busy"] == pytest.approx(rows["model"]["flops"] / (989.4e12 * busy * 1e-9))
    assert rows["prefill"]["mfu_busy"] == pytest.approx(rows["prefill"]["flops"] / (989.4e12 * 1420e-9))
    assert "exclusive" in an["prefill_times"]
    # each pass's utilization (analytic.per_pass) divides the same work by that pass's exclusive prefill time
    pre = [r for r in an["per_pass"] if r["stage"] == "prefill"]
    assert pre and all(r["mfu_busy"] == pytest.approx(rows["prefill"]["flops"] / (989.4e12 * 1420e-9)) for r in pre)
    assert all(
        r["mbu_wall"] == pytest.approx(rows["prefill"]["bytes"] / (3.35e12 * PREFILL_EXCL["cpu_ns"] * 1e-9))
        for r in pre
    )
    model = [r for r in an["per_pass"] if r["stage"] == "model"]
    assert model and model[0]["mfu_busy"] == pytest.approx(an["model_mfu"]["mfu_busy"])


def test_view_partitions_the_pass_once(tmp_path: Path) -> None:
    doc = run_analysis([make_run(tmp_path)]).to_dict()
    view = view_from_analysis(doc)
    top = {s.name: s for s in view.top_stages}
    assert list(top) == ["vision", "prefill", "decode"]  # vision is a top stage, not inside prefill's time
    pre = top["prefill"]
    assert pre.range_ns.mean == PREFILL_EXCL["cpu_ns"] and pre.gpu_busy_ns.mean == PREFILL_EXCL["gpu_busy_ns"]
    assert pre.kernels.mean == PREFILL_EXCL["kernels"] and pre.syncs is not None and pre.syncs.mean == 1
    assert pre.inclusive_range_ns is not None and pre.inclusive_range_ns.mean == PREFILL_INCL["cpu_ns"]
    assert pre.inclusive_gpu_busy_ns is not None and pre.inclusive_gpu_busy_ns.mean == PREFILL_INCL["gpu_busy_ns"]
    assert view.nesting_note == NOTE
    # the pass's time, once: vision + exclusive prefill + decode
    total = VISION["cpu_ns"] + PREFILL_EXCL["cpu_ns"] + DECODE["cpu_ns"]
    assert resolve(view, "total:range_ns") == total
    # the spreads are the document's per-pass values (analytic.per_pass), not recomputed by the view
    per_pass = [r["mfu_busy"] for r in doc["analytic"]["per_pass"] if r["stage"] == "prefill"]
    assert pre.mfu_busy_passes is not None and pre.mfu_busy_passes.values == tuple(per_pass)
    assert resolve(view, "total:busy_frac") == pytest.approx(
        (VISION["gpu_busy_ns"] + PREFILL_EXCL["gpu_busy_ns"] + DECODE["gpu_busy_ns"]) / total
    )
    # kernel time by category: prefill's own (the vision kernels subtracted)
    prefill_ns = sum(ns for s, _, ns in view.categories if s == "prefill")
    assert prefill_ns == 100 + 1000 + 300
    # the cost centers (kernel categories and idle time) split the pass once: they add up to 100% of it but
    # for the two 20 ns copies (GPU busy, not kernel categories); counting vision twice would pass 100%
    centers = cost_centers(view, top=100)
    assert sum(c.share for c in centers) == pytest.approx(1 - 40 / total)
    # copies per pass: vision's HtoD copy counted once, though prefill's inclusive row holds it too
    assert view.memory is not None
    assert dict((k, b) for k, _, b in view.memory.copies) == {
        "all directions": 192,
        "host to device": 128,
        "device to host": 64,
    }
    # the timeline: prefill as its own work after its vision (busy fraction: exclusive busy / exclusive range)
    bins = [b for b in view.timeline if b.stage == "prefill"]
    assert [(b.start_ns % PAGE_SPAN, b.end_ns % PAGE_SPAN) for b in bins] == [(1_000 + 3000, 1_000 + 5000)] * 2
    assert bins[0].busy_frac == pytest.approx(PREFILL_EXCL["gpu_busy_ns"] / PREFILL_EXCL["cpu_ns"])
    ordered = sorted(view.timeline, key=lambda b: b.start_ns)
    assert all(a.end_ns <= b.start_ns for a, b in itertools.pairwise(ordered))
    summary = build(view)
    assert summary.headline.text.startswith("One pass (vision, prefill, decode) took")


def test_reports_state_the_convention(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rep"
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(make_run(tmp_path)), "--out", str(out), "-q"])
    assert exc.value.code == 0, capsys.readouterr().err
    md = (out / "report.md").read_text()
    assert NOTE in md and "Prefill with and without vision" in md
    ms = lambda ns: f"{2 * ns / 1e6:,.3f}"  # noqa: E731 (totals over the 2 passes)
    assert f"| prefill (inclusive) | 2 | {ms(PREFILL_INCL['cpu_ns'])} | {ms(PREFILL_INCL['gpu_busy_ns'])} |" in md
    assert f"| prefill (exclusive) | 2 | {ms(PREFILL_EXCL['cpu_ns'])} | {ms(PREFILL_EXCL['gpu_busy_ns'])} |" in md
    assert "prefill's times are exclusive of vision" in md
    page = html.unescape((out / "report.html").read_text())
    assert "Vision ran inside prefill (the checkpoint's own code). The prefill rows below are its own work" in page
    assert "<td>prefill (own work)</td>" in page
    # the inclusive range and busy per pass (4,800 and 2,270 ns) beside the exclusive row (2,300 ns)
    assert "with vision, its range was 0.005 ± 0.000 ms" in page and "its GPU busy time 0.002 ± 0.000 ms" in page
    assert '<td>prefill (own work)</td>\n<td class="num">n/a</td>\n<td class="num">0.002 ± 0.000 ms' in page
    summary = (out / "summary.md").read_text()
    assert "Here prefill means its own work (exclusive: prefill - vision)" in summary
    con = sqlite3.connect(out / "results.sqlite")
    got = con.execute("select cpu_ns, cpu_ns_excl from stages where stage = 'prefill'").fetchone()
    assert got == (2 * PREFILL_INCL["cpu_ns"], 2 * PREFILL_EXCL["cpu_ns"])
    assert con.execute("select vision_nesting from traces").fetchone() == (NESTED,)


def test_idle_gaps_belong_to_the_innermost_stage(tmp_path: Path) -> None:
    gaps = run_analysis([build_trace(tmp_path / "t.sqlite", repeats=1)]).idle_gaps
    shown = ("vision", "sam", "clip", "projector", "prefill")
    got = sorted((r["stage"], r["duration_ns"]) for r in gaps.iter_rows(named=True) if r["stage"] in shown)
    # prefill: embed -> sam (420 -> 720), projector -> its gemm (2670 -> 3120), attn -> the DtoH copy (4420 -> 4520);
    # vision: sam's copy -> clip (1340 -> 1720), clip -> projector (2020 -> 2620); sam: gemm -> copy (1220 -> 1320)
    assert got == [("prefill", 100), ("prefill", 300), ("prefill", 450), ("sam", 100), ("vision", 380), ("vision", 600)]


def test_cost_centers_and_rules_see_prefills_own_work(tmp_path: Path) -> None:
    view = view_from_analysis(run_analysis([make_run(tmp_path)]).to_dict())
    gemm = next(c for c in cost_centers(view, top=100) if c.key == "gemm")
    # GEMM: vision's 500 + 300 + 50 = 850 ns, prefill's own 1000 ns, decode's 200 + 200 ns: prefill holds most of
    # it, counted once (its own work, not with vision's 850 ns, which would make 1850 of 3100)
    assert (gemm.stage, gemm.stage_share) == ("prefill", pytest.approx(1000 / 2250))
    assert gemm.total_ns == pytest.approx(2250)
    assert resolve(view, "stage:prefill:idle_frac") == pytest.approx(1 - 1420 / 2300)


def test_diff_warns_when_one_side_ran_vision_inside_prefill(tmp_path: Path) -> None:
    from dsocr.report.diff import Side, diff
    from dsocr.report.diff_notes import comparability_warnings

    a = view_from_analysis(run_analysis([make_run(tmp_path)]).to_dict())
    b = view_from_analysis(run_analysis([make_run(tmp_path, nested=False)]).to_dict())
    d = diff(Side("a", a), Side("b", b))
    warned = comparability_warnings(tmp_path / "a", tmp_path / "b", d)
    assert any(w.startswith("A ran vision inside prefill (the checkpoint's own code), B beside it") for w in warned)
    # prefill's own work on the nested side against the beside prefill ([3050, 5000]: the decoder's work)
    busy = {c.stage: (c.a, c.b) for c in d.stages if c.name == "GPU busy"}
    assert busy["prefill"] == (PREFILL_EXCL["gpu_busy_ns"], 1320) and busy["vision"] == (VISION["gpu_busy_ns"],) * 2


def test_cpu_only_nested_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The vendor path under nsys on the CPU: no CUDA, exclusive range times only."""
    b = TraceBuilder()
    t = b.thread()
    dom = b.domain("dsocr", t)
    b.range(t, 0, 10_000, "repeat", domain=dom, payload=0)
    b.range(t, 100, 9_900, "page", domain=dom, payload=0)
    b.range(t, 200, 5_000, "prefill", domain=dom)
    b.range(t, 500, 3_000, "vision", domain=dom)
    b.range(t, 600, 1_500, "sam", domain=dom)
    b.range(t, 5_100, 9_800, "decode", domain=dom)
    b.range(t, 5_100, 9_800, "decode_step", domain=dom, payload=0)
    path = b.write(tmp_path / "cpu.sqlite")
    a = run_analysis([path])
    pre = _row(a.stages, "prefill")
    assert (pre["cpu_ns"], pre["cpu_ns_excl"], pre["gpu_idle_frac_excl"]) == (4800, 2300, None)
    view = view_from_analysis(a.to_dict())
    assert [s.name for s in view.top_stages] == ["vision", "prefill", "decode"]
    assert resolve(view, "total:range_ns") == 2500 + 2300 + 4700
    out = tmp_path / "rep"
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(path), "--out", str(out), "-q"])
    assert exc.value.code == 0, capsys.readouterr().err
    md = (out / "report.md").read_text()
    assert "| prefill (inclusive) | 1 | 0.005 |" in md and "| prefill (exclusive) | 1 | 0.002 |" in md
    assert "| vision | 1 | 0.003 |" in md
