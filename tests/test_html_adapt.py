"""The report view built from analysis.json, the analytic model's JSON and a baseline timing.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dsocr.analytic.export import to_json
from dsocr.analytic.peaks import resolve_peak
from dsocr.analytic.workload import Workload, estimate
from dsocr.analyze.workload_from_run import read_run_files
from dsocr.contract.run_manifest import RunManifest
from dsocr.contract.run_timing import RunTiming
from dsocr.report import html
from dsocr.report import summary as summ
from dsocr.report.adapt import view_from_analysis
from report_views import h100_analysis
from test_summary import check_traceable


@pytest.fixture(scope="module")
def analytic() -> dict[str, Any]:
    """The analytic model of one page (base mode, 12 prompt tokens, 65 new tokens) on the H100's peak."""
    return to_json(estimate(Workload(prompt_tokens=12, new_tokens=65)), resolve_peak("NVIDIA H100 80GB HBM3"))


@pytest.fixture(scope="module")
def cpu_doc(cpu_sqlite: Path) -> dict[str, Any]:
    from dsocr.analyze.pipeline import run_analysis

    doc: dict[str, Any] = json.loads(json.dumps(run_analysis([cpu_sqlite]).to_dict(), default=str))
    return doc


def test_mfu_from_analytic_and_measured_times(h100_sqlite: Path) -> None:
    """The view reads the MFU/MBU figures and their per-pass values from the document; it computes none."""
    from dsocr.analyze.pipeline import run_analysis
    from dsocr.analyze.workload_from_run import WorkloadFlags

    a = run_analysis([h100_sqlite], workload=WorkloadFlags(max_new_tokens=65, prefill_tokens=900))
    doc: dict[str, Any] = json.loads(json.dumps(a.to_dict(), default=str))
    view = view_from_analysis(doc)
    dec = view.stage("decode")
    assert dec is not None and dec.mfu_busy is not None and dec.mbu_busy is not None and dec.mfu_wall is not None
    metrics = {r["stage"]: r for r in doc["analytic"]["stage_metrics"]}
    per_pass = [r for r in doc["analytic"]["per_pass"] if r["stage"] == "decode"]
    assert per_pass and [r["pass"] for r in per_pass] == sorted(r["pass"] for r in per_pass)
    assert dec.flops == pytest.approx(metrics["decode"]["flops"])
    for key in ("mfu_busy", "mfu_wall", "mbu_busy"):
        assert getattr(dec, key).mean == pytest.approx(metrics["decode"][key])
    assert dec.mfu_busy_passes is not None and dec.mfu_wall_passes is not None
    assert dec.mfu_busy_passes.values == pytest.approx([r["mfu_busy"] for r in per_pass])
    assert dec.mfu_wall_passes.values == pytest.approx([r["mfu_wall"] for r in per_pass])
    # the per-pass value is the pass's work over the peak x its own time
    busy = [r["gpu_busy_ns"] for r in doc["repeats"]["per_pass"] if r["stage"] == "decode"]
    assert per_pass[0]["mfu_busy"] == pytest.approx(metrics["decode"]["flops"] / (989.4e12 * busy[0] / 1e9))
    assert view.peaks is not None and view.peaks.source == "table: H100 SXM5 80GB"
    assert view.memory is not None and view.memory.weight_footprint_bytes
    # model-level MFU over prefill + decode (the trace has no vision stage): the document's figure
    assert view.model_mfu is not None
    assert view.model_mfu.mean == pytest.approx(metrics["model"]["mfu_busy"])
    assert {p.label for p in view.roofline} == {"prefill", "decode"}
    text = html.render_html(view)
    assert "No analytic model" not in text and "Model-level MFU is not available" not in text
    assert 'class="point stage"' in text  # the stages are placed on the roofline
    assert ("analytic workload: context mode", "auto") in view.assumptions
    # both stages idle the GPU most of their time: host-bound, so only the host-side rules fire (the GPU-side
    # ones, low MFU and far from the roofline, would contradict that); the MFU headline is there
    assert summ.classify(view) == {"prefill": summ.HOST, "decode": summ.HOST, "decode_step": summ.HOST}
    rules = {r for a in summ.actions(view) for r in (a.rules or (a.rule,))}
    assert {"launch-bound", "launches-per-token"} <= rules
    assert not rules & {"low-mfu-prefill", "far-from-roofline", "kernels-explain"}
    s = summ.build(view)
    assert s.mfu is not None and s.mfu.text.startswith("MFU (model FLOPs utilization; this is the figure to quote) is ")


