"""Advice with numbers: each recommendation's expected gain from the run, and the measured gain of a what-if
(found with --whatif or beside the baseline)."""

from __future__ import annotations

from pathlib import Path

import attrs
import markupsafe
import pytest

from dsocr.cli import main
from dsocr.contract.whatif_index import COMPLETE, Variant
from dsocr.report import advice
from dsocr.report import html as html_mod
from dsocr.report import summary as summ
from dsocr.report.view import ReportView, StageView, Stat
from report_views import full_view
from test_summary import check_traceable
from whatif_dirs import H100, make_run, make_whatif

GRAPH = Variant("graph", (("moe", "grouped"), ("decode", "graph")))
MEASURED = (
    "Measured in a what-if (a separate pair of unprofiled runs of the same pages, without and with CUDA graphs for "
    "decode, also with the grouped MoE; the variant named graph): decode's time per page went from 525 to 103 ms, "
    "5.1x faster, and a whole page from 700 to 278 ms, 2.5x faster (both beyond the run-to-run spread, so not "
    f"noise), on {H100}."
)


def _view() -> ReportView:
    """Decode idle 90% of 100 ms (busy 10 ms: at most 10x without host overhead), 200 launches per token."""
    stage = StageView(
        "decode",
        range_ns=Stat.of([100e6]),
        gpu_busy_ns=Stat.of([10e6]),
        kernels=Stat.of([2000]),
        launches=Stat.of([2000]),
        tokens=10,
    )
    return ReportView(identity=full_view().identity, stages=(stage,))


@pytest.fixture
def whatif_dir(tmp_path: Path) -> Path:
    root = tmp_path / "wi"
    make_run(root / "baseline", decode=[1000.0, 1100.0])
    make_run(root / "graph", decode=[200.0, 212.0], execution={"moe": "grouped", "decode": "graph"})
    make_whatif(root, [(GRAPH, COMPLETE)])
    return root


def test_expected_gain_without_a_whatif() -> None:
    s = check_traceable(_view())  # every number an Evidence that recomputes from the view
    (host,) = s.actions
    assert host.rule == summ.HOST_FINDING and host.rules == ("launch-bound", "launches-per-token")
    assert host.text.endswith(
        "Expected gain, an upper bound from this run (not measured): without any of this CPU overhead, decode would "
        "be at most 10.0x faster (the GPU works 1 ms of each 10 ms decode step, one generated token) and a whole "
        "page at most 10.0x faster (the other stages unchanged). The counts above are one overhead with this one "
        "bound: their gains do not add up."
    )
    assert "Measured" not in " ".join(a.text for a in s.actions)


def _host_view(vision_ms: float = 0.0) -> ReportView:
    """Decode: 1,200 ms unprofiled over 30 tokens, GPU busy 100 ms; 1,200 launches, 330 syncs and 330 device-to-host
    copies a pass (40, 11 and 11 per token: every count rule fires); optionally a vision stage beside it."""
    decode = StageView(
        "decode",
        range_ns=Stat.of([1500e6]),
        gpu_busy_ns=Stat.of([100e6]),
        kernels=Stat.of([1200]),
        launches=Stat.of([3600]),
        syncs=Stat.of([330]),
        d2h_copies=Stat.of([330]),
        unprofiled_ns=Stat.of([1200e6]),
        tokens=30,
    )
    vision = StageView(
        "vision",
        range_ns=Stat.of([vision_ms * 1e6]),
        gpu_busy_ns=Stat.of([vision_ms * 0.9e6]),
        kernels=Stat.of([10]),
        unprofiled_ns=Stat.of([vision_ms * 1e6]),
    )
    stages = (vision, decode) if vision_ms else (decode,)
    return ReportView(identity=attrs.evolve(full_view().identity, pages=2), stages=stages)


