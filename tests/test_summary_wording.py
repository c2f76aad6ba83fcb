"""summary.md's wording for a reader who knows nothing about GPUs: every figure says what it is a share of."""

from __future__ import annotations

import attrs
import pytest

from dsocr.report import html
from dsocr.report import summary as summ
from dsocr.report.view import ReportView, StageView, Stat
from report_views import full_view
from test_summary import check_traceable


def _two_runs_two_passes(pages: int = 2) -> ReportView:
    """full_view with 4 unprofiled passes per top stage: 2 runs (before, after the capture) x 2 passes."""
    runs = {"vision": (46e6, 44e6), "prefill": (63e6, 61e6), "decode": (3.4e9, 3.2e9)}
    stages = []
    for s in full_view().stages:
        if s.name in runs:
            b, a = runs[s.name]
            s = attrs.evolve(s, unprofiled_ns=Stat.of([b, b, a, a]), unprofiled_runs=(("before", b), ("after", a)))
        stages.append(s)
    v = full_view()
    return attrs.evolve(v, stages=tuple(stages), identity=attrs.evolve(v.identity, pages=pages))


def test_headline_splits_the_passes_into_runs_and_gives_the_time_per_page() -> None:
    view = _two_runs_two_passes()
    s = check_traceable(view)
    # 45 + 62 + 3,300 ms = 3,407 ms a pass of 2 pages: 1,704 ms a page (1,703.5)
    assert "took 3,407 ms (1,704 ms per page) without the profiler" in s.headline.text
    assert "mean of 4 unprofiled passes: 2 unprofiled runs x 2 passes;" in s.headline.text
    # decode's tokens per second count every page's tokens of a pass
    assert (
        "counting the 64 tokens decode generates in a pass over all its pages (prefill produces each page's first"
        in s.headline.text
    )
    # one page: no per-page figure, and 3 passes over 2 runs is no even split: none claimed
    one = check_traceable(full_view())
    assert "per page" not in one.headline.text and "unprofiled runs x" not in one.headline.text


def test_each_idle_figure_names_what_it_is_a_share_of() -> None:
    view = _two_runs_two_passes()
    s = check_traceable(view)
    t = summ.totals(view)
    # the headline: of a pass's unprofiled time, busy and idle adding up to 100%
    busy = t.busy_ns / (t.unprofiled_ns or 1)
    assert f"busy {100 * busy:.1f}% of a pass's unprofiled time" in s.headline.text
    assert f"idle the other {100 * (1 - busy):.1f}%" in s.headline.text
    # the cost center: of the profiled time, with the unprofiled share beside it, and the stage's part
    (idle_center,) = [st for c, st in s.cost_centers if c.key == "idle"]
    assert f"{100 * (1 - busy):.1f}% of the unprofiled time), of which" in idle_center.text
    assert "of the profiled time (" in idle_center.text and "falls in decode." in idle_center.text
    # decode's own idle share is of decode's unprofiled time: 1 - 159 / 3,300 ms, not a profiled share
    decode = next(st for st in s.limits if st.text.startswith("decode:"))
    assert f"GPU idle {100 * (1 - 159e6 / 3300e6):.1f}% of decode's unprofiled time" in decode.text
    launch = next(a for a in s.actions if a.rule == summ.HOST_FINDING)
    assert f"idle {100 * (1 - 159e6 / 3300e6):.1f}% of decode's unprofiled time" in launch.text


def test_without_unprofiled_runs_the_idle_figures_say_profiled() -> None:
    view = attrs.evolve(full_view(), stages=tuple(attrs.evolve(s, unprofiled_ns=None) for s in full_view().stages))
    s = check_traceable(view)
    assert all("unprofiled" not in st.text for st in s.limits)
    launch = next(a for a in s.actions if a.rule == summ.HOST_FINDING)
    assert "of decode's profiled time" in launch.text
    assert all("unprofiled" not in st.text for _, st in s.cost_centers)


def test_launch_bound_gives_the_most_removing_cpu_overhead_could_gain() -> None:
    stage = StageView(
        "decode",
        range_ns=Stat.of([500e6]),
        gpu_busy_ns=Stat.of([40e6]),
        kernels=Stat.of([1]),
        tokens=20,
        unprofiled_ns=Stat.of([400e6]),
    )
    view = ReportView(identity=full_view().identity, stages=(stage,))
    s = check_traceable(view)
    (launch,) = [a for a in s.actions if a.rule == summ.HOST_FINDING]
    # unprofiled 400 ms over 40 ms of GPU work: at most 10x; per step 2 ms of 20 ms
    assert "decode would be at most 10.0x faster (the GPU works 2 ms of each 20 ms decode step" in launch.text
    assert "Expected gain, an upper bound from this run (not measured):" in launch.text
    # one stage only: the whole pass is decode, so the pass-level bound is the same 10x
    assert "a whole page at most 10.0x faster (the other stages unchanged)" in launch.text


def test_cost_note_names_the_rest_and_the_profilers_stretch() -> None:
    view = _two_runs_two_passes()
    s = check_traceable(view)
    assert s.cost_note is not None
    rest = 1 - sum(c.share for c, _ in s.cost_centers)
    assert s.cost_note.text.startswith(
        f"The other {100 * rest:.1f}% of the profiled time is GPU kernels of other kinds"
    )
    t = summ.totals(view)
    assert f"The profiler stretched a pass {t.range_ns / (t.unprofiled_ns or 1):.1f}x" in s.cost_note.text
    md = html.render_summary_md(view, s)
    assert s.cost_note.text in md and s.cost_note.text in html.render_html(view, s)


def test_profiler_slowdown_reads_as_times_slower() -> None:
    st = StageView(
        "projector",
        range_ns=Stat.of([10e6]),
        gpu_busy_ns=Stat.of([1e6]),
        kernels=Stat.of([1]),
        unprofiled_ns=Stat.of([1e6, 1e6]),
        profiled_ns=Stat.of([2.724e6]),
        baseline_runs=2,
        baseline_drift=0.414,
    )
    s = check_traceable(ReportView(identity=full_view().identity, stages=(st,)))
    (a,) = [a for a in s.actions if a.rule == "profiler-overhead"]
    assert a.text.startswith("Profiling made projector 2.7x slower (+172.4%) than the unprofiled runs")
    assert "above the 20.0% threshold" in a.text


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("the same clip of sam", {"sam, clip, projector"}),
        ("the same result", set()),  # "same" is not the stage sam
        ("decode is host-bound", {"host", "decode"}),
        ("900 kernel launches", {"kernel", "kernel launch"}),
        ("12 tokens", {"token"}),
        ("the sam stage", {"sam, clip, projector"}),
    ],
)
def test_glossary_matches_whole_words(text: str, terms: set[str]) -> None:
    assert {t for t, _ in summ.glossed(text)} == terms


def test_glossary_holds_no_number() -> None:
    """The glossary sits in summary.md beside the traceability check: a digit there would be untraceable."""
    assert not any(ch.isdigit() for term, meaning in summ.GLOSSARY.items() for ch in term + meaning)
