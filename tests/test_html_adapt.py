"""The report view built from analysis.json, the analytic model's JSON and a baseline timing.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dsocr.analytic.export import to_json
from dsocr.analytic.peaks import resolve_peak
from dsocr.analytic.workload import Workload, estimate
from dsocr.report import html
from dsocr.report import summary as summ
from dsocr.report.adapt import run_files, view_from_analysis
from report_views import h100_analysis
from test_summary import check_traceable


@pytest.fixture(scope="module")
def analytic() -> dict[str, Any]:
    """The analytic model of one page (base mode, 12 prompt tokens, 65 new tokens) on the H100's peak."""
    return to_json(estimate(Workload(prompt_tokens=12, new_tokens=65)), resolve_peak("NVIDIA H100 80GB HBM3"))


@pytest.fixture(scope="module")
def cpu_doc(cpu_sqlite: Path) -> dict[str, Any]:
    from dsocr.analyze.analysis import run_analysis

    doc: dict[str, Any] = json.loads(json.dumps(run_analysis([cpu_sqlite]).to_dict(), default=str))
    return doc


def test_mfu_from_analytic_and_measured_times(h100_sqlite: Path, analytic: dict[str, Any]) -> None:
    doc = h100_analysis(str(h100_sqlite))
    view = view_from_analysis(doc, analytic=analytic)
    dec = view.stage("decode")
    assert dec is not None and dec.mfu_busy is not None and dec.mbu_busy is not None and dec.mfu_wall is not None
    row = next(r for r in doc["stages"] if r["stage"] == "decode")
    flops = analytic["stages"]["decode"]["flops"] * row["instances"]  # one page's work x the 3 decode ranges
    assert dec.flops == pytest.approx(flops)
    assert dec.mfu_busy.mean == pytest.approx(flops / (989.4e12 * row["gpu_busy_ns"] / 1e9))
    assert dec.mfu_wall.mean == pytest.approx(flops / (989.4e12 * row["cpu_ns"] / 1e9))
    nbytes = analytic["stages"]["decode"]["bytes"] * row["instances"]
    assert dec.mbu_busy.mean == pytest.approx(nbytes / (3.35e12 * row["gpu_busy_ns"] / 1e9))
    assert dec.predicted_ns == pytest.approx(analytic["stages"]["decode"]["predicted_ns"] * 3)
    assert view.peaks is not None and view.peaks.source == "table: H100 SXM5 80GB"
    assert view.memory is not None and view.memory.weights_bytes == 6_672_212_480
    # model-level MFU over prefill + decode (the trace has no vision stage)
    pre = next(r for r in doc["stages"] if r["stage"] == "prefill")
    total = analytic["stages"]["prefill"]["flops"] * pre["instances"] + flops
    assert view.model_mfu is not None
    assert view.model_mfu.mean == pytest.approx(total / (989.4e12 * (pre["gpu_busy_ns"] + row["gpu_busy_ns"]) / 1e9))
    assert {p.label for p in view.roofline} == {"prefill", "decode"}
    text = html.render_html(view)
    assert "No analytic model" not in text and "Model-level MFU is not available" not in text
    assert 'class="point stage"' in text  # the stages are placed on the roofline
    assert ("analytic workload: context mode", "auto") in view.assumptions
    # the low-MFU and far-from-roofline rules now fire, each quoting its number
    rules = {a.rule for a in summ.actions(view)}
    assert {"launch-bound", "launches-per-token", "low-mfu-prefill", "far-from-roofline"} <= rules


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
    assert f"The vision stage: {100 * vision.range_ns.mean / total:.1f}% of the total time" in md
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
    view = view_from_analysis(cpu_doc, timing=timing)
    pre = view.stage("prefill")
    assert pre is not None and pre.unprofiled_ns is not None
    assert pre.unprofiled_ns.values == (10e6, 11e6)
    assert pre.tokens == 273
    assert view.memory is not None and dict(view.memory.peak_allocated_by_stage)["prefill"] == 7_000_000_001
    assert [s.context_len for s in view.decode_steps] == [274, 275, 276, 277, 278]
    assert "random weights" in view.caveats
    # the profiled worker's own timing is not a baseline, but still gives tokens and context lengths
    profiled = view_from_analysis(cpu_doc, timing={**timing, "profiled": True})
    pre = profiled.stage("prefill")
    assert pre is not None and pre.unprofiled_ns is None and pre.tokens == 273
    assert profiled.decode_steps[0].context_len == 274
    # ... and with the baseline beside it, the baseline gives the unprofiled times
    fast = [{**r, "ms": r["ms"] / 2} for r in records]
    both = view_from_analysis(
        cpu_doc, timing={**timing, "profiled": True}, baseline={"profiled": False, "records": fast}
    )
    pre = both.stage("prefill")
    assert pre is not None and pre.unprofiled_ns is not None and pre.unprofiled_ns.values == (5e6, 5.5e6)


def test_run_files(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"dsocr_version": "0.1.0", "settings": {"mode": "base"}}')
    (tmp_path / "timing-baseline.json").write_text("{broken")
    files = run_files(tmp_path)
    assert files["manifest"] == {"dsocr_version": "0.1.0", "settings": {"mode": "base"}}
    assert files["timing"] is None and files["baseline"] is None


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
    view = view_from_analysis(cpu_doc, manifest=manifest, timing=timing)
    i = view.identity
    assert (i.gpu, i.driver, i.cuda, i.torch, i.dtype) == ("GPU X", "580.95", "13.0", "2.11.0+cu130", "bfloat16")
    assert (i.model_source, i.random_weights, i.mode, i.pages) == ("replica", True, "gundam", 1)
    assert (i.prompt_tokens, i.new_tokens, i.repeats) == (12, 32, 2)
    assert view.pages is not None
    assert view.pages.rows == (("p1.png", "image", "1024x1448", "ab" * 8, "2x3", "913", "925"),)
    assert ("mode", "gundam") in view.assumptions and ("max_new_tokens", "32") in view.assumptions
    text = html.render_html(view)
    assert "random (see caveats)" in text and "close to uniform" in text and "No run manifest" not in text


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
