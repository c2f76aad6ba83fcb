"""Module attribution (captures made with ``--module-ranges``, NVTX domain ``dsocr.module``).

Each module range's message is its module path (``vision.sam.blocks.3``,
``decoder.layers.5.moe``). A GPU op belongs to every module range enclosing its launch:

- ``gpu_ns`` of a path is the GPU busy time (union of op intervals) of its ops, per pass;
- ``self_ns`` counts each op once, for its innermost module range;
- the attributed share is the GPU busy time of ops inside any module range over the GPU busy
  time of all ops inside the pass (``repeat`` range; the whole trace without one). The rest is
  "unattributed".

Passes are the ``repeat`` ranges (by payload) of dsocr's own domain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs
import polars as pl

from dsocr.analyze.categories import category_expr
from dsocr.analyze.stages import busy_union
from dsocr.analyze.trace import Trace
from dsocr.contract import nvtx_names as nv

if TYPE_CHECKING:  # the analytic model is imported where a workload needs it (start-up time)
    from dsocr.analytic.calibration import Calibration
    from dsocr.analytic.peaks import Peak
    from dsocr.analytic.workload import ModelEstimate


@attrs.frozen
class ModuleTimes:
    """Measured module times of one trace (per repeat; ``repeat`` null when the trace has none)."""

    per_path: pl.DataFrame  #: path, repeat, calls, gpu_ns, self_ns
    share: pl.DataFrame  #: repeat, module_ns, total_ns
    #: path, repeat, category, kernels, kernel_ns: the kernels launched inside the path's ranges by category
    #: (kernel time summed, not a union)
    categories: pl.DataFrame = attrs.field(factory=pl.DataFrame)


def _repeat_of(ranges: pl.LazyFrame, items: pl.LazyFrame) -> pl.LazyFrame:
    """Add ``repeat`` (payload of the dsocr ``repeat`` range enclosing each item's start, same thread)."""
    reps = (
        ranges.filter((pl.col("domain") == nv.DOMAIN) & (pl.col("message") == nv.REPEAT))
        .select(
            "global_tid",
            pl.col("start").alias("_rs"),
            pl.col("end").alias("_re"),
            pl.col("payload").cast(pl.Int64).alias("_rp"),
        )
        .sort("_rs")
    )
    return (
        items.sort("start")
        .join_asof(reps, left_on="start", right_on="_rs", by="global_tid", strategy="backward", check_sortedness=False)
        .with_columns(pl.when(pl.col("_re") >= pl.col("start")).then(pl.col("_rp")).alias("repeat"))
        .drop("_rs", "_re", "_rp")
    )


def module_times(trace: Trace, op_ranges: pl.DataFrame) -> ModuleTimes | None:
    """Measured GPU time per module path and the attributed share; ``None`` without module ranges."""
    mods = (
        trace.ranges.filter(pl.col("domain") == nv.MODULE_DOMAIN)
        .select("range_id", pl.col("message").alias("path"), "depth", "start", "end", "global_tid")
        .collect()
    )
    if mods.is_empty():
        return None
    mods = _repeat_of(trace.ranges, mods.lazy()).collect()
    reps = trace.ranges.filter((pl.col("domain") == nv.DOMAIN) & (pl.col("message") == nv.REPEAT)).select(
        "range_id", pl.col("payload").cast(pl.Int64).alias("repeat")
    )
    has_reps = reps.select(pl.len()).collect().item() > 0
    if has_reps:  # module ranges outside the passes (warm-up) are not measured
        mods = mods.filter(pl.col("repeat").is_not_null())
        if mods.is_empty():
            return None
    ops = trace.gpu_ops.select("op_id", "start", "end")
    pairs = op_ranges.lazy()
    in_mod = pairs.join(mods.lazy().select("range_id", "path", "depth", "repeat"), on="range_id")
    keys = mods.select("path", "repeat").unique().sort("path", "repeat", nulls_last=True).with_row_index("_k")
    incl = (
        in_mod.select("op_id", "path", "repeat")
        .unique()
        .join(keys.lazy(), on=["path", "repeat"], nulls_equal=True)
        .join(ops, on="op_id")
    )
    inner = (
        in_mod.sort("depth", descending=True)
        .unique(subset="op_id", keep="first")
        .join(keys.lazy(), on=["path", "repeat"], nulls_equal=True)
        .join(ops, on="op_id")
    )
    calls = mods.group_by("path", "repeat").agg(pl.len().cast(pl.Int64).alias("calls"))
    per_path = (
        keys.join(busy_union(incl, "_k").collect().rename({"busy_ns": "gpu_ns"}), on="_k", how="left")
        .join(busy_union(inner, "_k").collect().rename({"busy_ns": "self_ns"}), on="_k", how="left")
        .join(calls, on=["path", "repeat"], nulls_equal=True, how="left")
        .select("path", "repeat", "calls", pl.col("gpu_ns").fill_null(0), pl.col("self_ns").fill_null(0))
    )
    # the pass's ops: those inside a repeat range (all ops when the trace has no repeat ranges)
    if has_reps:
        pass_ops = pairs.join(reps, on="range_id").select("op_id", "repeat").unique(subset="op_id")
    else:
        pass_ops = ops.select("op_id", pl.lit(None, dtype=pl.Int64).alias("repeat"))
    attributed = in_mod.select("op_id").unique().with_columns(pl.lit(True).alias("_in"))
    flagged = (
        pass_ops.join(attributed, on="op_id", how="left")
        .join(ops, on="op_id")
        .with_columns(pl.col("repeat").fill_null(-1).alias("_r"))
    )
    total = busy_union(flagged.select("_r", "start", "end"), "_r").collect().rename({"busy_ns": "total_ns"})
    inside = (
        busy_union(flagged.filter(pl.col("_in").fill_null(False)).select("_r", "start", "end"), "_r")
        .collect()
        .rename({"busy_ns": "module_ns"})
    )
    share = (
        total.join(inside, on="_r", how="left")
        .select(
            pl.when(pl.col("_r") >= 0).then(pl.col("_r")).alias("repeat"),
            pl.col("module_ns").fill_null(0),
            "total_ns",
        )
        .sort("repeat", nulls_last=True)
    )
    return ModuleTimes(per_path, share, _categories(trace, incl))


def _categories(trace: Trace, incl: pl.LazyFrame) -> pl.DataFrame:
    """Kernels (count and summed time) by category inside each path's ranges, per repeat."""
    kernels = trace.gpu_ops.filter(pl.col("kind") == "kernel").select("op_id", "name")
    names = kernels.select("name").unique().with_columns(category_expr(pl.col("name")).alias("category"))
    return (
        incl.select("op_id", "path", "repeat", "start", "end")
        .join(kernels, on="op_id")
        .join(names, on="name")
        .group_by("path", "repeat", "category")
        .agg(pl.len().cast(pl.Int64).alias("kernels"), (pl.col("end") - pl.col("start")).sum().alias("kernel_ns"))
        .sort("path", "repeat", "category", nulls_last=True)
        .collect()
    )


@attrs.frozen
class ModuleAttribution:
    """Module times over all traces' passes, beside the analytic prediction."""

    table: pl.DataFrame  #: one row per module path (see :func:`combine`)
    share: float | None  #: GPU busy inside named modules / all GPU busy of the passes
    module_ns: float
    total_ns: float
    passes: int
    #: path, category, kernels, kernel_ns (per pass), share (of the path's kernel time): measured categories
    categories: pl.DataFrame = attrs.field(factory=pl.DataFrame)

    def to_dict(self) -> dict[str, Any]:
        """The ``modules`` section of analysis.json."""
        return {
            "passes": self.passes,
            "attributed_share": self.share,
            "attributed_gpu_ns": self.module_ns,
            "unattributed_gpu_ns": self.total_ns - self.module_ns,
            "total_gpu_ns": self.total_ns,
            "target_share": 0.9,
            "rows": self.table.to_dicts(),
            "categories": self.categories.to_dicts(),
        }


def predicted_modules(
    estimates: Sequence[ModelEstimate], peak: Peak, calibration: Calibration | None = None
) -> pl.DataFrame:
    """The analytic module rows summed over the pages of a pass (path, kind, calls, flops, bytes, predicted)."""
    from dsocr.analytic.metrics import module_metrics

    rows = [attrs.asdict(m) for e in estimates for m in module_metrics(e, peak, calibration=calibration)]
    if not rows:
        return pl.DataFrame(schema={"path": pl.String})
    df = pl.DataFrame(rows, infer_schema_length=None).with_row_index("_order")
    return (
        df.group_by("path")
        .agg(
            pl.col("_order").min(),
            pl.col("kind").first(),
            pl.col("calls").sum().alias("predicted_calls"),
            pl.col("flops").sum(),
            pl.col("bytes").sum(),
            pl.col("predicted_ns").sum(),
            pl.col("predicted_ops_ns").sum(),
            pl.when(pl.col("calibrated_ns").is_not_null().any()).then(pl.col("calibrated_ns").sum()),
            # the same weights in every page; the largest working set of any page
            pl.col("weight_footprint_bytes").max(),
            pl.col("act_peak_bytes").max(),
        )
        .sort("_order")
        .drop("_order")
    )


def combine(
    times: Sequence[ModuleTimes],
    estimates: Sequence[ModelEstimate] = (),
    peak: Peak | None = None,
    calibration: Calibration | None = None,
) -> ModuleAttribution | None:
    """Mean per pass of every path's measured time over all traces, with the analytic prediction per pass."""
    if not times:
        return None
    per = pl.concat(
        [t.per_path.with_columns(pl.lit(i, dtype=pl.Int64).alias("file")) for i, t in enumerate(times)],
        how="vertical_relaxed",
    )
    share = pl.concat(
        [t.share.with_columns(pl.lit(i, dtype=pl.Int64).alias("file")) for i, t in enumerate(times)],
        how="vertical_relaxed",
    )
    passes = share.height
    measured = (
        per.group_by("path")
        .agg(
            (pl.col("calls").sum() / passes).alias("calls"),
            (pl.col("gpu_ns").sum() / passes).alias("measured_ns"),
            (pl.col("self_ns").sum() / passes).alias("self_ns"),
        )
        .with_columns((pl.col("self_ns") / float(share["total_ns"].sum() / passes or 1)).alias("self_share"))
    )
    table = measured
    if estimates and peak is not None:
        pred = predicted_modules(estimates, peak, calibration)
        table = pred.join(measured, on="path", how="full", coalesce=True, maintain_order="left").with_columns(
            pl.when(pl.col("predicted_ops_ns") > 0)
            .then(pl.col("measured_ns") / pl.col("predicted_ops_ns"))
            .alias("ratio"),
            pl.when(pl.col("calibrated_ns") > 0)
            .then(pl.col("measured_ns") / pl.col("calibrated_ns"))
            .alias("ratio_calibrated"),
        )
    module_ns = float(share["module_ns"].sum()) / passes
    total_ns = float(share["total_ns"].sum()) / passes
    cats = [t.categories for t in times if not t.categories.is_empty()]
    categories = (
        pl.concat(cats, how="vertical_relaxed")
        .group_by("path", "category")
        .agg(
            (pl.col("kernels").sum() / passes).alias("kernels"), (pl.col("kernel_ns").sum() / passes).alias("kernel_ns")
        )
        .with_columns((pl.col("kernel_ns") / pl.col("kernel_ns").sum().over("path")).alias("share"))
        .sort(["path", "kernel_ns"], descending=[False, True])
        if cats
        else pl.DataFrame()
    )
    return ModuleAttribution(table, module_ns / total_ns if total_ns else None, module_ns, total_ns, passes, categories)
