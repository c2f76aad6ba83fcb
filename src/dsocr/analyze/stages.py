"""Stages: which NVTX ranges are stages, and what each stage instance did on CPU and GPU.

A trace with ranges in dsocr's own domain (:mod:`dsocr.contract.nvtx_names`) has the stages
``repeat > page > vision > sam|clip|projector, prefill, decode > decode_step``, with repeat,
page and step indices from the payloads. In a foreign trace the stages are the outermost
(depth 0) ranges grouped by name, plus any range, at any depth, named like one of dsocr's
stages (``prefill``, ``decode``, ``decode_step``, ...). Operator ranges (``aten::...``) are
never stages.

Where vision ran inside prefill (the checkpoint's own code), prefill instances also get exclusive
columns (``cpu_ns_excl``, ...: :mod:`dsocr.analyze.nesting`).

Everything here works on the attribution long frames (every GPU op and every API call with
every range enclosing its launch), so an op in a ``decode_step`` counts for the step and for
its ``decode``.
"""

from __future__ import annotations

import functools
from typing import Final

import attrs
import polars as pl

from dsocr.analyze import schema as S
from dsocr.analyze.categories import category_expr
from dsocr.analyze.nesting import IDLE_EXCL, Nesting, excl, summary_columns, with_exclusive
from dsocr.analyze.operators import innermost_op_range, innermost_op_range_via_parents, is_op_range, op_range_names
from dsocr.analyze.sweep import as_int
from dsocr.analyze.trace import Trace
from dsocr.contract import nvtx_names as nv

DSOCR: Final = "dsocr"
FOREIGN: Final = "foreign"

#: Names recognised as stages in any trace, at any depth.
KNOWN_STAGES: Final = frozenset(nv.STAGES)

#: memcpy copyKind values (ENUM_CUDA_MEMCPY_OPER).
COPY_HTOD: Final = 1
COPY_DTOH: Final = 2
COPY_DTOD: Final = 8
COPY_PTOP: Final = 10

#: GPU operation kinds (``gpu_ops.kind``) as a small enum.
OP_KINDS: Final = pl.Enum(S.OP_KINDS)

#: Per-instance count/byte columns that add up over instances (and over passes).
SUM_METRICS: Final[tuple[str, ...]] = (
    "cpu_ns",
    "gpu_busy_ns",
    "gpu_span_ns",
    "kernel_ns",
    "gpu_ops",
    "kernels",
    "memcpys",
    "memsets",
    "api_calls",
    "launches",
    "sync_calls",
    "sync_records",
    "syncs",
    "d2h_copies",
    "h2d_bytes",
    "d2h_bytes",
    "d2d_bytes",
    "p2p_bytes",
    "memset_bytes",
)

TOP_N: Final = 10

#: Up to this many (op, range) plus (API call, range) pairs, the stage metrics of all nesting
#: depths are computed in one pass (more take one pass per depth, holding less at a time).
ONE_PASS_PAIRS: Final = 2_000_000


@attrs.frozen
class StageTables:
    """Stage results of one trace (polars frames; columns in docs/analysis-schema.md)."""

    mode: str  #: ``dsocr`` (own NVTX contract) or ``foreign``
    instances: pl.DataFrame  #: one row per stage range instance
    categories: pl.DataFrame  #: kernel time by category per stage name
    top_kernels: pl.DataFrame  #: the top kernels per stage name
    operators: pl.DataFrame  #: top aten operators per stage name (empty without emit_nvtx)
    #: where vision sits relative to prefill (None: no vision or no prefill; :mod:`dsocr.analyze.nesting`)
    nesting: Nesting | None = None
    cut_short: int = 0  #: stage instances left out: in a pass whose repeat range never closed

    @functools.cached_property
    def summary(self) -> pl.DataFrame:
        """One row per stage name (:func:`summarize`; computed when first asked for: ``dsocr analyze``
        summarizes the instances of all its files together instead)."""
        return summarize(self.instances)


def _pairs(lf: pl.LazyFrame) -> int:
    """The number of rows of an attribution pair frame (cheap for an in-memory frame)."""
    return int(lf.select(pl.len()).collect().item())