def test_cpu_trace_has_no_gpu_claims(cpu_doc: dict[str, Any]) -> None:
    view = view_from_analysis(cpu_doc)
    assert view.passes == 2
    names = {s.name: s for s in view.stages}
    assert set(names) == {"vision", "sam", "clip", "projector", "prefill", "decode", "decode_step"}
    assert names["vision"].depth == 0 and names["sam"].depth == 1 and names["decode_step"].depth == 1
    assert all(not s.has_gpu and s.idle_frac is None for s in view.stages)
    assert view.timeline == () and view.idle_gaps == ()
    assert len(view.decode_steps) == 5  # each decode holds 5 steps
    text = html.render_html(view)
    assert "No GPU activity to place on a timeline" in text
    assert "No CUDA API calls in this trace" in text
    md = html.render_summary_md(view)
    assert "recorded no GPU activity" in md and "idle" not in md.lower()
    # without GPU work the cost centers are the stages, each with its share of the total time
    s = check_traceable(view)
    total = sum(st.range_ns.mean for st in view.top_stages)
    vision = view.stage("vision")
    assert vision is not None
    assert s.cost_centers[0][0].key == "stage-vision"
    assert f"The vision stage: {100 * vision.range_ns.mean / total:.1f}% of the profiled time" in md
    assert "GPU not traced" in text  # the stage breakdown draws range times without a busy/idle split


def test_baseline_timing_gives_unprofiled_times_memory_and_context(cpu_doc: dict[str, Any]) -> None:
    records = []
    for rep in (0, 1):
        records.append(
            {
                "repeat": rep,
                "page": 0,
                "stage": "prefill",
                "index": None,
                "ms": 10.0 + rep,
                "tokens": 273,
                "prefill_length": 273,
                "context_length": None,
                "peak_allocated_bytes": 7_000_000_000 + rep,
            }
        )
        for i in range(5):
            records.append(
                {
                    "repeat": rep,
                    "page": 0,
                    "stage": "decode_step",
                    "index": i,
                    "ms": 2.0,
                    "tokens": 1,
                    "prefill_length": 273,
                    "context_length": 274 + i,
                    "peak_allocated_bytes": None,
                }
            )
    timing = {"schema": "dsocr.timing", "profiled": False, "records": records, "assumptions": ["random weights"]}
    view = view_from_analysis(cpu_doc, timing=RunTiming.from_json(timing))
    pre = view.stage("prefill")
    assert pre is not None and pre.unprofiled_ns is not None
    assert pre.unprofiled_ns.values == (10e6, 11e6)
    assert pre.tokens == 273
    assert view.memory is not None and dict(view.memory.peak_allocated_by_stage)["prefill"] == 7_000_000_001
    assert [s.context_len for s in view.decode_steps] == [274, 275, 276, 277, 278]
    assert "random weights" in view.caveats
    # the profiled worker's own timing is not a baseline, but still gives tokens and context lengths
    profiled = view_from_analysis(cpu_doc, timing=RunTiming.from_json({**timing, "profiled": True}))
    pre = profiled.stage("prefill")
    assert pre is not None and pre.unprofiled_ns is None and pre.tokens == 273
    assert profiled.decode_steps[0].context_len == 274
    # ... and with the baseline beside it, the baseline gives the unprofiled times
    fast = [{**r, "ms": r["ms"] / 2} for r in records]
    both = view_from_analysis(
        cpu_doc,
        timing=RunTiming.from_json({**timing, "profiled": True}),
        baseline=RunTiming.from_json({"profiled": False, "records": fast}),
    )
    pre = both.stage("prefill")
    assert pre is not None and pre.unprofiled_ns is not None and pre.unprofiled_ns.values == (5e6, 5.5e6)


