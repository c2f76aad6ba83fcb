"""summary.md read by a stakeholder who knows nothing of GPUs (issue 12's reader check, on the bundled sample with
and without a measured what-if): the top says what was measured, the time, the main cost and what to fund; one
host-overhead finding with one bound; measured and predicted told apart; caveats apart from the advice."""

from __future__ import annotations

import json
import re
from pathlib import Path

import attrs

from dsocr.analyze.analysis_doc import AnalysisDocument
from dsocr.contract.whatif_index import COMPLETE, Variant
from dsocr.report import advice, html
from dsocr.report import summary as summ
from dsocr.report.adapt import view_from_analysis
from dsocr.report.view import ReportView
from test_summary import _overhead_view, check_traceable
from whatif_dirs import H100, make_run, make_whatif

GOLDEN = Path(__file__).parent / "golden" / "sample" / "analysis.json"


def _sample() -> ReportView:
    return view_from_analysis(AnalysisDocument.from_json(json.loads(GOLDEN.read_text())))


def _whatif(root: Path) -> advice.Measurements:
    """A what-if beside the sample: decode 1,200 -> 233 ms a pass with CUDA graphs (and the grouped MoE)."""
    base = {"vision": [171.0, 172.0], "prefill": [245.0, 244.0]}
    make_run(root / "baseline", decode=[1200.0, 1195.0], **base)
    make_run(root / "graph", decode=[230.0, 236.0], execution={"moe": "grouped", "decode": "graph"}, **base)
    make_whatif(root, [(Variant("graph", (("moe", "grouped"), ("decode", "graph"))), COMPLETE)])
    found = advice.find([root / "baseline"], None)
    assert found is not None
    return found


def _top(md: str) -> list[str]:
    """The lines before the headline paragraph (the title, warnings and blank lines left out)."""
    lines = [ln for ln in md.splitlines() if ln and not ln.startswith(("# ", "> "))]
    return lines[: next(i for i, ln in enumerate(lines) if ln.startswith("One pass"))]


def test_the_sample_opens_with_measured_time_cost_and_what_to_fund() -> None:
    view = _sample()
    s = check_traceable(view)
    md = html.render_summary_md(view, s)
    top = _top(md)
    assert [ln.split(":")[0] for ln in top] == [
        "Measured on NVIDIA H100 80GB HBM3",
        "- Time",
        "- Main cost",
        "- What to fund",
    ]
    assert top[1] == "- Time: 746 ms per page (1,492 ms for one pass over the 2 pages), measured without the profiler."
    assert "the times below are per pass unless they say per page" in top[0]
    assert top[2].startswith("- Main cost: GPU idle time (the GPU waiting for the CPU to send work), 86.8% of the time")
    # what to fund: the host overhead of decode, its bound on a whole page first, predicted and said so
    assert top[3] == (
        "- What to fund: cutting decode's CPU overhead (CUDA graphs or a serving engine). Expected: a whole page at "
        "most 3.1x faster (decode at most 10.9x; an upper bound from this run, not measured). No what-if has "
        "measured it yet."
    )
    # one host-overhead finding with one bound: 10.9x twice (the top and the finding), one expected gain for it
    assert md.count("10.9x") == 2
    (host,) = (a for a in s.actions if a.rule == summ.HOST_FINDING)
    assert host.rules == summ.HOST_RULES and host.text.count("Expected gain") == 1
    assert not any(a.rule in summ.HOST_RULES for a in s.actions)  # no count on its own
    # sam's bound also says what it gives a whole page: 3.4% of a page, at most 1.03x (never a "1.0x" gain)
    assert "That GPU work is 3.4% of a page's time, so a whole page at most 1.03x faster." in md
    assert advice.GAINS_NOTE in md


def test_the_sample_with_a_whatif_tells_measured_from_expected(tmp_path: Path) -> None:
    view = _sample()
    found = _whatif(tmp_path / "wi")
    md = html.render_summary_md(view, summ.build(view, found))
    fund = _top(md)[3]
    # expected (this run's bound) and measured (the what-if's own pair of runs), each named as such, per page
    assert "Expected: a whole page at most 3.1x faster (decode at most 10.9x; an upper bound from this run" in fund
    assert fund.endswith(
        f"Measured in a what-if (a separate pair of runs without and with the change) on {H100}: decode 5.1x faster "
        "(its time per page from 599 to 116 ms), a whole page 2.4x faster (from 832 to 350 ms)."
    )
    assert "No what-if has measured it yet" not in md
    # the measured gain is stated once in the advice, on the one finding, naming the other change it includes
    assert md.count("Measured in a what-if") == 2
    assert "without and with CUDA graphs for decode, also with the grouped MoE; the variant named graph" in md
    assert "(both beyond the run-to-run spread, so not noise)" in md
    assert "what-if" in {t for t, _ in summ.glossed(md)}


def test_caveats_are_listed_apart_from_the_advice() -> None:
    view = _overhead_view(0.25, 0.10)
    s = check_traceable(view)
    assert [a.rule for a in s.caveats] == ["profiler-overhead"] and s.advice == ()
    md = html.render_summary_md(view, s)
    caveat = md.index("## Read these numbers with care")
    assert md.index("Profiling made prefill") > caveat > md.index("## What to do next")
    assert "None of the recommendation rules fired" in md  # the caveat is not a change to make
    text = html.render_html(view, s)
    assert text.index("Read these numbers with care") < text.index("Profiling made prefill")


def test_every_word_a_stakeholder_misread_is_glossed() -> None:
    md = html.render_summary_md(_sample(), summ.build(_sample()))
    body, words = md.split("## Words used here")
    glossed = dict(summ.glossed(body))
    for word in ("profiler", "unprofiled", "FLOPs", "upper bound", "trace", "wall time", "vision", "ms", "host"):
        assert word in glossed, word
    assert all(f"- **{t}**" in words for t in glossed)


def test_a_gain_below_one_point_one_keeps_two_decimals() -> None:
    assert (summ.gain(1.024), summ.gain(1.1), summ.gain(3.14)) == ("1.02x", "1.1x", "3.1x")
    view = _sample()
    sam = next(a for a in summ.build(view).actions if a.rule == "far-from-roofline")
    assert not re.search(r"at most 1\.0x", sam.text)
    assert attrs.evolve(sam, text="").evidence  # the bound is evidence like every number