def _empty_ids(col: str) -> pl.LazyFrame:
    return pl.LazyFrame(schema={col: pl.UInt32, "range_id": pl.UInt32})


def select_stages(ranges: pl.LazyFrame) -> tuple[pl.DataFrame, str]:
    """Pick the stage ranges of a trace; return them and the mode (``dsocr`` or ``foreign``).

    Columns: ``range_id``, ``stage``, ``name``, ``start``, ``end``, ``global_tid``, ``depth``,
    ``payload``.
    """
    cols = ("range_id", "name", "start", "end", "global_tid", "depth", "payload")
    own = (
        ranges.filter((pl.col("domain") == nv.DOMAIN) & pl.col("message").is_in(list(nv.STAGES)))
        .select(pl.col("message").alias("stage"), *cols)
        .collect()
    )
    if own.height:
        return own, DSOCR
    not_op = ~is_op_range(pl.col("message"))
    known = pl.col("message").is_in(list(KNOWN_STAGES))
    foreign = (
        ranges.filter(not_op & ((pl.col("depth") == 0) | known))
        .select(pl.when(known).then(pl.col("message")).otherwise(pl.col("name")).alias("stage"), *cols)
        .collect()
    )
    return foreign, FOREIGN


def _enclosing(child: pl.LazyFrame, parents: pl.LazyFrame, out: str, value: str) -> pl.LazyFrame:
    """Add column ``out``: ``value`` of the parent range enclosing each child (same thread).

    Parents of one name never overlap on a thread, so the last parent starting at or before
    the child's start is the only candidate; it encloses the child if it ends after it.
    """
    par = parents.select(
        pl.col("global_tid"),
        pl.col("start").alias("_p_start"),
        pl.col("end").alias("_p_end"),
        pl.col(value).alias("_p_value"),
    ).sort("_p_start")
    return (
        child.sort("start")
        .join_asof(
            par, left_on="start", right_on="_p_start", by="global_tid", strategy="backward", check_sortedness=False
        )
        .with_columns(pl.when(pl.col("_p_end") >= pl.col("end")).then(pl.col("_p_value")).otherwise(None).alias(out))
        .drop("_p_start", "_p_end", "_p_value")
    )


def _indices(stages: pl.DataFrame, mode: str) -> pl.LazyFrame:
    """Add ``instance`` (0-based by start within the stage), ``repeat``, ``page``, ``step``."""
    lf = stages.lazy().with_columns(
        pl.col("start").rank("ordinal").over("stage").sub(1).cast(pl.UInt32).alias("instance"),
        pl.lit(None, dtype=pl.UInt32).alias("_ord"),
    )
    if mode == DSOCR:

        def index_of(stage: str) -> pl.LazyFrame:
            sel = stages.lazy().filter(pl.col("stage") == stage)
            return sel.with_columns(
                pl.col("payload").fill_null(pl.col("start").rank("ordinal").sub(1).cast(pl.Int64)).alias("_idx")
            )

        lf = _enclosing(lf, index_of(nv.REPEAT), "repeat", "_idx")
        lf = _enclosing(lf, index_of(nv.PAGE), "page", "_idx")
        step = pl.when(pl.col("stage") == nv.DECODE_STEP).then(pl.col("payload")).otherwise(None)
        lf = lf.with_columns(step.alias("step"))
    else:
        lf = lf.with_columns(
            pl.lit(None, dtype=pl.Int64).alias("repeat"),
            pl.lit(None, dtype=pl.Int64).alias("page"),
            pl.when(pl.col("stage") == nv.DECODE_STEP).then(pl.col("payload")).otherwise(None).alias("step"),
        )
    # number of decode_step ranges inside each decode range (per-token numbers)
    steps = stages.lazy().filter(pl.col("stage") == nv.DECODE_STEP).select("start", "end", "global_tid")
    decodes = stages.lazy().filter(pl.col("stage") == nv.DECODE).select("range_id", "start", "end", "global_tid")
    counted = (
        _enclosing(steps, decodes, "_decode_id", "range_id")
        .group_by("_decode_id")
        .agg(pl.len().cast(pl.Int64).alias("decode_steps"))
    )
    lf = lf.join(counted, left_on="range_id", right_on="_decode_id", how="left")
    return lf.drop("_ord").sort("start")