def test_run_files(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"dsocr_version": "0.1.0", "settings": {"mode": "base"}}')
    (tmp_path / "timing-baseline.json").write_text("{broken")
    files = read_run_files(tmp_path)
    assert files.manifest is not None
    assert files.manifest.to_json() == {"dsocr_version": "0.1.0", "settings": {"mode": "base"}}
    assert files.timing is None and files.baseline is None
    assert len(files.problems) == 1 and "timing-baseline.json: corrupt" in files.problems[0]


def test_identity_and_inputs_from_manifest_and_timing(cpu_doc: dict[str, Any]) -> None:
    manifest = {
        "dsocr_version": "0.1.0",
        "created": "2026-11-22T23:00:00+00:00",
        "settings": {"mode": "gundam", "max_new_tokens": 32, "prompt_tokens": 12, "model": "replica", "dtype": "auto"},
        "inputs": [{"name": "p1.png", "path": "/x/p1.png", "sha256": "ab" * 32, "width": 1024, "height": 1448}],
        "environment": {"driver_version": "580.95", "packages": {"torch": "2.11.0"}, "gpus": [{"name": "GPU X"}]},
    }
    timing = {
        "profiled": True,
        "model": {"kind": "replica", "source": "replica"},
        "prompt": {"tokens": 12},
        "environment": {"cuda": "13.0", "dtype": "bfloat16", "torch": "2.11.0+cu130"},
        "pages": [{"name": "p1.png", "grid": [2, 3], "image_tokens": 913, "prefill_length": 925}],
        "assumptions": ["MoE routing with random weights is close to uniform (trained routing is skewed)"],
        "records": [],
    }
    view = view_from_analysis(cpu_doc, manifest=RunManifest.from_json(manifest), timing=RunTiming.from_json(timing))
    i = view.identity
    assert (i.gpu, i.driver, i.cuda, i.torch, i.dtype) == ("GPU X", "580.95", "13.0", "2.11.0+cu130", "bfloat16")
    assert (i.model_source, i.random_weights, i.mode, i.pages) == ("replica", True, "gundam", 1)
    assert (i.prompt_tokens, i.new_tokens, i.repeats) == (12, 32, 2)
    assert view.pages is not None
    assert view.pages.rows == (("p1.png", "image", "1024x1448", "ab" * 8, "2x3", "913", "925"),)
    assert ("mode", "gundam") in view.assumptions and ("max_new_tokens", "32") in view.assumptions
    text = html.render_html(view)
    assert "random (see caveats)" in text and "close to uniform" in text and "No run manifest" not in text
    # a replica run from issue 10 on records how it executed; the header names it
    executed = {**timing, "model": {**timing["model"], "execution": {"moe": "loop", "attn": "eager"}}}
    i = view_from_analysis(
        cpu_doc, manifest=RunManifest.from_json(manifest), timing=RunTiming.from_json(executed)
    ).identity
    assert (
        i.model_source == "replica; execution: MoE loop, decoder attention eager, decode eager, batch 1, cache dynamic"
    )


def test_true_idle_gaps_when_the_analysis_lists_them(h100_sqlite: Path) -> None:
    doc = dict(h100_analysis(str(h100_sqlite)))
    assert doc["idle_gaps"] and view_from_analysis(doc).idle_gaps[0].kind == "gap"  # dsocr analyze lists them
    doc["idle_gaps"] = []
    assert view_from_analysis(doc).idle_gaps[0].kind == "instance"  # fallback: idle time inside stage instances
    doc["idle_gaps"] = [{"stage": "decode", "start_ns": 35_300_000_000, "duration_ns": 4_200_000}]
    view = view_from_analysis(doc)
    assert [(g.stage, g.duration_ns, g.kind) for g in view.idle_gaps] == [("decode", 4_200_000.0, "gap")]
    text = html.render_html(view)
    assert "Longest GPU idle gaps" in text and "4.200 ms" in text
    # start_ns counts from the first stage range (analyze.gaps), and the column says so (issue 12)
    assert "at (from the first stage range&#39;s start)" in text and "trace start" not in text


def _runs_records(ms: dict[str, float], repeats: int = 2) -> list[dict[str, Any]]:
    """One record per (repeat, stage) on page 0, with the stage's time in ms."""
    return [
        {"repeat": r, "page": 0, "stage": stage, "index": None, "ms": t, "tokens": None}
        for r in range(repeats)
        for stage, t in ms.items()
    ]


