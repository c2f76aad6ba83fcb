"""``dsocr whatif report`` from hand-built run directories: known speedups, spreads, significance calls,
throughput, trace figures, the batch sweep and the capacity arithmetic."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from dsocr.analytic.peaks import resolve_peak
from dsocr.cli import main
from dsocr.contract.errors import BadInput, InputNotFound
from dsocr.contract.whatif_index import COMPLETE, OUT_OF_MEMORY, SKIPPED, Sweep, Variant
from dsocr.report import significance
from dsocr.report import whatif as w
from dsocr.report import whatif_capacity as cap
from dsocr.report.whatif_runs import END_TO_END, read_run
from whatif_dirs import H100, make_analysis, make_run, make_whatif

GRAPH = Variant("graph", (("moe", "grouped"), ("decode", "graph")))
SDPA = Variant("sdpa", (("attn", "sdpa"),))
ONE = Variant("one", (("moe", "grouped"),))


@pytest.fixture
def whatif_dir(tmp_path: Path) -> Path:
    root = tmp_path / "wi"
    make_run(root / "baseline", decode=[1000.0, 1100.0])
    make_run(root / "graph", decode=[200.0, 212.0], execution={"moe": "grouped", "decode": "graph"})
    make_run(root / "sdpa", decode=[1020.0, 1100.0], execution={"attn": "sdpa"})
    make_run(root / "one", decode=[900.0], execution={"moe": "grouped"})
    make_whatif(root, [(GRAPH, COMPLETE), (SDPA, COMPLETE), (ONE, COMPLETE)])
    return root


def test_significance_rule_is_diffs() -> None:
    assert significance.noise(3.0, 4.0) == pytest.approx(10.0)  # 2 x sqrt(9 + 16)
    assert significance.significant(100.0, 110.1, 3.0, 4.0) is True
    assert significance.significant(100.0, 110.0, 3.0, 4.0) is False  # exactly the noise: not beyond it
    assert significance.significant(100.0, 90.0, None, 4.0) is None  # one pass: spread unknown
    assert significance.significant(None, 90.0, 1.0, 1.0) is None


def test_speedups_spreads_and_verdicts(whatif_dir: Path) -> None:
    r = w.collect([whatif_dir])
    graph, sdpa, one = r.find("graph"), r.find("sdpa"), r.find("one")
    assert graph and sdpa and one
    c = r.compare(graph, "decode")
    assert c is not None
    sd_a, sd_b = math.sqrt(((1000 - 1050) ** 2 + (1100 - 1050) ** 2) / 1), math.sqrt(2 * 6.0**2)
    assert (c.base.mean, c.other.mean) == (1050.0, 206.0)
    assert (c.base.sd, c.other.sd) == (pytest.approx(sd_a), pytest.approx(sd_b))
    assert c.speedup == pytest.approx(1050 / 206)
    assert c.speedup_sd == pytest.approx(1050 / 206 * math.sqrt((sd_a / 1050) ** 2 + (sd_b / 206) ** 2))
    assert c.verdict == "significant"
    # 1060 vs 1050: |10| < 2 sqrt(sd_a^2 + 56.6^2)
    c2 = r.compare(sdpa, "decode")
    assert c2 is not None and c2.verdict == "within noise" and c2.speedup == pytest.approx(1050 / 1060)
    c3 = r.compare(one, "decode")
    assert c3 is not None and c3.verdict == "spread unknown" and c3.speedup_sd is None
    e2e = r.compare(graph, END_TO_END)
    assert e2e is not None and e2e.speedup == pytest.approx(1400 / 556)  # 1350/1450 vs 550/562


def test_report_tables_show_the_numbers(whatif_dir: Path) -> None:
    make_analysis(
        whatif_dir / "baseline",
        2,
        {
            "decode": {"gpu_busy_ns": 2 * 105e6, "launches_per_step": 1274.0, "syncs_per_step": 11.0},
            "repeat": {"gpu_busy_ns": 2 * 300e6},
        },
    )
    md = w.render_md(w.collect([whatif_dir]))
    assert "| decode | baseline | 525 ± 35.4 | 1 (baseline) |  |" in md  # 1050 / 2 pages; sd 70.7 / 2
    assert f"| decode | graph | 103 ± 4.24 | {1050 / 206:.2f}x ± 0.40 | significant |" in md
    sd_sdpa = 1050 / 1060 * math.sqrt((math.sqrt(5000) / 1050) ** 2 + (math.sqrt(3200) / 1060) ** 2)
    assert f"| decode | sdpa | 530 ± 28.3 | 0.99x ± {sd_sdpa:.2f} | within noise |" in md
    assert "| decode | one | 450 (one pass) | 1.17x | spread unknown |" in md
    # pages/s 2 / 1.4 s; output tokens/s 32 / 1.4 s; decode tokens/s 30 / 1.05 s; 8 GiB
    assert "| baseline | 1 | 1.43 | 22.9 | 28.6 | 8.00 |" in md
    # launches and syncs per decode step, GPU busy 105/1050 ms (decode) and 300/1400 ms (end to end)
    assert "| baseline | 1,274 | 11.0 | not measured | not measured | 10.0% | 21.4% |" in md
    assert "| graph | not measured | not measured |" in md
    assert "graph: moe=grouped, decode=graph" not in md and "| graph | moe=grouped, decode=graph | complete |" in md
    doc = w.to_json(w.collect([whatif_dir]))
    row = next(c for c in doc["comparisons"] if c["variant"] == "graph" and c["stage"] == "decode")
    assert row["speedup"] == pytest.approx(1050 / 206) and row["significant"] is True
    assert row["noise"] == pytest.approx(2 * math.sqrt(row["baseline_sd"] ** 2 + row["variant_sd"] ** 2))
    assert doc["sigmas"] == significance.SIGMAS


def test_a_cpu_trace_gives_no_gpu_figures(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", decode=[1000.0, 1100.0], gpu=None, clock="perf-counter")
    b = make_run(tmp_path / "b", decode=[900.0, 1000.0], gpu=None, clock="perf-counter")
    make_analysis(a, 2, {"decode": {"gpu_busy_ns": 0, "kernels": 0, "launches_per_step": 0.0}})
    md = w.render_md(w.collect([a, b]))
    assert "| a | no GPU traced | no GPU traced |" in md and "| b | not measured | not measured |" in md
    assert "0.0%" not in md


def test_capacity_arithmetic(whatif_dir: Path) -> None:
    graph = read_run(whatif_dir / "graph")
    rows = cap.capacity("graph", graph)
    measured = rows[0]
    assert (measured.gpu, measured.kind) == (H100, "measured")
    assert measured.pages_per_day == pytest.approx(2 / 0.556 * 86_400)  # 2 pages per 556 ms pass
    # scaling: the pass (556 ms) plus each stage's time x (to / from - 1)
    assert cap.scaled_pass_ms(
        graph, {"vision": 2.0, "prefill": 1.0, "decode": 0.5}, {"vision": 1.0, "prefill": 1.0, "decode": 1.0}
    ) == pytest.approx(556 + 100 * 1 + 0 + 206 * -0.5)
    # another GPU: the same arithmetic with the analytic model's roofline times
    here, h200 = resolve_peak(H100), resolve_peak("H200 141GB")
    frm, to = cap.ideal_ns(graph, 1, here), cap.ideal_ns(graph, 1, h200)
    assert frm and to
    t = 556 + sum(st * (to[s] / frm[s] - 1) for s, st in (("vision", 100), ("prefill", 200), ("decode", 206)))
    row = next(r for r in rows if r.gpu == "H200 141GB")
    assert row.kind == "predicted" and row.pages_per_day == pytest.approx(2 / (t / 1e3) * 86_400)
    assert to["decode"] < frm["decode"]  # more bandwidth: decode (memory-bound) predicted faster
    assert all(r.kind == "predicted" for r in rows[1:]) and not any(r.gpu == "H100 SXM5 80GB" for r in rows)
    md = w.render_md(w.collect([whatif_dir]))
    assert "| DeepSeek-OCR paper (A100 40GB) | 200,000 | stated |" in md
    assert "| tokens per page |" in md and "exactly 16 generated" in md


def test_scaling_only_the_gpu_busy_time_where_traced(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "r", decode=[1000.0, 1000.0])
    make_analysis(run_dir, 2, {"decode": {"gpu_busy_ns": 2 * 100e6}})
    run = read_run(run_dir)
    ones = {"vision": 1.0, "prefill": 1.0, "decode": 1.0}
    # only decode's 100 ms of GPU busy time halves; its 900 ms of host time stays
    assert cap.scaled_pass_ms(run, {**ones, "decode": 0.5}, ones) == pytest.approx(1350 - 50)


def test_batch_sweep_table_and_where_it_stopped(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    make_run(root / "baseline", decode=[1000.0, 1000.0])
    b1 = Variant("batch1", (("moe", "grouped"), ("decode", "graph"), ("batch", "1")))
    b2 = Variant("batch2", (("moe", "grouped"), ("decode", "graph"), ("batch", "2")))
    b4 = Variant("batch4", (("moe", "grouped"), ("decode", "graph"), ("batch", "4")))
    b8 = Variant("batch8", (("moe", "grouped"), ("decode", "graph"), ("batch", "8")))
    make_run(root / "batch1", decode=[200.0, 200.0], execution={"decode": "graph", "batch": "1"})
    make_run(
        root / "batch2", decode=[120.0, 120.0], prefill=[150.0, 150.0], execution={"decode": "graph", "batch": "2"}
    )
    sweep = Sweep((1, 2, 4, 8), (("moe", "grouped"), ("decode", "graph")), 4, "CUDA out of memory")
    make_whatif(root, [(b1, COMPLETE), (b2, COMPLETE), (b4, OUT_OF_MEMORY), (b8, SKIPPED)], sweep)
    r = w.collect([root])
    table = next(t for t in w.tables(r) if t.key == "sweep")
    assert [row[:4] for row in table.rows] == [
        ("batch1", "1", f"{2 / 0.55:.2f}", f"{32 / 0.55:.1f}"),  # 100 + 200 + 200 + 50 ms
        ("batch2", "2", f"{2 / 0.42:.2f}", f"{32 / 0.42:.1f}"),  # 100 + 150 + 120 + 50 ms
    ]
    pts = cap.sweep_points([("batch1", read_run(root / "batch1")), ("batch2", read_run(root / "batch2"))])
    assert pts[0].scaled_pages_per_s == pytest.approx(2 / 0.55)  # the first point is its own prediction
    assert pts[1].ideal_pages_per_s is not None and pts[1].ideal_pages_per_s > pts[0].ideal_pages_per_s
    assert "The sweep stopped at batch 4: CUDA out of memory." in table.note
    variants = next(t for t in w.tables(r) if t.key == "variants")
    assert variants.rows[3][:3] == ("batch4", "moe=grouped, decode=graph, batch=4", "out-of-memory: CUDA out of memory")


def test_run_directories_without_index(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", decode=[1000.0, 1100.0])
    b = make_run(tmp_path / "b", decode=[200.0, 212.0], execution={"decode": "graph"})
    r = w.collect([a, b])
    assert r.baseline.name == "a" and r.members[0].name == "b"
    md = w.render_md(r)
    assert "| b | attn=eager, autocast=bfloat16, batch=1, cache=dynamic, decode=graph" in md


def test_every_unprofiled_run_counts_and_worker_files_do_not(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "r", decode=[1000.0, 1100.0])
    doc = json.loads((run_dir / "timing-baseline.json").read_text())
    for r in doc["records"]:
        r["ms"] *= 2 if r["stage"] == "decode" else 1
    (run_dir / "timing-baseline-1.json").write_text(json.dumps(doc))
    (run_dir / "timing-baseline-w0.json").write_text("not read")
    run = read_run(run_dir)
    decode = run.stage("decode")
    assert decode is not None and decode.ms.values == (1000.0, 1100.0, 2000.0, 2200.0)


def test_warnings_for_other_work_and_cpu_clock(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", decode=[1000.0, 1100.0])
    b = make_run(tmp_path / "b", decode=[200.0, 212.0], tokens=32, gpu=None, clock="perf-counter")
    r = w.collect([a, b])
    assert any("ran other work than the baseline (generated tokens)" in x for x in r.warnings)
    assert any("b ran on an unknown device" in x for x in r.warnings)
    assert "unprofiled (host clock)" in w.render_md(r)


def test_refusals(tmp_path: Path) -> None:
    with pytest.raises(InputNotFound, match="no such run directory"):
        w.collect([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="no timing file"):
        w.collect([tmp_path / "empty"])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "whatif.json").write_text('{"schema": "dsocr.whatif"')
    with pytest.raises(BadInput, match="corrupt"):
        w.collect([tmp_path / "bad"])


def test_cli_writes_the_set(whatif_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rep"
    with pytest.raises(SystemExit) as exc:
        main(["whatif", "report", str(whatif_dir), "--out", str(out), "--format", "md,json", "--quiet"])
    assert exc.value.code == 0
    assert sorted(p.name for p in out.iterdir()) == ["whatif-report.json", "whatif.md"]
    doc = json.loads((out / "whatif-report.json").read_text())
    assert doc["schema"] == "dsocr.whatif-report"
    (out / "keep.txt").write_text("not a report file")
    with pytest.raises(SystemExit) as exc:
        main(["whatif", "report", str(whatif_dir), "--out", str(out), "--format", "html", "--quiet"])
    assert exc.value.code == 0
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "whatif.html"]  # one set: the old ones replaced
    with pytest.raises(SystemExit) as exc:
        main(["whatif", "report", str(whatif_dir), "--json"])
    assert exc.value.code == 0
    assert json.loads(capsys.readouterr().out)["headline"].startswith("3 variant(s) against the baseline")


def test_read_run_reads_the_typed_documents(tmp_path: Path) -> None:
    """The run's timing and analysis are read through their typed documents: the execution as written (a
    number for batch), and a bad field refused in one line naming the file and the field."""
    run_dir = make_run(tmp_path / "b4", decode=[100.0, 101.0], execution={"decode": "graph", "batch": "4"})
    run = read_run(run_dir)
    assert run.batch == 4 and run.setting("decode") == "graph" and run.setting("cache") == "dynamic"
    timing = json.loads((run_dir / "timing-baseline.json").read_text())
    timing["records"][0]["ms"] = "x"
    (run_dir / "timing-baseline.json").write_text(json.dumps(timing))
    with pytest.raises(BadInput, match=r"timing-baseline\.json: field records\[0\]\.ms is 'x', expected a number"):
        read_run(run_dir)