#: Intervals per chunk of keys in :func:`busy_union` (one key's intervals are never split).
BUSY_CHUNK_ROWS: Final = 1 << 19


def busy_union(ops: pl.LazyFrame, key: str) -> pl.LazyFrame:
    """Per integer ``key``: the length of the union of the ``[start, end)`` intervals (``busy_ns``).

    One sort per chunk of keys instead of per-group windows: each key's intervals are shifted into a
    time band of their own (``rank(key) * span``), so a running maximum of the ends over the whole
    sorted chunk never mixes keys. An interval adds the part of it beyond everything before it:
    ``max(0, end - max(start, running max end before it))``. The keys are taken in chunks of about
    :data:`BUSY_CHUNK_ROWS` intervals, so that the sort's copies stay small on big traces.
    """
    s = ops.select(key, "start", "end").collect()
    if s.height == 0:
        return pl.LazyFrame(schema={key: s.schema[key], "busy_ns": pl.Int64})
    if s.height <= BUSY_CHUNK_ROWS:
        return _busy_of(s, key).lazy()
    counts = s.group_by(key).len().sort(key)
    chunk = ((counts["len"].cum_sum() - 1) // BUSY_CHUNK_ROWS).alias("_chunk")
    keys = counts.select(key, chunk).partition_by("_chunk", as_dict=False, maintain_order=True)
    return pl.concat([_busy_of(s.filter(pl.col(key).is_in(part[key].implode())), key) for part in keys]).lazy()


def _busy_of(s: pl.DataFrame, key: str) -> pl.DataFrame:
    """:func:`busy_union` of the intervals of ``s`` (``key``, ``start``, ``end``; not empty), in one sort."""
    t0 = int(s["start"].min())  # type: ignore[arg-type]
    span = int(s["end"].max()) - t0 + 1  # type: ignore[arg-type]
    band = pl.col(key).cast(pl.Int64)
    if (int(s[key].max()) + 1) * span >= 1 << 62:  # type: ignore[arg-type]
        band = pl.col(key).rank("dense").cast(pl.Int64)
    # eager steps: on frames of this size one plan per step costs less than one lazy plan
    shifted = s.select(
        key,
        (band * span + (pl.col("start") - t0)).alias("_s"),
        (band * span + (pl.col("end") - t0)).alias("_e"),
    ).sort("_s")
    del s
    before = pl.col("_e").cum_max().shift(1)
    new_part = (pl.col("_e") - pl.max_horizontal("_s", before)).clip(lower_bound=0)
    return (
        shifted.select(key, new_part.alias("_new"))
        .lazy()
        .group_by(key)
        .agg(pl.col("_new").sum().cast(pl.Int64).alias("busy_ns"))
        .collect()
    )


def _kernel_categories(kern: pl.LazyFrame) -> pl.LazyFrame:
    """The kernel names of ``kern`` with their category (computed once per unique name)."""
    names = kern.select("name").unique()
    return names.with_columns(category_expr(pl.col("name")).alias("category"))


def analyze_stages(
    trace: Trace,
    op_ranges: pl.LazyFrame | None,
    api_ranges: pl.LazyFrame | None,
    top_n: int | None = TOP_N,
    op_innermost: pl.LazyFrame | None = None,
) -> StageTables:
    """Compute the stage tables of one trace.

    ``op_ranges`` (``op_id``, ``range_id``) and ``api_ranges`` (``api_id``, ``range_id``) are
    the attribution long frames: every range enclosing each GPU op's launch and each API
    call. ``None`` means no CUDA activity. ``op_innermost`` (``op_id``, ``range_id``: each
    op's deepest enclosing range), when given, makes operator attribution cheaper.
    ``top_n=None`` keeps every kernel and operator.
    """
    stages, mode = select_stages(trace.ranges)
    inst = _indices(stages, mode).collect()
    cut_short = 0
    if trace.meta.open_ranges.count and mode == DSOCR and inst["repeat"].is_not_null().any():
        # a pass cut short (its repeat never closed, left out by the loader): its stages are no pass's
        cut = inst["repeat"].is_null() & (inst["stage"] != nv.REPEAT)
        cut_short = int(cut.sum())
        inst = inst.filter(~cut)
    ids = inst.lazy().select("range_id", "stage")
    op_r = op_ranges if op_ranges is not None else _empty_ids("op_id")
    api_r = api_ranges if api_ranges is not None else _empty_ids("api_id")
    # one nesting depth of stage ranges at a time: a call or op is in at most one stage range of
    # a depth per thread, so each pass holds about one row per call or op
    # (a small trace takes all depths in one pass: fewer, larger queries)
    small = _pairs(op_r) + _pairs(api_r) <= ONE_PASS_PAIRS
    # each pass keeps the pairs of its stage ranges (an is_in filter: cheaper than a semi join)
    levels = (
        [inst["range_id"].implode()]
        if small
        else [
            inst.filter(pl.col("depth") == d)["range_id"].implode()
            for d in (sorted(inst["depth"].unique().to_list()) or [0])
        ]
    )

    api_kind = trace.api.select(
        "api_id",
        pl.col("category").is_in(["launch", "graph"]).alias("_launch"),
        (pl.col("category") == "sync").alias("_sync"),
    ).collect()
    sync_ids = trace.syncs.select("api_id").filter(pl.col("api_id").is_not_null()).collect()
    api_parts: list[list[pl.DataFrame]] = [[], [], []]
    for level in levels:
        api = take_by_id(api_r.filter(pl.col("range_id").is_in(level)), "api_id", api_kind.lazy()).lazy()
        for i, part in enumerate(_api_metrics(api, sync_ids)):
            api_parts[i].append(part)
        del api
    del api_kind, api_r, api_ranges

    # (op, stage range) rows with the op's columns; kernel names are long strings, so ops carry
    # the integer ``name_id`` and the names are looked up once per distinct kernel at the end
    name_id = _name_id(trace)
    op_cols = trace.gpu_ops.select("op_id", pl.col("kind").cast(OP_KINDS), "start", "end", name_id).collect()
    # copies and memsets are few: their bytes come from a small frame of their own
    copies = trace.gpu_ops.filter(pl.col("kind") != "kernel").select("op_id", "kind", "bytes", "copy_kind").collect()
    inner = (
        innermost_op_range_via_parents(op_innermost, trace.ranges)
        if op_innermost is not None
        else innermost_op_range(op_r, trace.ranges)
    ).collect()
    op_parts: list[list[pl.DataFrame]] = [[], [], [], [], []]
    for level in levels:
        op_rows = take_by_id(op_r.filter(pl.col("range_id").is_in(level)), "op_id", op_cols.lazy())
        for i, part in enumerate(_op_metrics(op_rows, copies, inner)):
            op_parts[i].append(part)
        del op_rows
    del op_cols, copies, inner
    op_metrics, copy_metrics, busy, per_name, per_call = (pl.concat(p, how="vertical_relaxed") for p in op_parts)

    lf = inst.lazy()
    for part in (op_metrics, copy_metrics, busy, *(pl.concat(p, how="vertical_relaxed") for p in api_parts)):
        lf = lf.join(part.lazy(), on="range_id", how="left")
    lf = lf.with_columns(
        (pl.col("end") - pl.col("start")).alias("cpu_ns"),
        *[pl.col(c).fill_null(0).cast(pl.Int64) for c in SUM_METRICS if c != "cpu_ns"],
    ).with_columns(
        _idle(pl.col("gpu_busy_ns"), pl.col("cpu_ns")).alias("gpu_idle_frac")
        if op_ranges is not None
        else pl.lit(None, dtype=pl.Float64).alias("gpu_idle_frac")
    )
    instances = (
        lf.select(
            "range_id",
            "stage",
            "name",
            "instance",
            "repeat",
            "page",
            "step",
            "start",
            "end",
            "global_tid",
            "depth",
            *SUM_METRICS,
            "gpu_idle_frac",
            "decode_steps",
        )
        .sort("start", "depth")
        .collect()
    )
    # vision inside prefill (the checkpoint's own code): prefill's exclusive columns
    instances, nesting = with_exclusive(instances, _idle if op_ranges is not None else None)

    kern = _named(
        trace,
        per_name.lazy()
        .join(ids, on="range_id", how="inner")
        .group_by("stage", "name_id")
        .agg(pl.col("instances").sum(), pl.col("total_ns").sum(), pl.col("op_id").min())
        .collect(),
        name_id,
    )
    # collected once: the categories and the top kernels both read it
    kern = kern.join(_kernel_categories(kern), on="name", how="left").collect().lazy()
    return StageTables(
        mode=mode,
        instances=instances,
        categories=_category_table(kern),
        top_kernels=_top_kernels(kern, top_n),
        operators=_top_operators(per_call, trace.ranges, ids, top_n),
        nesting=nesting,
        cut_short=cut_short,
    )


def _api_metrics(api: pl.LazyFrame, sync_ids: pl.DataFrame) -> list[pl.DataFrame]:
    """Per stage range: API call counts, sync records and distinct syncing calls.

    ``api``: (``api_id``, ``range_id``, ``_launch``, ``_sync``) rows; ``sync_ids``: the
    ``api_id`` of every synchronization record.
    """
    counts = api.group_by("range_id").agg(
        pl.len().alias("api_calls"),
        pl.col("_launch").sum().alias("launches"),
        pl.col("_sync").sum().alias("sync_calls"),
    )
    sync_api = api.filter(pl.col("_sync")).select("range_id", "api_id")
    sync_rec = sync_ids.lazy().join(api.select("api_id", "range_id"), on="api_id", how="inner")
    records = sync_rec.group_by("range_id").agg(pl.len().alias("sync_records"))
    syncs = (
        pl.concat([sync_api, sync_rec.select("range_id", "api_id")])
        .group_by("range_id")
        .agg(pl.col("api_id").n_unique().alias("syncs"))
    )
    return pl.collect_all([counts, records, syncs])


def _op_metrics(op_rows: pl.DataFrame, copies: pl.DataFrame, inner: pl.DataFrame) -> list[pl.DataFrame]:
    """Per stage range from its (op, range) rows: op counts and times, copy bytes, GPU busy
    time, per (range, kernel name id) and per (range, innermost operator range) partial sums.

    ``copies``: ``op_id``, ``kind``, ``bytes``, ``copy_kind`` of the copies and memsets;
    ``inner``: ``op_id``, ``op_range_id`` (each op's innermost operator range).
    """
    ops = op_rows.lazy().with_columns((pl.col("end") - pl.col("start")).alias("dur"))
    is_k = pl.col("kind") == "kernel"
    is_c = pl.col("kind") == "memcpy"
    op_metrics = ops.group_by("range_id").agg(
        pl.len().alias("gpu_ops"),
        is_k.sum().alias("kernels"),
        is_c.sum().alias("memcpys"),
        (pl.col("kind") == "memset").sum().alias("memsets"),
        pl.col("dur").filter(is_k).sum().alias("kernel_ns"),
        (pl.col("end").max() - pl.col("start").min()).alias("gpu_span_ns"),
    )
    is_copy = pl.col("kind") == "memcpy"

    def copy_bytes(kind: int) -> pl.Expr:
        return pl.col("bytes").filter(is_copy & (pl.col("copy_kind") == kind)).sum()

    copy_metrics = (
        ops.select("op_id", "range_id")
        .join(copies.lazy(), on="op_id")
        .group_by("range_id")
        .agg(
            (is_copy & (pl.col("copy_kind") == COPY_DTOH)).sum().alias("d2h_copies"),
            copy_bytes(COPY_HTOD).alias("h2d_bytes"),
            copy_bytes(COPY_DTOH).alias("d2h_bytes"),
            copy_bytes(COPY_DTOD).alias("d2d_bytes"),
            copy_bytes(COPY_PTOP).alias("p2p_bytes"),
            pl.col("bytes").filter(pl.col("kind") == "memset").sum().alias("memset_bytes"),
        )
    )
    # kernels, and whole-graph executions (``--cuda-graph-trace graph``) as rows ``CUDA graph <id>``
    per_name = (
        ops.filter(is_k | (pl.col("kind") == "graph"))
        .group_by("range_id", "name_id")
        .agg(pl.len().alias("instances"), pl.col("dur").sum().alias("total_ns"), pl.col("op_id").min())
    )
    per_call = (
        ops.select("op_id", "range_id", "kind", "dur")
        .join(inner.lazy(), on="op_id", how="inner")
        .group_by("range_id", "op_range_id")
        .agg(
            (pl.col("kind") == "kernel").sum().alias("kernels"),
            pl.len().alias("gpu_ops"),
            pl.col("dur").sum().alias("gpu_ns"),
        )
    )
    metrics, copied, per_name_df, per_call_df = pl.collect_all([op_metrics, copy_metrics, per_name, per_call])
    busy = busy_union(ops, "range_id").rename({"busy_ns": "gpu_busy_ns"}).collect()
    return [metrics, copied, busy, per_name_df, per_call_df]


def _name_id(trace: Trace) -> pl.Expr:
    """``gpu_ops.name_id`` (as i32 when every id fits); a trace built without it (tests) numbers its names."""
    if "name_id" not in trace.gpu_ops.collect_schema():
        return pl.col("name").hash().alias("name_id")  # the same id for a name in any subset of rows
    bounds = trace.gpu_ops.select(pl.col("name_id").min().alias("lo"), pl.col("name_id").max().alias("hi")).collect()
    lo, hi = bounds.row(0)
    if lo is not None and hi is not None and lo >= -(1 << 31) and hi < (1 << 31):
        return pl.col("name_id").cast(pl.Int32)
    return pl.col("name_id")


def _named(trace: Trace, kern: pl.DataFrame, name_id: pl.Expr) -> pl.LazyFrame:
    """``kern`` (``stage``, ``name_id``, counts, one ``op_id`` per name) with the kernel ``name``.

    Only the rows of one op per distinct name are looked up; ids naming the same text merge.
    """
    names = (
        trace.gpu_ops.filter(pl.col("op_id").is_in(kern["op_id"].unique().implode()))
        .select(name_id, "name")
        .unique("name_id")
    )
    return (
        kern.lazy()
        .join(names, on="name_id", how="left")
        .group_by("stage", "name")
        .agg(pl.col("instances").sum(), pl.col("total_ns").sum())
        .collect()
        .lazy()
    )


def take_by_id(pairs: pl.LazyFrame, key: str, source: pl.LazyFrame) -> pl.DataFrame:
    """``pairs`` with the columns of ``source`` for each row's ``key`` (an inner join).

    The loader numbers ops and API calls by row, so when ``source[key]`` is exactly
    ``0..n-1`` the rows are gathered by position instead of hash-joined.
    """
    p, src = pl.collect_all([pairs, source])
    ids = src[key]
    dense = src.height > 0 and ids.null_count() == 0 and ids[0] == 0 and ids[-1] == src.height - 1
    if dense and ids.is_sorted() and ids.n_unique() == src.height:
        wanted = p[key]
        if wanted.null_count() or as_int(wanted.max() or 0) >= src.height:  # else no copy of the pairs
            p = p.filter(pl.col(key).is_not_null() & (pl.col(key) < src.height))
        return p.hstack(src.drop(key)[p[key]])
    return p.join(src, on=key, how="inner")


def _idle(busy: pl.Expr, cpu: pl.Expr) -> pl.Expr:
    """GPU idle fraction of a range: ``1 - busy / range time``, clipped to [0, 1]."""
    return pl.when(cpu > 0).then((1.0 - busy / cpu).clip(0.0, 1.0)).otherwise(None)


def summarize(instances: pl.DataFrame) -> pl.DataFrame:
    """Aggregate the instance table per stage name (stage order of the contract first)."""
    order = {s: i for i, s in enumerate(nv.STAGES)}
    per_step = {
        "launches_per_step": "launches",
        "syncs_per_step": "syncs",
        "d2h_copies_per_step": "d2h_copies",
        "kernels_per_step": "kernels",
        "cpu_ns_per_step": "cpu_ns",
        "gpu_busy_ns_per_step": "gpu_busy_ns",
    }
    steps = pl.col("decode_steps").sum()
    exclusive = summary_columns(instances)  # vision inside prefill: prefill's exclusive columns
    idle_excl = _idle(pl.col(excl("gpu_busy_ns")), pl.col(excl("cpu_ns")))
    out = (
        instances.lazy()
        .group_by("stage")
        .agg(
            pl.len().alias("instances"),
            pl.col("start").min().alias("first_start"),
            *[pl.col(c).sum() for c in SUM_METRICS],
            pl.col("cpu_ns").mean().alias("cpu_ns_mean"),
            pl.col("gpu_busy_ns").mean().alias("gpu_busy_ns_mean"),
            pl.col("gpu_idle_frac").is_not_null().any().alias("_has_gpu"),
            steps.alias("decode_steps"),
            *[
                pl.when(steps > 0).then(pl.col(src).filter(pl.col("decode_steps") > 0).sum() / steps).alias(dst)
                for dst, src in per_step.items()
            ],
            *exclusive,
        )
        .with_columns(
            pl.when(pl.col("_has_gpu"))
            .then(_idle(pl.col("gpu_busy_ns"), pl.col("cpu_ns")))
            .otherwise(None)
            .alias("gpu_idle_frac"),
            pl.col("stage").replace_strict(order, default=len(order), return_dtype=pl.Int64).alias("_order"),
            *([pl.when(pl.col("_has_gpu")).then(idle_excl).alias(IDLE_EXCL)] if exclusive else []),
        )
        .sort("_order", "first_start")
        .drop("_order", "first_start", "_has_gpu")
        .collect()
    )
    return out


def _category_table(kern: pl.LazyFrame) -> pl.DataFrame:
    total = pl.col("total_ns").sum().over("stage")
    return (
        kern.group_by("stage", "category")
        .agg(pl.col("instances").sum().alias("kernels"), pl.col("total_ns").sum())
        .with_columns(pl.when(total > 0).then(100.0 * pl.col("total_ns") / total).otherwise(0.0).alias("pct"))
        .sort(["stage", "total_ns", "category"], descending=[False, True, False])
        .collect()
    )


def _ranked(frame: pl.LazyFrame, by: str, keys: list[str], top_n: int | None) -> pl.LazyFrame:
    """Add ``pct`` (share of the stage's ``by``) and ``rank`` per stage; keep the ``top_n``."""
    total = pl.col(by).sum().over("stage")
    ranked = (
        frame.with_columns(pl.when(total > 0).then(100.0 * pl.col(by) / total).otherwise(0.0).alias("pct"))
        .sort(["stage", by, *keys], descending=[False, True, *[False] * len(keys)], nulls_last=True)
        .with_columns(pl.int_range(pl.len()).over("stage").add(1).alias("rank"))
    )
    return ranked if top_n is None else ranked.filter(pl.col("rank") <= top_n)


def _top_kernels(kern: pl.LazyFrame, top_n: int | None) -> pl.DataFrame:
    return (
        _ranked(kern, "total_ns", ["name"], top_n)
        .select("stage", "rank", "name", "category", "instances", "total_ns", "pct")
        .collect()
    )


def _top_operators(per_call: pl.DataFrame, ranges: pl.LazyFrame, ids: pl.LazyFrame, top_n: int | None) -> pl.DataFrame:
    """Operators per stage from per (stage range, innermost operator range) sums (``kernels``,
    ``gpu_ops``, ``gpu_ns``): named once per operator range, summed per stage and operator
    (``calls``: the number of operator ranges).
    """
    names = op_range_names(ranges, per_call.lazy().select("op_range_id"))
    # per_call has one row per (stage range, operator range): its rows count the calls
    per_stage = (
        per_call.lazy()
        .join(names, on="op_range_id", how="left")
        .join(ids, on="range_id", how="inner")
        .group_by("stage", "operator", "input_shapes")
        .agg(
            pl.len().alias("calls"),  # distinct operator ranges
            pl.col("kernels").sum(),
            pl.col("gpu_ops").sum(),
            pl.col("gpu_ns").sum(),
        )
    )
    return (
        _ranked(per_stage, "gpu_ns", ["operator", "input_shapes"], top_n)
        .select("stage", "rank", "operator", "input_shapes", "calls", "kernels", "gpu_ops", "gpu_ns", "pct")
        .collect()
    )
