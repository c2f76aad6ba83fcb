"""Advice with numbers: each recommendation's expected gain from the run, and the measured gain of a what-if
(found with --whatif or beside the baseline)."""

from __future__ import annotations

import html
from pathlib import Path

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
    "Measured: decode with CUDA graphs with moe=grouped (what-if variant graph): 525 -> 103 ms per page in decode, "
    f"5.1x (significant), on {H100}."
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
    act = next(a for a in s.actions if a.rule == "launches-per-token")
    assert act.text.endswith(
        "Expected gain: at most 10.0x on decode, together with the rest of its host overhead (decode's wall time "
        "over its GPU busy time per step)."
    )
    assert "Measured:" not in " ".join(a.text for a in s.actions)


def test_measured_gain_from_the_whatif_beside_the_baseline(whatif_dir: Path) -> None:
    found = advice.find([whatif_dir / "baseline"], None)
    assert found is not None and found.source == str(whatif_dir)
    gain = found.for_rule("launch-bound")[0]
    assert (gain.before_ms, gain.after_ms, gain.speedup) == (525.0, 103.0, pytest.approx(1050 / 206))
    s = summ.build(_view(), found)
    launch = next(a for a in s.actions if a.rule == "launch-bound")
    assert launch.text.endswith(MEASURED)
    assert {e.key for e in launch.evidence} >= {"whatif:graph:decode:before_ms", "whatif:graph:decode:speedup"}
    assert MEASURED in html_mod.render_summary_md(_view(), s)
    assert html.escape(MEASURED, quote=False) in html_mod.render(_view(), found).html


def test_measurements_are_found_only_for_the_baseline(whatif_dir: Path) -> None:
    assert advice.find([whatif_dir / "graph"], None) is None  # a variant is not the baseline
    assert advice.find([whatif_dir / "baseline", whatif_dir / "graph"], None) is None  # several inputs
    explicit = advice.find([Path("elsewhere.sqlite")], whatif_dir / "whatif.json")
    assert explicit is not None and explicit.for_rule("launches-per-token")[0].variant == "graph"


def test_no_matching_variant_no_measured_gain(tmp_path: Path) -> None:
    root = tmp_path / "wi"
    make_run(root / "baseline", decode=[1000.0, 1100.0])
    make_run(root / "sdpa", decode=[1000.0, 1100.0], execution={"attn": "sdpa"})
    make_run(root / "moe", decode=[600.0, 600.0], execution={"moe": "grouped"})
    moe = Variant("moe", (("moe", "grouped"),))
    make_whatif(root, [(Variant("sdpa", (("attn", "sdpa"),)), COMPLETE), (moe, COMPLETE)])
    found = advice.find([root / "baseline"], None)
    assert found is not None and found.for_rule("launch-bound") == ()  # no decode variant: nothing measured
    # the grouped MoE alone, end to end: 1,400 -> 950 ms per pass, i.e. 700 -> 475 per page
    (g,) = found.for_rule("moe-routing")
    assert (g.change, g.before_ms, g.after_ms) == ("the grouped MoE", 700.0, 475.0)
    (sync,) = found.for_rule("syncs-per-token")
    assert sync.change == "the grouped MoE (no host sync)" and sync.stage == "decode"


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
    assert out.text.endswith(
        "Expected gain from these measurements: at most 1.7x on the GPU work of decode if routing cost nothing "
        "(1 / (1 - its share))."
    )
    bound = next(e for e in out.evidence if e.key == "stage:decode:moe_routing_bound")
    assert bound.value == pytest.approx(1 / 0.6) and summ.resolve(view, bound.key) == pytest.approx(1 / 0.6)


def test_analyze_refuses_a_missing_whatif(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "--whatif", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert exc.value.code == 3
    assert "--whatif" in capsys.readouterr().err