def test_decode_host_overhead_is_one_finding_with_one_bound() -> None:
    view = _host_view(vision_ms=300.0)
    s = check_traceable(view)
    md = html_mod.render_summary_md(view, s)
    (host,) = (a for a in s.actions if a.rule == summ.HOST_FINDING)
    assert host.rules == summ.HOST_RULES  # the idle share and the three counts, joined
    assert "Each generated token costs 120 kernel launches (above the 100 threshold), 11 waits for the GPU" in host.text
    assert "and 11 device-to-host copies (above the 0.5 threshold)" in host.text
    # one bound for all of it: 1,200 / 100 ms = 12x on decode; a page: 1,500 / (1,500 - 1,100) ms = 3.75x
    assert md.count("Expected gain") == 1 and md.count("at most 12.0x") == 2  # the finding and the top line
    assert "a whole page at most 3.8x faster (the other stages unchanged)" in host.text
    assert "their gains do not add up" in host.text
    # the top: time per page, the main cost, what to fund with the same bounds
    assert [t.text.split(":")[0] for t in s.top] == ["Time", "Main cost", "What to fund"]
    assert (
        s.top[0].text
        == "Time: 750 ms per page (1,500 ms for one pass over the 2 pages), measured without the profiler."
    )
    assert s.top[2].text == (
        "What to fund: cutting decode's CPU overhead (CUDA graphs or a serving engine). Expected: a whole page at "
        "most 3.8x faster (decode at most 12.0x; an upper bound from this run, not measured). No what-if has "
        "measured it yet."
    )
    assert md.index(s.top[2].text) < md.index(s.headline.text)  # read first


def test_an_overlapping_bound_is_not_repeated() -> None:
    """Prefill both far from the roofline and low in MFU: one bound on its GPU work, named once."""
    view = full_view()
    prefill = next(st for st in view.stages if st.name == "prefill")
    # mostly busy (not host-bound), 60.33 ms of GPU work over an 8 ms roofline time: kernel-bound, MFU 9.9%
    prefill = attrs.evolve(prefill, unprofiled_ns=Stat.of([62e6, 62e6, 62e6]))
    only = attrs.evolve(view, stages=(prefill,))
    s = check_traceable(only)
    rules = [a.rule for a in s.actions]
    assert "low-mfu-prefill" in rules and "far-from-roofline" in rules
    low = next(a for a in s.actions if a.rule == "low-mfu-prefill")
    far = next(a for a in s.actions if a.rule == "far-from-roofline")
    assert "at most 7.5x on prefill's GPU work" in low.text
    assert far.text.endswith(
        "Expected gain: the same one as stated above for the GPU work of prefill, not an additional one."
    )
    assert "7.5x" not in far.text.split("threshold)")[-1]  # the value of the rule itself, not a second gain


def test_gains_note_only_with_several_gains() -> None:
    one = summ.build(_host_view())
    assert one.gains_note is None
    several = summ.build(full_view())
    assert several.gains_note == advice.GAINS_NOTE
    assert advice.GAINS_NOTE in html_mod.render_summary_md(full_view(), several)


def test_measured_gain_from_the_whatif_beside_the_baseline(whatif_dir: Path) -> None:
    found = advice.find([whatif_dir / "baseline"], None)
    assert found is not None and found.source == str(whatif_dir)
    gain = found.for_rule(summ.HOST_FINDING)[0]
    assert (gain.before_ms, gain.after_ms, gain.speedup) == (525.0, 103.0, pytest.approx(1050 / 206))
    # a whole page: 350 ms of vision and prefill and 50 ms outside them... per pass 1,400 -> 556 ms, over 2 pages
    assert gain.page is not None and gain.page[:2] == (700.0, 278.0)
    s = summ.build(_view(), found)
    (host,) = s.actions
    assert host.text.endswith(MEASURED)
    assert {e.key for e in host.evidence} >= {"whatif:graph:decode:before_ms", "whatif:graph:end_to_end:speedup"}
    assert MEASURED in html_mod.render_summary_md(_view(), s)
    assert str(markupsafe.escape(MEASURED)) in html_mod.render(_view(), found).html  # as jinja escapes it
    assert "No what-if has measured it yet" not in s.top[-1].text
    assert s.top[-1].text.endswith(
        f"Measured in a what-if (a separate pair of runs without and with the change) on {H100}: decode 5.1x faster "
        "(its time per page from 525 to 103 ms), a whole page 2.5x faster (from 700 to 278 ms)."
    )


