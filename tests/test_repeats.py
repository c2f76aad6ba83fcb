"""Repeats: per-pass sums, mean/stddev/CV across passes, the 10% flag."""

from __future__ import annotations

import statistics
from pathlib import Path

import polars as pl
import pytest

from dsocr.analyze.repeats import CV_LIMIT, analyze_repeats, pass_keys


def _instances(rows: list[tuple[int, int | None, str, int, int]]) -> pl.DataFrame:
    """rows: (file, repeat, stage, cpu_ns, gpu_busy_ns); other metrics derived."""
    df = pl.DataFrame(
        rows,
        schema={"file": pl.Int64, "repeat": pl.Int64, "stage": pl.Utf8, "cpu_ns": pl.Int64, "gpu_busy_ns": pl.Int64},
        orient="row",
    )
    return df.with_columns(
        pl.col("gpu_busy_ns").alias("gpu_span_ns"),
        pl.col("gpu_busy_ns").alias("kernel_ns"),
        pl.lit(10, dtype=pl.Int64).alias("kernels"),
        pl.lit(10, dtype=pl.Int64).alias("launches"),
        pl.lit(0, dtype=pl.Int64).alias("syncs"),
        pl.lit(0, dtype=pl.Int64).alias("d2h_copies"),
    )


def test_two_passes_in_one_trace() -> None:
    inst = _instances(
        [
            (0, 0, "repeat", 1000, 0),  # the repeat range itself is not a pass's content
            (0, 0, "prefill", 100, 50),
            (0, 0, "decode", 200, 80),
            (0, 0, "decode", 300, 80),  # two decode instances in pass 0: summed
            (0, 1, "repeat", 1000, 0),
            (0, 1, "prefill", 104, 50),
            (0, 1, "decode", 800, 160),
        ]
    )
    rep = analyze_repeats(inst)
    assert rep.passes == 2
    stats = {(r["stage"], r["metric"]): r for r in rep.stats.to_dicts()}
    pre = stats[("prefill", "cpu_ns")]
    assert pre["values"] == [100.0, 104.0]
    assert pre["mean"] == pytest.approx(102.0)
    assert pre["stddev"] == pytest.approx(statistics.stdev([100, 104]))
    assert pre["cv"] == pytest.approx(statistics.stdev([100, 104]) / 102)
    assert pre["flagged"] is False
    dec = stats[("decode", "cpu_ns")]
    assert dec["values"] == [500.0, 800.0]
    assert dec["cv"] == pytest.approx(statistics.stdev([500, 800]) / 650)
    assert dec["cv"] > CV_LIMIT and dec["flagged"] is True
    assert stats[("decode", "gpu_busy_ns")]["flagged"] is False  # 80+80 vs 160: equal, CV 0
    assert stats[("decode", "gpu_busy_ns")]["cv"] == pytest.approx(0.0)
    assert stats[("decode", "kernels")]["values"] == [20.0, 10.0]
    assert stats[("decode", "kernels")]["flagged"] is False  # only CPU and GPU-busy time flag
    assert rep.flagged == ("decode",)
    assert "repeat" not in set(rep.per_pass["stage"])


def test_files_are_passes_without_repeat_ranges() -> None:
    inst = _instances([(0, None, "decode", 100, 10), (1, None, "decode", 100, 10), (2, None, "decode", 130, 10)])
    rep = analyze_repeats(inst)
    assert rep.passes == 3
    row = rep.stats.filter((pl.col("stage") == "decode") & (pl.col("metric") == "cpu_ns")).row(0, named=True)
    assert row["values"] == [100.0, 100.0, 130.0]
    assert row["cv"] == pytest.approx(statistics.stdev([100, 100, 130]) / 110)
    assert row["flagged"] is True


def test_each_files_repeats_are_passes() -> None:
    inst = _instances([(0, 0, "sam", 10, 1), (0, 1, "sam", 10, 1), (1, 0, "sam", 10, 1), (1, 1, "sam", 10, 1)])
    keyed = pass_keys(inst)
    assert sorted(keyed.select("file", "repeat", "pass").rows()) == [(0, 0, 0), (0, 1, 1), (1, 0, 2), (1, 1, 3)]
    assert analyze_repeats(inst).passes == 4


def test_single_pass_has_no_spread() -> None:
    rep = analyze_repeats(_instances([(0, None, "decode", 100, 10)]))
    assert rep.passes == 1
    row = rep.stats.filter(pl.col("metric") == "cpu_ns").row(0, named=True)
    assert row["stddev"] is None and row["cv"] is None and row["flagged"] is False
    assert rep.flagged == ()


def test_cpu_fixture_two_repeats(cpu_sqlite: Path) -> None:
    from dsocr.analyze.pipeline import run_analysis

    a = run_analysis([cpu_sqlite])
    assert a.repeats.passes == 2
    sam = a.repeats.stats.filter((pl.col("stage") == "sam") & (pl.col("metric") == "cpu_ns")).row(0, named=True)
    assert sam["passes"] == 2
    # each pass: 2 pages x sam busy-loop of 8 ms
    assert all(16e6 <= v < 18e6 for v in sam["values"])
    assert sam["cv"] < CV_LIMIT
    steps = a.repeats.per_pass.filter(pl.col("stage") == "decode_step")["instances"].to_list()
    assert steps == [10, 10]


def test_spread_verdict_and_standard_error() -> None:
    """Three passes of prefill 100, 104, 96 (all within 4% of 100) and decode 100, 100, 130 (20/110 off the mean)."""
    inst = _instances(
        [(0, r, "prefill", ns, ns) for r, ns in enumerate((100, 104, 96))]
        + [(0, r, "decode", ns, 50) for r, ns in enumerate((100, 100, 130))]
    )
    stats = {(r["stage"], r["metric"]): r for r in analyze_repeats(inst).stats.to_dicts()}
    pre = stats[("prefill", "cpu_ns")]
    # stddev of 100, 104, 96 = 4; sem = 4 / sqrt(3); the largest single-pass deviation 4 / 100
    assert pre["stddev"] == pytest.approx(4.0)
    assert pre["sem"] == pytest.approx(4.0 / 3**0.5) and pre["sem_rel"] == pytest.approx(4.0 / 3**0.5 / 100)
    assert pre["max_dev"] == pytest.approx(0.04) and pre["within_limit"] is True
    dec = stats[("decode", "cpu_ns")]
    assert dec["max_dev"] == pytest.approx(20 / 110) and dec["within_limit"] is False  # |130 - 110| / 110
    # the mean of 3 passes varies sqrt(3) times less than one pass: sem_rel = cv / sqrt(3)
    assert dec["sem_rel"] == pytest.approx(dec["cv"] / 3**0.5)
    assert stats[("decode", "gpu_busy_ns")]["max_dev"] == 0.0 and stats[("decode", "gpu_busy_ns")]["within_limit"]


def test_single_pass_verdict_is_unknown() -> None:
    row = analyze_repeats(_instances([(0, None, "decode", 100, 10)])).stats.row(0, named=True)
    assert row["sem"] is None and row["within_limit"] is None and row["max_dev"] == 0.0