#: Two unprofiled runs and the profiled run's own CUDA-event times (ms per stage):
#: prefill: overhead 30% inside a drift of 6/13 = 46.2% -> cannot be separated, and above the rule's 20%;
#: decode: overhead 40% beyond a drift of 10/105 = 9.5%; vision: overhead 5% inside a 33.3% drift.
AFTER = {"prefill": 10.0, "decode": 100.0, "vision": 50.0}
BEFORE = {"prefill": 16.0, "decode": 110.0, "vision": 70.0}
PROFILED = {"prefill": 13.0 * 1.3, "decode": 105.0 * 1.4, "vision": 60.0 * 1.05}
RUNS_MANIFEST = {
    "timing": {
        "profiled": "timing.json",
        "baseline": "timing-baseline.json",
        "baseline_runs": 2,
        "runs": [
            {"file": "timing-baseline-1.json", "role": "baseline", "position": "before", "k": 1},
            {"file": "timing.json", "role": "profiled", "position": "profiled", "k": None},
            {"file": "timing-baseline.json", "role": "baseline", "position": "after", "k": 2},
        ],
    }
}


def _two_baselines_view(cpu_doc: dict[str, Any]) -> Any:
    baseline = {
        "profiled": False,
        "records": _runs_records(AFTER),
        "other_runs": [{"profiled": False, "file": "timing-baseline-1.json", "records": _runs_records(BEFORE)}],
    }
    timing = {"profiled": True, "records": _runs_records(PROFILED)}
    return view_from_analysis(
        cpu_doc,
        manifest=RunManifest.from_json(RUNS_MANIFEST),
        timing=RunTiming.from_json(timing),
        baseline=RunTiming.from_json(baseline),
    )


def test_two_baselines_give_mean_and_drift(cpu_doc: dict[str, Any]) -> None:
    view = _two_baselines_view(cpu_doc)
    assert view.baseline_positions == ("before", "after") and view.baseline_runs == 2
    expect = {  # stage: (unprofiled mean ms, drift, overhead, drift > overhead)
        "prefill": (13.0, 6 / 13, 0.3, True),
        "decode": (105.0, 10 / 105, 0.4, False),
        "vision": (60.0, 20 / 60, 0.05, True),
    }
    for name, (mean, drift, overhead, hidden) in expect.items():
        st = view.stage(name)
        assert st is not None and st.unprofiled_ns is not None, name
        assert st.unprofiled_ns.n == 4 and st.unprofiled_ns.mean == pytest.approx(mean * 1e6)  # 2 runs x 2 repeats
        assert (st.baseline_runs, st.baseline_drift) == (2, pytest.approx(drift))
        assert st.overhead_frac == pytest.approx(overhead)
        assert st.overhead_within_drift is hidden, name
    sam = view.stage("sam")
    assert sam is not None and (sam.unprofiled_ns, sam.baseline_drift, sam.overhead_within_drift) == (None, None, None)
    assert [s.name for s in view.overhead_hidden_by_drift] == ["vision", "prefill"]
    text = html.render_html(view)
    section = text.split('<section id="overhead">')[1].split("</section>")[0]
    assert "mean over 2 unprofiled runs (before, after the profiled run, in that order)" in section
    assert (
        "The overhead cannot be separated from host drift in vision (overhead 5.0%, drift 33.3%), "
        "prefill (overhead 30.0%, drift 46.2%): identical unprofiled runs differed by more than profiling "
        "changed the time."
    ) in section
    assert "decode (overhead" not in section and "drift-unknown" not in section
    # the summary: prefill's overhead crosses the rule's 20% but sits inside the drift; decode's stands out
    s = check_traceable(view)
    by_rule = {a.rule: a.text for a in s.actions}
    assert by_rule["overhead-within-drift"] == (
        "Profiling appears to make prefill 1.3x slower (+30.0%; above the 20.0% threshold), but identical "
        "unprofiled runs differed by 46.2% among themselves: the overhead cannot be separated from "
        "host drift, so neither number says what "
        "nsys costs."
    )
    assert by_rule["profiler-overhead"].startswith(
        "Profiling made decode 1.4x slower (+40.0%) than the unprofiled runs"
    )
    assert "differed by only 9.5%" in by_rule["profiler-overhead"]
    assert "overhead-drift-unknown" not in by_rule