def test_measurements_are_found_only_for_the_baseline(whatif_dir: Path) -> None:
    assert advice.find([whatif_dir / "graph"], None) is None  # a variant is not the baseline
    assert advice.find([whatif_dir / "baseline", whatif_dir / "graph"], None) is None  # several inputs
    explicit = advice.find([Path("elsewhere.sqlite")], whatif_dir / "whatif.json")
    assert explicit is not None and explicit.for_rule(summ.HOST_FINDING)[0].variant == "graph"
    # the single count rules carry no measurement of their own: the finding they are part of does
    assert explicit.for_rule("launches-per-token") == () and explicit.for_rule("syncs-per-token") == ()


def test_no_matching_variant_no_measured_gain(tmp_path: Path) -> None:
    root = tmp_path / "wi"
    make_run(root / "baseline", decode=[1000.0, 1100.0])
    make_run(root / "sdpa", decode=[1000.0, 1100.0], execution={"attn": "sdpa"})
    make_run(root / "moe", decode=[600.0, 600.0], execution={"moe": "grouped"})
    moe = Variant("moe", (("moe", "grouped"),))
    make_whatif(root, [(Variant("sdpa", (("attn", "sdpa"),)), COMPLETE), (moe, COMPLETE)])
    found = advice.find([root / "baseline"], None)
    assert found is not None
    # the grouped MoE alone, end to end: 1,400 -> 950 ms per pass, i.e. 700 -> 475 per page
    (g,) = found.for_rule("moe-routing")
    assert (g.change, g.before_ms, g.after_ms) == ("the grouped MoE", 700.0, 475.0)
    # no decode variant: the host overhead is measured by the grouped MoE alone (its host syncs gone)
    (sync,) = found.for_rule(summ.HOST_FINDING)
    assert sync.change == "the grouped MoE (no host sync)" and sync.stage == "decode" and sync.variant == "moe"


def test_moe_bound_is_one_over_one_minus_the_share() -> None:
    stage = StageView("decode", range_ns=Stat.of([100e6]), gpu_busy_ns=Stat.of([90e6]), kernels=Stat.of([10]))
    view = ReportView(
        identity=full_view().identity,
        stages=(stage,),
        categories=(("decode", "moe_routing", 40e6), ("decode", "gemm", 60e6)),
    )
    st = summ.Statement(
        "MoE routing ...", (summ.Evidence("stage:decode:share_moe_routing", 0.4, "40.0%"),), "moe-routing"
    )
    (out,) = advice.with_gains(view, (st,))
    # the pass is decode alone, 100 ms (profiled: no unprofiled run): 90 ms of GPU work 1.67x faster saves 36 ms
    assert out.text.endswith(
        "Expected gain, an upper bound from this run (not measured): at most 1.7x on the GPU work of decode if "
        "routing cost nothing (1 / (1 - its share)). That GPU work is 90.0% of a page's time, so a whole page at "
        "most 1.6x faster."
    )
    page = next(e for e in out.evidence if e.key == "stage:decode:pass_moe_routing_bound")
    assert page.value == pytest.approx(100 / 64) and summ.resolve(view, page.key) == pytest.approx(100 / 64)
    bound = next(e for e in out.evidence if e.key == "stage:decode:moe_routing_bound")
    assert bound.value == pytest.approx(1 / 0.6) and summ.resolve(view, bound.key) == pytest.approx(1 / 0.6)


def test_analyze_refuses_a_missing_whatif(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "--whatif", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert exc.value.code == 3
    assert "--whatif" in capsys.readouterr().err
