"""The summary's first lines: what was measured, the unprofiled headline and its drift, MFU, one limit per stage."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from dsocr.contract.run_timing import TimingModel
from dsocr.report import html
from dsocr.report import summary as summ
from dsocr.report.adapt import model_code_text as _model_code_text
from dsocr.report.view import ReportView, StageView, Stat
from report_views import full_view
from test_summary import check_traceable


def _with_runs() -> ReportView:
    """full_view with each top stage's unprofiled runs (before and after the capture)."""
    runs = {"vision": (46e6, 44e6), "prefill": (63e6, 61e6), "decode": (3.4e9, 3.2e9)}
    stages = tuple(
        attrs.evolve(s, unprofiled_runs=(("before", runs[s.name][0]), ("after", runs[s.name][1])))
        if s.name in runs
        else s
        for s in full_view().stages
    )
    return attrs.evolve(full_view(), stages=stages)


def test_headline_is_unprofiled_with_the_drift_beside_it() -> None:
    view = _with_runs()
    s = check_traceable(view)
    t = summ.totals(view)
    # unprofiled means: vision 45 ms, prefill 62 ms, decode 3,300 ms; profiled ranges 51 + 80 + 4,565.33 ms
    assert t.unprofiled_ns == pytest.approx(3407e6)
    assert t.range_ns == pytest.approx(51e6 + 80e6 + 4565.333e6, rel=1e-6)
    assert t.runs == (("before", pytest.approx(3509e6)), ("after", pytest.approx(3305e6)))
    text = s.headline.text
    assert text.startswith(
        "One pass (vision, prefill, decode) took 3,407 ms without the profiler (CUDA events, mean of 3 unprofiled "
        "passes"
    )
    assert "3,509 ms in the run before the capture, 3,305 ms in the run after the capture" in text
    assert "and 4,696 ms under the profiler" in text
    # decode: 64 tokens in 3.3 s unprofiled (19.4/s), in 4.5653 s profiled (14.0/s)
    assert "Decode generated 19.4 tokens/s without the profiler (14.0 under it)" in text
    # GPU busy 39.667 + 60.333 + 159 = 259 ms of 3,407 ms
    assert (
        "The GPU was busy 7.6% of a pass's unprofiled time (its busy time from the trace), idle the other 92.4%" in text
    )
    assert "where the time goes, below, comes from the profiled trace" in text


def test_headline_without_unprofiled_runs_says_so() -> None:
    stages = tuple(attrs.evolve(s, unprofiled_ns=None) for s in full_view().stages)
    view = attrs.evolve(full_view(), stages=stages)
    s = check_traceable(view)
    assert s.headline.text.startswith(
        "One pass (vision, prefill, decode) took 4,696 ms under the profiler (no unprofiled"
    )
    assert "the GPU was busy 5.5% of that time" in s.headline.text  # 259 / 4,696.33
    assert s.mfu is not None and "under the profiler (no unprofiled run)" in s.mfu.text


def test_measured_sentence_and_pass_defined() -> None:
    view = attrs.evolve(
        full_view(), identity=attrs.evolve(full_view().identity, model_code="dsocr's replica (experts grouped_mm)")
    )
    s = check_traceable(view)
    assert s.measured is not None
    assert s.measured.text == (
        "Measured on NVIDIA H100 80GB HBM3: 1 page, 3 passes (repeats of the whole set), a 900-token text prompt "
        "beside the image and up to 65 generated tokens per page, base mode, seeded random weights (the GPU work and "
        "its timings are real; random weights only make the text meaningless and never stop early, so every page "
        "generates all its tokens), model code: dsocr's replica (experts grouped_mm). A pass is every page "
        "once through vision, prefill and decode; the times below are per pass unless they say per page."
    )
    md = html.render_summary_md(view, s)
    assert md.index("Measured on") < md.index("One pass (")


def model_code_text(model: dict[str, Any], settings: dict[str, Any]) -> str | None:
    return _model_code_text(TimingModel.from_json(model), settings)


