"""The repeat verdict and spreads (issue 12, item 10) on the run directory of test_analyze_analytic.

Two repeats with known times (ns): prefill GPU busy 1000 and 3000; clip 100 and 100; the
model stages (vision 400+100+10 / 600+100+30, prefill, decode 3 x 50 / 3 x 70) add to 1,660
and 3,940. Per-pass MFU = FLOPs of a pass / (peak x that pass's time).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dsocr.analyze.pipeline import run_analysis
from dsocr.cli import main
from dsocr.report.markdown import markdown_text
from test_analyze_analytic import H100_TFLOPS, make_run_dir

PEAK = H100_TFLOPS * 1e12


def _spread(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["stage"], r["metric"]): r for r in doc["analytic"]["mfu_spread"]}


def test_mfu_spread_per_pass(tmp_path: Path) -> None:
    run, _ = make_run_dir(tmp_path)
    doc = run_analysis([run]).to_dict()
    flops = {r["stage"]: r["flops"] for r in doc["analytic"]["stage_metrics"]}
    got = _spread(doc)
    pre = got[("prefill", "mfu_busy")]
    a, b = flops["prefill"] / (PEAK * 1000e-9), flops["prefill"] / (PEAK * 3000e-9)
    assert pre["values"] == pytest.approx([a, b]) and pre["mean"] == pytest.approx((a + b) / 2)
    # 3 units and 1 unit: mean 2, each pass 50% off; stddev sqrt(2), CV sqrt(2)/2, s.e. sqrt(2)/sqrt(2) = 1 unit
    assert pre["max_dev"] == pytest.approx(0.5) and pre["within_limit"] is False
    assert pre["cv"] == pytest.approx(2**0.5 / 2) and pre["sem_rel"] == pytest.approx(0.5)
    clip = got[("clip", "mfu_busy")]
    assert clip["max_dev"] == 0.0 and clip["within_limit"] is True and clip["sem"] == 0.0
    model = got[("model", "mfu_busy")]
    assert model["values"] == pytest.approx([flops["model"] / (PEAK * 1660e-9), flops["model"] / (PEAK * 3940e-9)])
    assert {m for _, m in got} == {"mfu_busy", "mfu_wall"} and got[("decode", "mfu_wall")]["passes"] == 2
    # the stage times' own verdicts (repeats.stats): prefill busy 1000 / 3000 -> 50% off; clip equal
    stats = {(r["stage"], r["metric"]): r for r in doc["repeats"]["stats"]}
    assert stats[("prefill", "gpu_busy_ns")]["max_dev"] == pytest.approx(0.5)
    assert stats[("prefill", "gpu_busy_ns")]["sem"] == pytest.approx(1000.0)  # stdev(1000, 3000) / sqrt(2)
    assert stats[("clip", "gpu_busy_ns")]["within_limit"] is True


def test_reports_show_verdict_and_standard_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = make_run_dir(tmp_path)
    md = markdown_text(run_analysis([run]))
    head = "| stage | metric | passes | mean | stddev (1 pass) | CV (1 pass) | largest deviation (1 pass) |"
    assert head in md
    # prefill GPU busy: mean 2,000 ns = 0.002 ms, stddev 1,414 ns, CV 70.7%, 50% off, s.e. 1,000 ns = 50%
    assert "| prefill | GPU busy ms | 2 | 0.002 | 0.001 | 70.7% | 50.0% | 0.001 | 50.0% | NO |" in md
    assert "| clip | GPU busy ms | 2 | 0.000 | 0.000 | 0.0% | 0.0% | 0.000 | 0.0% | yes |" in md
    assert "| prefill | MFU busy | 2 |" in md and "| model | MFU busy | 2 |" in md
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(run), "--out", str(out), "-q"])
    assert exc.value.code == 0, capsys.readouterr().err
    html = (out / "report.html").read_text()
    assert "<th>within ±10%</th>" in html and "(CV 70.7%, s.e. 50.0%)" in html
    summary = (out / "summary.md").read_text()
    (line,) = [x for x in summary.splitlines() if "stray" in x]
    assert (
        line.startswith("- Single passes stray from the mean of the passes beyond the ±10.0% threshold in:")
        and "prefill (" in line
    )
    con = sqlite3.connect(out / "results.sqlite")
    rows = con.execute("select within_limit from mfu_spread where stage = 'prefill' and metric = 'mfu_busy'")
    assert rows.fetchall() == [(0,)]
    assert json.loads((out / "analysis.json").read_text())["repeats"]["stats"][0].keys() >= {
        "sem",
        "sem_rel",
        "max_dev",
        "within_limit",
    }


def test_mfu_spread_uses_exclusive_prefill_times() -> None:
    """Vision inside prefill (the checkpoint's own code): per-pass tables carry prefill's exclusive times
    (``*_excl``); the analytic prefill excludes vision, so its per-pass MFU divides by those."""
    import polars as pl

    from dsocr.analytic.metrics import stage_metrics
    from dsocr.analytic.peaks import resolve_peak
    from dsocr.analytic.workload import Workload, estimate
    from dsocr.analyze.analytic_section import mfu_spread, per_pass_utilization

    per_pass = pl.DataFrame(
        {
            "stage": ["vision", "vision", "prefill", "prefill"],
            "pass": [0, 1, 0, 1],
            "cpu_ns": [100, 100, 400, 400],
            "gpu_busy_ns": [50, 50, 300, 300],
            "cpu_ns_excl": [None, None, 300, 300],
            "gpu_busy_ns_excl": [None, None, 250, 200],
        }
    )
    peak = resolve_peak(None, tflops=1.0, tbps=1.0)
    rows = stage_metrics([estimate(Workload(crop_grid=(2, 2)))], {}, peak)
    got = {(r["stage"], r["metric"]): r for r in mfu_spread(per_pass_utilization(per_pass, rows, peak)).to_dicts()}
    flops = next(r.flops for r in rows if r.stage == "prefill")
    assert got[("prefill", "mfu_busy")]["values"] == pytest.approx([flops / (1e12 * 250e-9), flops / (1e12 * 200e-9)])
    assert got[("prefill", "mfu_wall")]["values"] == pytest.approx([flops / (1e12 * 300e-9)] * 2)
