"""Repeats: every stage metric per pass, then mean, stddev and coefficient of variation.

A pass is one ``repeat`` range of a dsocr trace, or one trace file when several files are
analyzed together (each file's repeats are then passes of their own). A stage whose CPU or
GPU-busy time varies by more than :data:`CV_LIMIT` across passes is flagged.
"""

from __future__ import annotations

from typing import Final

import attrs
import polars as pl

from dsocr.analyze.nesting import summary_columns
from dsocr.contract import nvtx_names as nv

CV_LIMIT: Final = 0.10

#: Metrics compared across passes (sums over the stage's instances in the pass).
METRICS: Final[tuple[str, ...]] = (
    "cpu_ns",
    "gpu_busy_ns",
    "gpu_span_ns",
    "kernel_ns",
    "kernels",
    "launches",
    "syncs",
    "d2h_copies",
)

#: The metrics whose CV decides the flag.
FLAG_METRICS: Final[tuple[str, ...]] = ("cpu_ns", "gpu_busy_ns")


@attrs.frozen
class RepeatTables:
    """Per-pass metrics and their spread (columns in docs/analysis-schema.md)."""

    passes: int  #: number of passes
    per_pass: pl.DataFrame  #: stage, pass, file, repeat, instances, METRICS (and the ``*_excl`` ones of a nested trace)
    stats: pl.DataFrame  #: stage, metric, passes, mean, stddev, cv, min, max, flagged
    flagged: tuple[str, ...]  #: stages whose CPU or GPU-busy CV exceeds CV_LIMIT


def pass_keys(instances: pl.DataFrame) -> pl.DataFrame:
    """Add ``pass`` (0-based) to stage instances that have a ``file`` and a ``repeat`` column.

    With repeat indices the pass is (file, repeat); the ``repeat`` stage itself and ranges
    outside any repeat are not passes' content and are dropped. Without them the file is the
    pass.
    """
    has_repeat = instances.filter(pl.col("repeat").is_not_null() & (pl.col("stage") != nv.REPEAT))
    base = has_repeat if has_repeat.height else instances.with_columns(pl.lit(None, dtype=pl.Int64).alias("repeat"))
    keys = base.select("file", "repeat").unique().sort("file", "repeat", nulls_last=True)
    keys = keys.with_row_index("pass")
    return base.join(keys, on=["file", "repeat"], how="inner", nulls_equal=True)


def analyze_repeats(instances: pl.DataFrame) -> RepeatTables:
    """Per-pass sums of each stage's metrics and their mean/stddev/CV across passes.

    ``instances`` is the concatenated stage instance table of all traces with a ``file``
    column (the trace's index in the order given).
    """
    keyed = pass_keys(instances)
    n_passes = keyed.select(pl.col("pass").n_unique()).item() if keyed.height else 0
    per_pass = (
        keyed.group_by("stage", "pass", "file", "repeat")
        # vision inside prefill: prefill's exclusive metrics too (null for the other stages)
        .agg(pl.len().alias("instances"), *[pl.col(m).sum() for m in METRICS], *summary_columns(keyed))
        .sort("stage", "pass")
    )
    long = per_pass.unpivot(index=["stage", "pass"], on=list(METRICS), variable_name="metric", value_name="value")
    mean = pl.col("value").mean()
    std = pl.col("value").std(ddof=1)
    stats = (
        long.group_by("stage", "metric")
        .agg(
            pl.len().alias("passes"),
            mean.alias("mean"),
            std.alias("stddev"),
            pl.col("value").min().cast(pl.Float64).alias("min"),
            pl.col("value").max().cast(pl.Float64).alias("max"),
            pl.col("value").sort_by("pass").cast(pl.Float64).alias("values"),
        )
        .with_columns(pl.when(pl.col("mean") != 0).then(pl.col("stddev") / pl.col("mean").abs()).alias("cv"))
        .with_columns(
            (pl.col("metric").is_in(list(FLAG_METRICS)) & (pl.col("cv") > CV_LIMIT)).fill_null(False).alias("flagged")
        )
        .select("stage", "metric", "passes", "mean", "stddev", "cv", "min", "max", "flagged", "values")
        .sort("stage", "metric")
    )
    flagged = tuple(sorted(stats.filter(pl.col("flagged"))["stage"].unique().to_list()))
    return RepeatTables(passes=int(n_passes), per_pass=per_pass, stats=stats, flagged=flagged)