def test_model_code_names_the_variant_or_the_checkpoints_code() -> None:
    replica = {"kind": "replica", "experts_implementation": "eager", "attn_implementation": "eager"}
    assert model_code_text(replica, {}) == "dsocr's replica (experts eager, attention eager)"
    vendor = {
        "kind": "remote-code",
        "code": "the checkpoint's own code (trust_remote_code), its generate",
        "execution": "the checkpoint's generate (greedy), eager attention",
    }
    assert model_code_text(vendor, {}) == (
        "the checkpoint's own code (trust_remote_code), its generate: "
        "the checkpoint's generate (greedy), eager attention"
    )
    assert (
        model_code_text({}, {"model": "replica", "attn_implementation": "sdpa"}) == "dsocr's replica (attention sdpa)"
    )
    assert model_code_text({**vendor, "execution": None, "vendor_execution": vendor["execution"]}, {}) == (
        "the checkpoint's own code (trust_remote_code), its generate: "
        "the checkpoint's generate (greedy), eager attention"
    )
    # the replica's execution record (timing.json from issue 10 on): a dict, never printed as one
    executed = {"kind": "replica", "execution": {"moe": "loop", "attn": "eager", "autocast": "bfloat16"}}
    assert (
        model_code_text(executed, {})
        == "dsocr's replica (MoE loop, attention eager, decode eager, batch 1, cache dynamic)"
    )
    # the full execution variant: decode steps, batch and KV cache too
    variant = {
        "kind": "replica",
        "execution": {"moe": "grouped", "attn": "sdpa", "decode": "graph", "batch": 4, "cache": "static:640"},
    }
    assert model_code_text(variant, {}) == (
        "dsocr's replica (MoE grouped, attention sdpa, decode graph, batch 4, cache static:640)"
    )
    assert model_code_text({}, {}) is None


def test_mfu_over_unprofiled_wall_time_and_busy_beside_it() -> None:
    view = _with_runs()
    s = check_traceable(view)
    # (9.1 + 5.9 + 0.37) TFLOP / (989.4 TFLOP/s x 3.407 s) = 0.456%
    value, unprofiled = summ.mfu_model(view) or (0.0, False)
    assert value == pytest.approx(15.37e12 / (989.4e12 * 3.407)) and unprofiled
    assert s.mfu is not None
    assert s.mfu.text.startswith("MFU (model FLOPs utilization; this is the figure to quote) is 0.46%")
    assert "peak (989 TFLOP/s)" in s.mfu.text
    # the GPU-busy MFU: the view's model figure, mean of 0.82%, 0.85%, 0.79%
    assert "Counting only the time the GPU was busy it is 0.82%" in s.mfu.text


def _stage(name: str, rng: float, busy: float, predicted: float, flops: float, nbytes: float) -> StageView:
    return StageView(
        name,
        range_ns=Stat.of([rng]),
        gpu_busy_ns=Stat.of([busy]),
        kernels=Stat.of([1]),
        unprofiled_ns=Stat.of([rng]),
        predicted_ns=predicted,
        flops=flops,
        bytes=nbytes,
        mfu_busy=Stat.of([0.05]),
        tokens=10,
    )


def test_one_limit_per_stage_and_rules_follow_it() -> None:
    stages = (
        # idle 1 - 40/100 = 60%: host-bound, though its GPU work is 8x the roofline
        _stage("vision", 100e6, 40e6, 5e6, 1e12, 1e9),
        # idle 10%, 2x the roofline, bytes/bw 0.03 s > flops/peak 0.001 s: memory-bound
        _stage("prefill", 100e6, 90e6, 45e6, 1e12, 1e11),
        # idle 20%, 4x the roofline: kernel-bound
        _stage("decode", 100e6, 80e6, 20e6, 1e10, 1e9),
    )
    view = attrs.evolve(full_view(), stages=stages, categories=(), model_mfu=None)
    limits = summ.classify(view)
    assert limits == {"vision": summ.HOST, "prefill": summ.MEMORY, "decode": summ.KERNEL}
    s = check_traceable(view)
    rules = {a.rule: a for a in s.actions}
    # far from the roofline: decode (4.0x) only, never host-bound vision (8.0x)
    assert "far-from-roofline" in rules
    assert "decode" in rules["far-from-roofline"].text and "vision" not in rules["far-from-roofline"].text
    # low MFU in vision is GPU-side advice: not for a host-bound stage; prefill (memory-bound) gets it
    assert "low-mfu-vision" not in rules and "low-mfu-prefill" in rules
    assert "too small" not in rules["low-mfu-prefill"].text
    lines = {st.text.split(":")[0]: st.text for st in s.limits}
    assert lines["vision"].startswith("vision: host-bound (the GPU waits for the CPU most of the time; GPU idle 60.0%")
    assert (
        "8.0x longer than the ideal (roofline) time; at the ideal it would be limited by its arithmetic rate"
        in lines["vision"]
    )
    assert lines["prefill"].startswith("prefill: memory-bound")
    assert lines["decode"].startswith("decode: kernel-bound") and "4.0x" in lines["decode"]


