"""Repeats: every stage metric per pass, then its spread over the passes.

A pass is one ``repeat`` range of a dsocr trace, or one trace file when several files are
analyzed together (each file's repeats are then passes of their own). Per metric:
mean, sample stddev and CV (the spread of single passes), the standard error of the mean
(``sem = stddev / sqrt(n)``: the spread of the aggregate), the largest deviation of a single
pass from the mean (``max_dev``) and the verdict ``within_limit``: every pass within
+/-:data:`CV_LIMIT` of the mean (``None`` with one pass: unknown). A stage whose CPU or
GPU-busy CV exceeds :data:`CV_LIMIT` is flagged.
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


#: Columns :func:`spread` adds after ``min``/``max`` (besides ``values``).
SPREAD_EXTRA: Final[tuple[str, ...]] = ("sem", "sem_rel", "max_dev", "within_limit")


def spread(long: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Per ``keys`` group of ``long`` (one ``value`` per ``pass``): ``passes``, ``mean``, ``stddev`` (n-1),
    ``cv``, ``min``, ``max``, ``sem`` (stddev / sqrt(n)), ``sem_rel`` (sem / |mean|), ``max_dev``
    (max |value - mean| / |mean|), ``within_limit`` (max_dev <= CV_LIMIT; null with one pass or a zero
    mean) and ``values`` (in pass order). Null values (a pass without the metric) are left out."""
    # in pass order: a float sum's rounding depends on the order, which a group-by does not fix
    value = pl.col("value").cast(pl.Float64).sort_by("pass")
    mean = pl.col("mean")
    return (
        long.filter(pl.col("value").is_not_null())
        .group_by(keys, maintain_order=True)
        .agg(
            pl.len().alias("passes"),
            value.mean().alias("mean"),
            value.std(ddof=1).alias("stddev"),
            value.min().alias("min"),
            value.max().alias("max"),
            value.alias("values"),
        )
        .with_columns(
            pl.when(mean != 0).then(pl.col("stddev") / mean.abs()).alias("cv"),
            (pl.col("stddev") / pl.col("passes").cast(pl.Float64).sqrt()).alias("sem"),
            pl.when(mean != 0)
            .then(pl.max_horizontal((pl.col("max") - mean).abs(), (pl.col("min") - mean).abs()) / mean.abs())
            .alias("max_dev"),
        )
        .with_columns(
            pl.when(mean != 0).then(pl.col("sem") / mean.abs()).alias("sem_rel"),
            pl.when((pl.col("passes") > 1) & pl.col("max_dev").is_not_null())
            .then(pl.col("max_dev") <= CV_LIMIT)
            .alias("within_limit"),
        )
        .select(*keys, "passes", "mean", "stddev", "cv", "min", "max", *SPREAD_EXTRA, "values")
    )


@attrs.frozen
class RepeatTables:
    """Per-pass metrics and their spread (columns in docs/analysis-schema.md)."""

    passes: int  #: number of passes
    per_pass: pl.DataFrame  #: stage, pass, file, repeat, instances, METRICS (and the ``*_excl`` ones of a nested trace)
    stats: pl.DataFrame  #: stage, metric, passes, mean, stddev, cv, min, max, flagged, SPREAD_EXTRA, values
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
    stats = (
        spread(long, ["stage", "metric"])
        .with_columns(
            (pl.col("metric").is_in(list(FLAG_METRICS)) & (pl.col("cv") > CV_LIMIT)).fill_null(False).alias("flagged")
        )
        .select("stage", "metric", "passes", "mean", "stddev", "cv", "min", "max", "flagged", *SPREAD_EXTRA, "values")
        .sort("stage", "metric")
    )
    flagged = tuple(sorted(stats.filter(pl.col("flagged"))["stage"].unique().to_list()))
    return RepeatTables(passes=int(n_passes), per_pass=per_pass, stats=stats, flagged=flagged)