def test_no_cannot_separate_statement_when_drift_is_small(cpu_doc: dict[str, Any]) -> None:
    baseline = {
        "profiled": False,
        "records": _runs_records(AFTER),
        "other_runs": [{"profiled": False, "file": "timing-baseline-1.json", "records": _runs_records(AFTER)}],
    }
    timing = {"profiled": True, "records": _runs_records({k: v * 1.01 for k, v in AFTER.items()})}
    view = view_from_analysis(
        cpu_doc,
        manifest=RunManifest.from_json(RUNS_MANIFEST),
        timing=RunTiming.from_json(timing),
        baseline=RunTiming.from_json(baseline),
    )
    pre = view.stage("prefill")
    assert pre is not None and pre.baseline_drift == 0.0 and pre.overhead_within_drift is False
    assert view.overhead_hidden_by_drift == ()
    text = html.render_html(view)
    assert "cannot be separated" not in text and 'id="overhead-vs-drift"' not in text
    assert not {a.rule for a in summ.actions(view)} & {"overhead-within-drift", "overhead-drift-unknown"}


def test_one_baseline_says_drift_is_unknown(cpu_doc: dict[str, Any]) -> None:
    # the layout of captures made before --baseline-runs: one timing-baseline.json, no timing.runs
    timing = {"profiled": True, "records": _runs_records(PROFILED)}
    baseline = {"profiled": False, "records": _runs_records(AFTER)}
    view = view_from_analysis(
        cpu_doc,
        manifest=RunManifest.from_json({"timing": {"baseline": "timing-baseline.json"}}),
        timing=RunTiming.from_json(timing),
        baseline=RunTiming.from_json(baseline),
    )
    assert view.baseline_positions == ("after",)
    pre = view.stage("prefill")
    assert pre is not None and pre.unprofiled_ns is not None and pre.unprofiled_ns.mean == pytest.approx(10e6)
    assert (pre.baseline_runs, pre.baseline_drift, pre.overhead_within_drift) == (1, None, None)
    assert pre.overhead_frac == pytest.approx(16.9 / 10 - 1)
    text = html.render_html(view)
    section = text.split('<section id="overhead">')[1].split("</section>")[0]
    assert "One unprofiled run: the drift between identical unprofiled runs is unknown" in section
    assert section.count(">unknown</td>") == 3 and "cannot be separated" not in section
    s = check_traceable(view)
    unknown = next(a for a in s.actions if a.rule == "overhead-drift-unknown")
    assert unknown.text.startswith(
        "Profiling made these stages slower than the one unprofiled run, beyond the 20.0% threshold: vision 1.3x "
        "slower (+26.0%), prefill 1.7x slower (+69.0%), decode 1.5x slower (+47.0%);"
    )
    assert {"profiler-overhead", "overhead-within-drift"}.isdisjoint(a.rule for a in s.actions)


def test_run_files_reads_every_baseline(tmp_path: Path) -> None:
    for name, ms in (("timing-baseline.json", 1.0), ("timing-baseline-3.json", 3.0), ("timing-baseline-1.json", 2.0)):
        (tmp_path / name).write_text(json.dumps({"profiled": False, "records": _runs_records({"prefill": ms})}))
    base = read_run_files(tmp_path).baseline
    assert base is not None and base.records[0].ms == 1.0
    assert [(o.file, o.records[0].ms) for o in base.other_runs] == [
        ("timing-baseline-1.json", 2.0),
        ("timing-baseline-3.json", 3.0),
    ]
    # without timing-baseline.json (the run after failed) the first other run stands in
    (tmp_path / "timing-baseline.json").unlink()
    base = read_run_files(tmp_path).baseline
    assert base is not None and base.file == "timing-baseline-1.json"
    assert [o.file for o in base.other_runs] == ["timing-baseline-3.json"]


