"""The stakeholder summary: every number traceable to the analysis, rules fire on their thresholds."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest

from dsocr.report import html
from dsocr.report import summary as summ
from dsocr.report.adapt import view_from_analysis
from dsocr.report.view import ReportView, StageView, Stat
from report_views import full_view, h100_analysis

NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?%?x?")


def numbers_in(text: str) -> list[str]:
    return NUMBER.findall(text)


def check_traceable(view: ReportView) -> summ.Summary:
    """Every number in summary.md is an Evidence, and every Evidence recomputes from the view."""
    s = summ.build(view)
    md = html.render_summary_md(view, s)
    statements = [
        *s.top,
        *([s.measured] if s.measured else []),
        s.headline,
        *([s.mfu] if s.mfu else []),
        *(st for _, st in s.cost_centers),
        *s.limits,
        *s.actions,
        *([s.cost_note] if s.cost_note else []),
    ]
    shown = {e.shown for st in statements for e in st.evidence}
    # the GPU name may hold digits (H100 80GB): it is quoted from the trace, not a measurement; so may the
    # model code's description (its settings)
    scrubbed = md.replace(view.identity.gpu or "\0", "GPU").replace(view.identity.model_code or "\0", "code")
    # the analyzer's warnings are quoted first as they are (counts, paths): not the summary's statements
    assert all(f"> warning: {w}" in md for w in view.warnings)
    scrubbed = "\n".join(ln for ln in scrubbed.splitlines() if not ln.startswith("> warning: "))
    for tok in numbers_in(scrubbed):
        assert any(tok in sh for sh in shown), f"{tok!r} in summary.md is not traceable"
    for st in statements:
        for e in st.evidence:
            assert e.shown in st.text
            assert summ.resolve(view, e.key) == pytest.approx(e.value), e.key
    return s


def test_h100_summary_traces_to_the_analysis(h100_sqlite: Path) -> None:
    doc = h100_analysis(str(h100_sqlite))
    view = view_from_analysis(doc)
    s = check_traceable(view)
    stages = {r["stage"]: r for r in doc["stages"]}
    dec = stages["decode"]
    # the measured signals, recomputed from analysis.json directly
    idle = 1 - dec["gpu_busy_ns"] / dec["cpu_ns"]
    per_token = dec["launches"] / dec["decode_steps"]
    assert idle == pytest.approx(0.9632, abs=1e-4) and per_token == pytest.approx(901.0)
    (host,) = s.actions
    # the idle share and the launches per token are one finding (decode's host overhead), not two
    assert host.rule == summ.HOST_FINDING and host.rules == ("launch-bound", "launches-per-token")
    # the h100 fixture has no unprofiled run: the idle share is of the profiled time, and says so
    assert f"{100 * idle:.1f}% of decode's profiled time" in host.text
    assert "costs 901 kernel launches" in host.text
    # top cost center: GPU idle, share of the total of prefill + decode time
    total = stages["prefill"]["cpu_ns"] + dec["cpu_ns"]
    idle_ns = total - stages["prefill"]["gpu_busy_ns"] - dec["gpu_busy_ns"]
    first, st = s.cost_centers[0]
    assert first.key == "idle" and first.share == pytest.approx(idle_ns / total)
    assert f"{100 * idle_ns / total:.1f}% of the profiled time" in st.text
    # the stage holding most of the idle time: decode's idle over the idle of prefill and decode
    dec_idle = dec["cpu_ns"] - dec["gpu_busy_ns"]
    assert first.stage == "decode" and first.stage_share == pytest.approx(dec_idle / idle_ns)
    assert f"of which {100 * dec_idle / idle_ns:.1f}% falls in decode" in st.text
    assert len(s.cost_centers) == 3
    # GEMM is second: its kernel time over the total time
    gemm = sum(
        r["total_ns"]
        for r in doc["kernel_categories"]
        if r["category"] == "gemm" and r["stage"] in ("prefill", "decode")  # not decode_step: inside decode
    )
    assert s.cost_centers[1][0].key == "gemm"
    assert s.cost_centers[1][0].share == pytest.approx(gemm / total)


def test_full_view_traceable_and_glossed() -> None:
    s = check_traceable(full_view())
    md = html.render_summary_md(full_view(), s)
    assert "## Words used here" in md and "**MFU**" in md and "**CUDA graph**" in md
    rules = [a.rule for a in s.actions]
    assert rules[0] == summ.HOST_FINDING and s.actions[0].rules == (
        "launch-bound",
        "launches-per-token",
        "d2h-per-token",
    )
    assert "sam-attention" in rules and "low-mfu-prefill" in rules
    # attention share in SAM: 12 / (12 + 10)
    sam = next(a for a in s.actions if a.rule == "sam-attention")
    assert "Attention takes 54.5% of the GPU time in SAM (above the 30.0% threshold)" in sam.text


def _decode(idle: float, launches: float = 0.0) -> ReportView:
    stage = StageView(
        "decode",
        range_ns=Stat.of([100.0]),
        gpu_busy_ns=Stat.of([100.0 * (1 - idle)]),
        kernels=Stat.of([1]),
        launches=Stat.of([launches]),
        tokens=10,
    )
    return ReportView(identity=full_view().identity, stages=(stage,))


@pytest.mark.parametrize(("idle", "fires"), [(0.49, False), (0.5, False), (0.51, True)])
def test_launch_bound_threshold(idle: float, fires: bool) -> None:
    rules = {r for a in summ.actions(_decode(idle)) for r in a.rules}
    assert ("launch-bound" in rules) is fires


def test_launches_per_token_threshold() -> None:
    assert summ.actions(_decode(0.1, launches=1000)) == ()  # 100/token: no rule fires
    (fired,) = summ.actions(_decode(0.1, launches=1010))
    assert fired.rules == ("launches-per-token",)  # not host-bound (idle 10%): the counts alone
    assert fired.text.startswith("Decode (generating the text token by token) is held back by the CPU on every")
    assert "costs 101 kernel launches (above the 100 threshold)." in fired.text


def test_no_rule_fires_says_so() -> None:
    view = _decode(0.1)
    s = check_traceable(view)
    assert s.actions == ()
    md = html.render_summary_md(view, s)
    assert "None of the recommendation rules fired" in md


def test_rule_table_is_consistent() -> None:
    ids = [r.id for r in summ.RULES]
    assert len(ids) == len(set(ids))
    for r in summ.RULES:
        assert r.metric in summ.METRICS and r.op in (">", "<")
        assert "{value}" in r.text and "{threshold}" in r.text


def test_cost_center_names_the_stage_holding_most_of_it() -> None:
    view = attrs.evolve(full_view(), categories=(("prefill", "gemm", 40e6), ("decode", "gemm", 70e6)))
    centers = {c.key: c for c in summ.cost_centers(view)}
    # GEMM: decode's 70 ms is most of the 110 ms, though 40 ms is a larger share of prefill's 80 ms
    assert centers["gemm"].stage == "decode"
    assert centers["gemm"].stage_share == pytest.approx(70e6 / 110e6)
    assert centers["gemm"].total_ns == pytest.approx(110e6)
    (st,) = [st for c, st in summ.build(view).cost_centers if c.key == "gemm"]
    assert "of which 63.6% falls in decode" in st.text


def test_a_rule_firing_in_several_stages_is_one_sentence_naming_each() -> None:
    view = full_view()
    s = check_traceable(view)
    far = [a for a in s.actions if a.rule == "far-from-roofline"]
    # vision 40/10 = 4.0x and prefill 60.33/8 = 7.5x cross 3.0x: one sentence, both stages with their value
    assert len(far) == 1
    assert "vision (4.0x)" in far[0].text and "prefill (7.5x)" in far[0].text
    assert "more than the 3.0x threshold" in far[0].text
    single = attrs.evolve(view, stages=tuple(st for st in view.stages if st.name != "prefill"))
    (one,) = [a for a in summ.actions(single) if a.rule == "far-from-roofline"]
    assert one.text.startswith("The GPU work of vision took 4.0x longer than the ideal (roofline) time")


def test_overhead_compares_cuda_events_with_cuda_events() -> None:
    st = StageView(
        "prefill",
        range_ns=Stat.of([120e6]),
        gpu_busy_ns=Stat.of([50e6]),
        kernels=Stat.of([10]),
        unprofiled_ns=Stat.of([80e6]),
        profiled_ns=Stat.of([100e6]),
    )
    assert st.overhead_frac == pytest.approx(0.25)  # 100 / 80 - 1, not the NVTX range's 120 / 80 - 1
    assert attrs.evolve(st, profiled_ns=None).overhead_frac == pytest.approx(0.5)


def _overhead_view(overhead: float, drift: float | None) -> ReportView:
    """A prefill stage profiled ``overhead`` slower than its unprofiled mean, with the given drift between runs."""
    st = StageView(
        "prefill",
        range_ns=Stat.of([110e6]),
        gpu_busy_ns=Stat.of([50e6]),
        kernels=Stat.of([10]),
        unprofiled_ns=Stat.of([80e6, 80e6]),
        profiled_ns=Stat.of([80e6 * (1 + overhead)]),
        baseline_runs=1 if drift is None else 2,
        baseline_drift=drift,
    )
    return ReportView(identity=full_view().identity, stages=(st,))


OVERHEAD_RULES = ("profiler-overhead", "overhead-within-drift", "overhead-drift-unknown")


@pytest.mark.parametrize(
    ("overhead", "drift", "fired"),
    [
        (0.25, None, "overhead-drift-unknown"),  # one unprofiled run: drift unknown
        (0.25, 0.10, "profiler-overhead"),
        (0.25, 0.25, "profiler-overhead"),  # drift not larger than the overhead: still the profiler's
        (0.25, 0.26, "overhead-within-drift"),
        (0.15, 0.50, None),  # under the rule's 20%: the summary stays silent (the report's section says it)
        (-0.25, 0.30, None),  # profiled faster: no slowdown rule fires
    ],
)
def test_overhead_rules_split_on_drift(overhead: float, drift: float | None, fired: str | None) -> None:
    view = _overhead_view(overhead, drift)
    s = check_traceable(view)
    rules = [a.rule for a in s.actions if a.rule in OVERHEAD_RULES]
    assert rules == ([fired] if fired else [])
    st = view.stages[0]
    assert st.overhead_within_drift is (None if drift is None else drift > abs(overhead))
    if fired == "overhead-within-drift":
        (a,) = [a for a in s.actions if a.rule == fired]
        assert "make prefill 1.2x slower (+25.0%" in a.text and "differed by 26.0% among themselves" in a.text
        assert "cannot be separated from host drift" in a.text
    # the report's overhead section says the same, with both numbers, exactly when drift > |overhead|
    text = html.render_html(view)
    statement = "The overhead cannot be separated from host drift in prefill"
    assert (statement in text) is bool(st.overhead_within_drift)
    if st.overhead_within_drift:
        assert f"prefill (overhead {100 * overhead:.1f}%, drift {100 * (drift or 0):.1f}%)" in text


@pytest.mark.parametrize(
    ("value", "threshold", "fmt", "shown"),
    [
        (3.049, 3.0, "times", "3.05x"),
        (3.2, 3.0, "times", "3.2x"),
        (0.5004, 0.5, "pct", "50.04%"),
        (100.4, 100, "count", "100.4"),
        (0.61, 0.5, "pct", "61.0%"),
    ],
)
def test_value_never_reads_like_its_threshold(value: float, threshold: float, fmt: str, shown: str) -> None:
    assert summ.shown_apart(value, threshold, fmt) == shown


def test_rule_sentence_tells_value_from_threshold() -> None:
    """A ratio of 3.049 against the 3.0x threshold reads 3.05x in the sentence and its evidence."""
    v = full_view()
    st = next(s for s in v.stages if s.name == "prefill")
    ratio = 3.049
    other = [attrs.evolve(s, predicted_ns=None) for s in v.stages if s.name != "prefill"]
    st = attrs.evolve(st, predicted_ns=st.gpu_busy_ns.mean / ratio)
    view = attrs.evolve(v, stages=(*other, st))
    act = next(a for a in summ.actions(view) if a.rule == "far-from-roofline")
    assert "took 3.05x longer than the ideal (roofline) time (above the 3.0x threshold)" in act.text
    assert act.evidence[0].shown == "3.05x" and act.evidence[0].value == pytest.approx(ratio)


def _noisy(values: list[float]) -> ReportView:
    stage = StageView(
        "decode", range_ns=Stat.of(values), gpu_busy_ns=Stat.of([50.0] * len(values)), kernels=Stat.of([1])
    )
    return ReportView(identity=full_view().identity, stages=(stage,))


def test_noisy_is_the_repeat_verdict_and_quotes_the_standard_error() -> None:
    # 90, 100, 140: mean 110, the 140 pass is 30/110 = 27.3% off; stddev sqrt(700) = 26.46, CV 24.1%,
    # standard error of the mean CV / sqrt(3) = 13.9%
    (noisy,) = [a for a in summ.actions(_noisy([90.0, 100.0, 140.0])) if a.rule == "noisy"]
    assert noisy.text == (
        "A single pass of decode strays 27.3% from the mean of the passes (beyond the ±10.0% threshold); the mean "
        "itself is known to ±13.9% (standard error): compare runs with care and use more repeats."
    )
    # 100, 100, 111.5: mean 103.8, the largest deviation 7.7/103.8 = 7.4% (CV 6.4%): within +/-10%, no sentence
    assert "noisy" not in {a.rule for a in summ.actions(_noisy([100.0, 100.0, 111.5]))}
    # 100, 122.3: CV 14.9% > 10% but each pass only 10.03% off the mean 111.15: the verdict, not the CV, decides
    assert "noisy" in {a.rule for a in summ.actions(_noisy([100.0, 122.3]))}
    assert "noisy" not in {a.rule for a in summ.actions(_noisy([100.0, 122.0]))}  # 9.9% off
    assert "noisy" not in {a.rule for a in summ.actions(_noisy([100.0]))}  # one pass: unknown, nothing said