def test_idle_share_and_limit_use_the_unprofiled_time() -> None:
    # profiled 200 ms (idle 60%), unprofiled 100 ms (idle 20%): not host-bound
    st = attrs.evolve(_stage("decode", 200e6, 80e6, 70e6, 1e10, 1e9), unprofiled_ns=Stat.of([100e6]))
    view = attrs.evolve(full_view(), stages=(st,), categories=())
    assert summ.idle_share(view, st) == (pytest.approx(0.2), True)
    assert summ.classify(view) == {"decode": summ.MEMORY}
    assert "launch-bound" not in {a.rule for a in summ.actions(view)}


def test_vision_inside_prefill_counts_once_unprofiled() -> None:
    # the unprofiled runs timed prefill whole (300 ms with vision's 100 ms): prefill's own is 200 ms
    vision = attrs.evolve(
        _stage("vision", 120e6, 50e6, 0, 0, 0), unprofiled_ns=Stat.of([100e6]), unprofiled_runs=(("before", 100e6),)
    )
    prefill = attrs.evolve(
        _stage("prefill", 230e6, 100e6, 0, 0, 0),
        unprofiled_ns=Stat.of([300e6]),
        unprofiled_runs=(("before", 300e6),),
        inclusive_range_ns=Stat.of([350e6]),
    )
    view = attrs.evolve(full_view(), stages=(vision, prefill), categories=(), nesting_note="vision inside prefill")
    assert summ.unprofiled_own(view, prefill) == (pytest.approx(200e6), (("before", pytest.approx(200e6)),))
    t = summ.totals(view)
    assert t.unprofiled_ns == pytest.approx(300e6)  # vision 100 + prefill's own 200, not 400
    assert summ.idle_share(view, prefill) == (pytest.approx(0.5), True)


def test_report_md_carries_what_report_html_carries() -> None:
    """The bundled sample's report.md (pinned by test_golden) holds the run facts report.html shows."""
    import json
    from pathlib import Path

    from dsocr.analyze.input_files import sample_trace

    md = (Path(__file__).parent / "golden" / "sample" / "report.md").read_text()
    manifest = json.loads((sample_trace() / "manifest.json").read_text())
    for heading in ("## Run identity", "## Time per pass and tokens/s", "## Profiler overhead", "## Memory"):
        assert f"\n{heading}\n" in md
    assert "\n## Inputs and assumptions\n" in md and "\n### Pages\n" in md and "\n### Caveats\n" in md
    assert "- **model code**: dsocr's replica (MoE loop, attention eager, decode eager, batch 1, cache dynamic)" in md
    for page in manifest["inputs"]:
        assert f"| {page['name']} | image | 1240x1754 | {page['sha256'][:16]} |" in md
    # decode: 30 tokens a pass; 26.8 tokens/s over its unprofiled time (30 / 1.1191 s), 18.5 over the profiled
    # range (30 / 1.6218 s); the unprofiled mean 1,119.1 ms = (1,167.8 + 1,070.4) / 2
    assert "| 30 | 26.8 | 18.5 ± 0.7" in md
    assert "| decode | 1,119.1 ± 57.7 ms (CV 5.2%, s.e. 2.6%) | before 1,167.8 ms, after 1,070.4 ms |" in md
    assert "- **weights**: 6.21 GiB" in md