def test_analysis_json_carries_every_baseline(cpu_sqlite: Path, tmp_path: Path) -> None:
    from dsocr.analyze.pipeline import run_analysis

    run = tmp_path / "run"
    run.mkdir()
    (run / "trace.sqlite").write_bytes(cpu_sqlite.read_bytes())
    (run / "manifest.json").write_text(json.dumps(RUNS_MANIFEST))
    (run / "timing.json").write_text(json.dumps({"profiled": True, "records": _runs_records(PROFILED)}))
    steps = [
        {"repeat": r, "page": 0, "stage": "decode_step", "index": i, "ms": 1.0, "tokens": 1}
        for r in (0, 1)
        for i in range(4)
    ]
    for name, ms in (("timing-baseline.json", AFTER), ("timing-baseline-1.json", BEFORE)):
        (run / name).write_text(json.dumps({"profiled": False, "records": _runs_records(ms) + steps}))
    doc = json.loads(json.dumps(run_analysis([run]).to_dict(), default=str))
    other = doc["baseline"]["other_runs"]
    assert [o["file"] for o in other] == ["timing-baseline-1.json"]
    # compacted like the baseline: the first (repeat, page) keeps its steps, the second is summed into one record
    assert [r["steps"] for r in other[0]["records"] if r.get("steps")] == [4] and other[0]["records_compacted"]
    view = view_from_analysis(doc)
    assert view.baseline_positions == ("before", "after")
    pre = view.stage("prefill")
    assert pre is not None and pre.baseline_drift == pytest.approx(6 / 13) and pre.overhead_within_drift


def _cells(text: str, table_id: str) -> list[list[str]]:
    """The body rows of the table with ``id`` (cell texts)."""
    import re

    body = text.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body, flags=re.S)
    cells = [
        [re.sub(r"<[^>]+>|&nbsp;", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)] for r in rows
    ]
    return [c for c in cells if c]


def test_cpu_trace_says_na_not_zero(cpu_doc: dict[str, Any]) -> None:
    """No CUDA traced: GPU busy and kernels are n/a (not 0.000 ± 0.000 ms), and the MFU section says why."""
    text = html.render_html(view_from_analysis(cpu_doc))
    rows = _cells(text, "stage-times")
    assert rows and all(r[3] == "n/a" and r[5] == "n/a" for r in rows), rows
    assert "0.000 ± 0.000 ms" not in text
    assert "No CUDA was traced" in text and "GPU peak: n/a (no CUDA traced)" in text
    assert "None TFLOP/s" not in text


def test_decoder_only_foreign_trace(h100_sqlite: Path) -> None:
    """--prefill-tokens: no vision rows with 0 FLOPs, a model row with its time, no "pages" for runs."""
    from dsocr.analyze.pipeline import run_analysis
    from dsocr.analyze.workload_from_run import WorkloadFlags
    from dsocr.report.jsonout import document
    from dsocr.report.markdown import markdown_text

    a = run_analysis([h100_sqlite], workload=WorkloadFlags(None, None, None, None, 900))
    md = markdown_text(a)
    table = md.split("### Stage metrics", 1)[1].split("\n## ", 1)[0]
    rows = {ln.split(" | ")[0].strip("| "): ln.split(" | ") for ln in table.splitlines() if ln.startswith("| ")}
    assert set(rows) == {"stage", "---", "prefill", "decode", "model"}  # no vision/sam/clip/projector
    assert "page(s)" not in table and "3 instance(s)" in table
    metrics = {r["stage"]: r for r in a.analytic.metrics.to_dicts()}  # type: ignore[union-attr]
    model = metrics["model"]
    assert model["gpu_busy_ns"] == metrics["prefill"]["gpu_busy_ns"] + metrics["decode"]["gpu_busy_ns"]
    assert rows["model"][9] == f"{100 * model['mfu_busy']:.1f}%"  # MFU busy of the model: known now
    doc = document(a)
    view = view_from_analysis(doc)
    text = html.render_html(view)
    work = _cells(text, "stage-work")
    assert [r[0] for r in work] == ["prefill", "decode"]
    # MFU against wall time: the same figure as report.md / analysis.json (ratio of means), small ones not 0.0%
    dec = metrics["decode"]
    assert work[1][3] == html.fmt_pct(dec["mfu_wall"]) == f"{100 * dec['mfu_wall']:.2g}%"
    assert f"| {html.fmt_pct(dec['mfu_wall'])} |" in rows["decode"][0] + " | " + " | ".join(rows["decode"][1:])
    assert view.model_mfu is not None and view.model_mfu.mean == pytest.approx(model["mfu_busy"])
    assert "mode gundam" not in text and "runs of the workload per pass" in text
