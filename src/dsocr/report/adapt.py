"""Build the report's :class:`~dsocr.report.view.ReportView` from the analysis document.

The input is the typed ``analysis.json`` document (:class:`~dsocr.analyze.analysis_doc.AnalysisDocument`,
docs/analysis-schema.md; a plain mapping is typed first), so report.html, summary.md and ``dsocr diff``
all read the same data. Optional inputs, each either a key of the document or an argument:

- ``manifest``: the run's ``manifest.json`` (run identity, settings, nsys command), a
  :class:`~dsocr.contract.run_manifest.RunManifest`; ``timing`` and ``baseline`` are
  :class:`~dsocr.contract.run_timing.RunTiming` (given, or read from the document's keys);
- ``timing``: the profiled worker's ``timing.json``: tokens, context lengths, pages, model,
  environment, assumptions;
- ``baseline``: the unprofiled baseline's ``timing-baseline.json`` (``profiled`` false):
  unprofiled stage times and peak allocated memory. A ``timing`` whose ``profiled`` is false
  serves as the baseline too.
  Its ``other_runs`` are the other unprofiled runs (``timing-baseline-<k>.json`` of
  ``--baseline-runs`` 2 or more, each with its ``file`` name;
  :func:`~dsocr.analyze.workload_from_run.read_run_files` and ``dsocr analyze`` put them there). The
  unprofiled time of a stage is the mean over all runs, and their drift (largest minus smallest
  run mean, over the mean) sits beside the overhead; the manifest's ``timing.runs`` says where
  each ran relative to the profiled run.
- ``analytic`` (always the document's): the ``analytic`` section ``dsocr analyze`` computed: ``peak``,
  ``stage_metrics`` (each stage's work of a pass and its MFU/MBU), ``per_pass`` (those utilizations
  in every pass, behind the spreads), ``memory``, ``workload`` and ``modules``. The view reads these
  figures; it computes none of them.

Anything missing leaves its fields ``None``; the report says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from dsocr.analyze import nesting
from dsocr.analyze.analysis_doc import AnalysisDocument
from dsocr.analyze.categories import LABELS
from dsocr.analyze.op_memory import HOW_TO
from dsocr.contract import nvtx_names as nv
from dsocr.contract import rundir
from dsocr.contract.run_manifest import ManifestInput, RunManifest
from dsocr.contract.run_timing import RunTiming, TimingModel, TimingPage
from dsocr.model import workloads
from dsocr.report.view import (
    DecodeStep,
    Identity,
    IdleGap,
    KernelView,
    MemoryView,
    OpMemoryView,
    Peaks,
    ReportView,
    RooflinePoint,
    StageView,
    Stat,
    Table,
    TimelineBin,
)

#: Stages that only contain others (their time is the sum of what is inside).
CONTAINERS = frozenset({nv.REPEAT, nv.PAGE})
#: Most timeline bins drawn (finer stage instances are merged into this many slices).
MAX_BINS = 400
TOP_IDLE = 5


def _frame(rows: Sequence[Mapping[str, Any]] | None) -> pl.DataFrame:
    return pl.DataFrame(list(rows or []), infer_schema_length=None)


#: The per-pass utilization columns of analysis.json's ``analytic.per_pass`` (analyze.analytic_section).
UTILIZATION = ("mfu_busy", "mfu_wall", "mbu_busy", "mbu_wall")


def _utilization(analytic: Mapping[str, Any] | None) -> dict[tuple[str, str], Stat]:
    """Per (stage, column of :data:`UTILIZATION`): the per-pass values ``dsocr analyze`` computed, in pass order."""
    rows = [r for r in (_get(analytic, "per_pass") or []) if isinstance(r, Mapping)]
    df = _frame(rows)
    cols = [c for c in UTILIZATION if c in df.columns]
    if df.is_empty() or not cols:
        return {}
    lists = df.sort("pass").group_by("stage", maintain_order=True).agg(pl.col(c).drop_nulls() for c in cols)
    return {(str(r["stage"]), c): Stat.of(r[c]) for r in lists.iter_rows(named=True) for c in cols if r[c]}


def _as(metrics: Mapping[str, Any] | None, key: str, per_pass: Stat | None) -> Stat | None:
    """The figure analysis.json's stage_metrics gives (work of a pass / (peak x mean time): the ratio of
    means), with the spread of the per-pass ratios; the per-pass ratios alone without stage_metrics."""
    value = metrics.get(key) if metrics is not None else None
    if value is None:
        return per_pass if metrics is None else None
    sd = per_pass.stddev if per_pass is not None else None
    return Stat.summary(float(value), sd, per_pass.n if per_pass is not None and sd is not None else 1)


def _stats(per_pass: pl.DataFrame, stage: str, col: str) -> Stat | None:
    if per_pass.is_empty() or col not in per_pass.columns:
        return None
    vals = per_pass.filter(pl.col("stage") == stage).sort("pass")[col].drop_nulls().to_list()
    return Stat.of(vals) if vals else None


def _get(d: Mapping[str, Any] | None, *keys: str) -> Any:
    cur: Any = d
    for k in keys:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(k)
    return cur


def _records(timing: RunTiming | None) -> pl.DataFrame:
    """The ``records`` of a timing document (empty without one)."""
    if timing is None or not timing.records:
        return pl.DataFrame()
    return _frame([r.to_json() for r in timing.records])


def _settings(manifest: RunManifest | None, timing: RunTiming | None) -> Mapping[str, Any]:
    """The capture's settings (manifest.json), else the worker config as run (timing.json), else none."""
    settings = manifest.settings.to_json() if manifest is not None and manifest.settings is not None else None
    return settings or (timing.config if timing is not None else None) or {}


def _identity(d: AnalysisDocument, manifest: RunManifest | None, timing: RunTiming | None) -> Identity:
    trace = d.trace or {}
    files = [str(trace.get("file"))] if trace.get("file") else []
    files += [str(t.get("file")) for t in d.traces if t.get("file") and str(t.get("file")) not in files]
    menv = (manifest.environment if manifest is not None else None) or {}
    tenv = (timing.environment if timing is not None else None) or {}
    settings = _settings(manifest, timing)
    model = (timing.model if timing is not None else None) or TimingModel(keys=())
    prompt_tokens = timing.prompt.tokens if timing is not None and timing.prompt is not None else None
    pkgs = menv.get("packages") or {}
    source = model.source or settings.get("model")
    kind = model.kind or ("replica" if source == "replica" else None)
    gpus = menv.get("gpus") or []
    pages = (manifest.inputs if manifest is not None else None) or (
        timing.pages if timing is not None and timing.has("pages") else None
    )
    model_source = f"{source} ({kind})" if source and kind and kind != source else (source or kind)
    execution = model.replica_execution
    if model_source and execution is not None:  # the replica's (timing.json from issue 10 on): its full variant
        model_source += "; execution: " + ", ".join(
            f"decoder {k} {v}" if k == "attention" else f"{k} {v}" for k, v in execution.variant()
        )
    return Identity(
        trace_files=tuple(files),
        gpu=trace.get("gpu") or tenv.get("device_name") or (gpus[0].get("name") if gpus else None),
        driver=menv.get("driver_version"),
        cuda=tenv.get("cuda") or menv.get("torch_cuda") or menv.get("driver_cuda"),
        nsys_version=trace.get("product_version"),
        schema_version=trace.get("schema_version"),
        torch=tenv.get("torch") or pkgs.get("torch"),
        model_source=model_source,
        random_weights=model.random_weights
        if model.has("random_weights")
        else (None if kind is None else kind == "replica"),
        dtype=tenv.get("dtype") or settings.get("dtype"),
        mode=settings.get("mode"),
        pages=len(pages) if pages is not None else None,
        repeats=d.repeats_value("passes"),
        prompt_tokens=prompt_tokens or settings.get("prompt_tokens"),
        new_tokens=settings.get("max_new_tokens") or settings.get("new_tokens"),
        created=manifest.created if manifest is not None else None,
        dsocr_version=manifest.dsocr_version if manifest is not None else None,
        workload=workloads.label(
            manifest.workload if manifest is not None else None,
            manifest.settings.to_json() if manifest is not None and manifest.settings is not None else None,
        ),
        model_code=model_code_text(model, settings),
    )


def model_code_text(model: TimingModel, settings: Mapping[str, Any]) -> str | None:
    """The code and execution that ran, in words (timing.json's ``model``; the settings of an older capture)."""
    kind = model.kind or settings.get("model")
    if kind is None:
        return None
    code = str(model.code or ("dsocr's replica" if kind == "replica" else kind))
    vendor = model.vendor_text
    if vendor:  # the checkpoint's own code and generate
        return f"{code}: {vendor}"
    attn = model.attn_implementation or settings.get("attn_implementation")
    execution = model.replica_execution
    if execution is not None:  # the replica's execution record (issue 10 on)
        parts = [f"{k} {v}" for k, v in execution.variant(attn)]
    else:  # older captures: transformers' experts kernel
        parts = [f"{k} {v}" for k, v in (("experts", model.experts_implementation), ("attention", attn)) if v]
    return code + (f" ({', '.join(parts)})" if parts else "")


def _depths(instances: pl.DataFrame, names: list[str]) -> dict[str, int]:
    if instances.is_empty():
        return dict.fromkeys(names, 0)
    mins = dict(instances.filter(pl.col("stage").is_in(names)).group_by("stage").agg(pl.col("depth").min()).iter_rows())
    base = min(mins.values(), default=0)
    return {n: int(mins.get(n, base)) - base for n in names}


def _per_repeat(records: pl.DataFrame) -> pl.DataFrame:
    """Timing records summed per (stage, repeat), and per unprofiled ``run`` where present: ``ns`` and ``tokens``."""
    if records.is_empty() or "repeat" not in records.columns:
        return pl.DataFrame()
    keys = ["run", "repeat"] if "run" in records.columns else ["repeat"]
    return (
        records.group_by("stage", *keys)
        .agg((pl.col("ms").sum() * 1e6).alias("ns"), pl.col("tokens").sum().alias("tokens"))
        .sort(keys, nulls_last=True)
    )


def _baseline_records(docs: Sequence[RunTiming]) -> pl.DataFrame:
    """The records of every unprofiled run, with the run's index in ``run``."""
    frames = [
        recs.with_columns(pl.lit(i, pl.Int64).alias("run"))
        for i, doc in enumerate(docs)
        if not (recs := _records(doc)).is_empty()
    ]
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def _drift(per_repeat: pl.DataFrame) -> dict[str, tuple[int, float | None]]:
    """Per stage: the unprofiled runs that timed it and their drift ((max - min) / mean of the run means)."""
    if per_repeat.is_empty() or "run" not in per_repeat.columns:
        return {}
    runs = per_repeat.group_by("stage", "run").agg(pl.col("ns").mean())
    rows = runs.group_by("stage").agg(
        pl.len().alias("n"),
        pl.when((pl.len() > 1) & (pl.col("ns").mean() > 0))
        .then((pl.col("ns").max() - pl.col("ns").min()) / pl.col("ns").mean())
        .alias("drift"),
    )
    return {str(st): (int(n), None if d is None else float(d)) for st, n, d in rows.iter_rows()}


def _has_gpu(d: AnalysisDocument) -> bool:
    """Whether the stages have GPU numbers: CUDA was traced and its records tie to the ranges (no ``gpu_lost``)."""
    return bool(d.trace_value("has_cuda")) and not d.trace_value("gpu_lost")


def _stage_views(
    d: AnalysisDocument,
    records: pl.DataFrame,
    baseline: pl.DataFrame,
    analytic: Mapping[str, Any] | None,
    passes: int,
    profiled: bool = True,
    run_order: Sequence[tuple[int, str]] = (),
) -> tuple[StageView, ...]:
    """The stage views; ``run_order``: (index in ``baseline``'s ``run``, where it ran) in execution order."""
    stages = _frame(d.stages)
    per_pass = _frame(d.repeats_value("per_pass"))
    instances = _frame(d.stage_instances)
    if stages.is_empty():
        return ()
    names = [n for n in stages["stage"].to_list() if n not in CONTAINERS]
    depth = _depths(instances, names)
    nested = _nested(d)
    if nested and depth.get(nesting.GUEST, 0) > depth.get(nesting.HOST, 0):
        # vision ran inside prefill, whose row is then its own work: vision is a stage of the pass beside it
        for n in (nesting.GUEST, *nv.VISION_PARTS):
            if n in depth:
                depth[n] -= 1
    has_gpu = _has_gpu(d)
    rows = {r["stage"]: r for r in stages.iter_rows(named=True)}
    metrics = {
        str(r["stage"]): r for r in (_get(analytic, "stage_metrics") or []) if isinstance(r, Mapping) and "stage" in r
    }
    util = _utilization(analytic)
    base = _per_repeat(baseline)
    drift = _drift(base)
    prof_recs = _per_repeat(records) if profiled else pl.DataFrame()
    recs = _per_repeat(records if not records.is_empty() else baseline)
    out = []
    for name in names:
        row = rows[name]
        # a stage that held vision: its own (exclusive) figures, the inclusive range and busy beside them
        own = nested and name == nesting.HOST and row.get(nesting.excl("cpu_ns")) is not None
        x = nesting.EXCL_SUFFIX if own else ""
        rng = _stats(per_pass, name, "cpu_ns" + x) or Stat.of([row["cpu_ns" + x]])
        busy = _stats(per_pass, name, "gpu_busy_ns" + x) or Stat.of([row["gpu_busy_ns" + x]])
        unprof = None
        prof = None
        tokens = None
        runs: tuple[tuple[str, float], ...] = ()
        if not base.is_empty():
            part = base.filter(pl.col("stage") == name)
            if part.height:
                unprof = Stat.of(part["ns"].to_list())
                if "run" in part.columns:
                    means = dict(part.group_by("run").agg(pl.col("ns").mean()).iter_rows())
                    runs = tuple((where, float(means[i])) for i, where in run_order if means.get(i) is not None)
        if not prof_recs.is_empty():
            part = prof_recs.filter(pl.col("stage") == name)
            if part.height:
                prof = Stat.of(part["ns"].to_list())
        if not recs.is_empty():
            tok = recs.filter(pl.col("stage") == name)["tokens"].drop_nulls()
            tokens = int(tok.mean()) if tok.len() and tok.mean() else None  # type: ignore[arg-type]
        if tokens is None and name == nv.DECODE and row.get("decode_steps"):
            tokens = round(row["decode_steps"] / max(1, passes))
        # dsocr analyze's stage_metrics: the work of a whole pass (all its pages), computed once in analyze
        sm = metrics.get(name)
        flops, nbytes, predicted, calibrated = (
            float(v) if sm is not None and (v := sm.get(k)) else None
            for k in ("flops", "bytes", "predicted_ns", "calibrated_ns")
        )
        mfu_busy_passes = util.get((name, "mfu_busy")) if has_gpu else None
        mfu_wall_passes = util.get((name, "mfu_wall"))
        out.append(
            StageView(
                name=name,
                range_ns=rng,
                gpu_busy_ns=busy,
                kernels=_stats(per_pass, name, "kernels" + x) or Stat.of([row["kernels" + x]]),
                unprofiled_ns=unprof,
                profiled_ns=prof,
                launches=_stats(per_pass, name, "launches" + x) if has_gpu else None,
                syncs=_stats(per_pass, name, "syncs" + x) if has_gpu else None,
                d2h_copies=_stats(per_pass, name, "d2h_copies" + x) if has_gpu else None,
                tokens=tokens,
                flops=flops,
                bytes=nbytes,
                predicted_ns=predicted,
                calibrated_ns=calibrated,
                mfu_busy=_as(sm, "mfu_busy", mfu_busy_passes) if has_gpu else None,
                mfu_wall=_as(sm, "mfu_wall", mfu_wall_passes),
                mfu_busy_passes=mfu_busy_passes,
                mfu_wall_passes=mfu_wall_passes,
                mbu_busy=_as(sm, "mbu_busy", util.get((name, "mbu_busy"))) if has_gpu else None,
                depth=depth[name],
                has_gpu=has_gpu,
                baseline_runs=drift.get(name, (0, None))[0],
                baseline_drift=drift.get(name, (0, None))[1],
                inclusive_range_ns=(_stats(per_pass, name, "cpu_ns") or Stat.of([row["cpu_ns"]])) if own else None,
                inclusive_gpu_busy_ns=(_stats(per_pass, name, "gpu_busy_ns") or Stat.of([row["gpu_busy_ns"]]))
                if own
                else None,
                unprofiled_runs=runs,
            )
        )
    return tuple(out)


def _nested(d: AnalysisDocument) -> bool:
    """Whether vision ran inside prefill (analysis.json's ``stage_nesting`` lists exclusive columns)."""
    return bool(_get(d.stage_nesting, "exclusive_columns"))


def _own_parts(instances: pl.DataFrame) -> pl.DataFrame:
    """Where vision ran inside prefill: each prefill instance as its own work (``cpu_ns``, ``gpu_busy_ns``
    exclusive), placed after the last vision range inside it, so leaf instances neither overlap nor count
    vision twice (the timeline and the idle list)."""
    col = nesting.excl("cpu_ns")
    if col not in instances.columns:
        return instances
    by = [c for c in ("file", "global_tid") if c in instances.columns]
    guests = (
        instances.filter(pl.col("stage") == nesting.GUEST)
        .select(*by, pl.col("start").alias("_gs"), pl.col("end").alias("_ge"))
        .sort("_gs")
    )
    # the last vision range starting before the prefill ends; inside the prefill if it starts after it
    placed = (
        instances.with_row_index("_i")
        .sort("end")
        .join_asof(guests, left_on="end", right_on="_gs", by=by, strategy="backward", check_sortedness=False)
        .sort("_i")
    )
    own = pl.col(col).is_not_null()
    after = pl.when(pl.col("_gs") >= pl.col("start")).then(pl.col("_ge")).otherwise(pl.col("start"))
    return placed.with_columns(
        pl.when(own)
        .then(pl.max_horizontal(pl.col("end") - pl.col(col), after))
        .otherwise(pl.col("start"))
        .alias("start"),
        pl.when(own).then(pl.col(col)).otherwise(pl.col("cpu_ns")).alias("cpu_ns"),
        pl.when(own).then(pl.col(nesting.excl("gpu_busy_ns"))).otherwise(pl.col("gpu_busy_ns")).alias("gpu_busy_ns"),
    ).drop("_i", "_gs", "_ge")


def _own_categories(cats: pl.DataFrame) -> pl.DataFrame:
    """Kernel time per category with prefill's own (the vision kernels subtracted) where vision ran inside it."""
    guest = cats.filter(pl.col("stage") == nesting.GUEST).select("category", pl.col("total_ns").alias("_g"))
    return (
        cats.join(guest, on="category", how="left", maintain_order="left")
        .with_columns(
            pl.when(pl.col("stage") == nesting.HOST)
            .then(pl.col("total_ns") - pl.col("_g").fill_null(0))
            .otherwise(pl.col("total_ns"))
            .alias("total_ns")
        )
        .filter((pl.col("stage") != nesting.HOST) | (pl.col("total_ns") > 0))
        .drop("_g")
    )


def _leaf_instances(instances: pl.DataFrame, names: Sequence[str]) -> pl.DataFrame:
    """Instances of the finest stages (no other present stage names them as parent)."""
    parents = {nv.PARENT.get(n) for n in names} - {None}
    leaves = [n for n in names if n not in parents]
    return instances.filter(pl.col("stage").is_in(leaves)).sort("start")


def _timeline(instances: pl.DataFrame, names: Sequence[str], has_gpu: bool) -> tuple[TimelineBin, ...]:
    if instances.is_empty() or not has_gpu:
        return ()
    leaves = _leaf_instances(instances, names)
    if leaves.is_empty():
        return ()
    k = max(1, -(-leaves.height // MAX_BINS))
    binned = (
        leaves.with_row_index("_i")
        .with_columns((pl.col("_i") // k).alias("_bin"))
        .group_by("_bin", maintain_order=True)
        .agg(
            pl.col("start").min(),
            pl.col("end").max(),
            pl.col("gpu_busy_ns").sum(),
            pl.col("cpu_ns").sum(),
            pl.col("stage").mode().first(),
        )
        .with_columns(
            pl.when(pl.col("cpu_ns") > 0)
            .then((pl.col("gpu_busy_ns") / pl.col("cpu_ns")).clip(0.0, 1.0))
            .otherwise(0.0)
            .alias("frac")
        )
    )
    return tuple(
        TimelineBin(float(s), float(e), float(f), str(st))
        for s, e, f, st in binned.select("start", "end", "frac", "stage").iter_rows()
    )


def _decode_steps(instances: pl.DataFrame, baseline: pl.DataFrame, has_gpu: bool) -> tuple[DecodeStep, ...]:
    """The steps of the longest decode range (by step count), numbered from 0."""
    if instances.is_empty():
        return ()
    steps = instances.filter(pl.col("stage") == nv.DECODE_STEP).sort("start")
    decodes = instances.filter(pl.col("stage") == nv.DECODE).sort("start")
    if steps.is_empty():
        return ()
    if decodes.height:
        steps = steps.join_asof(
            decodes.select(pl.col("start").alias("_d"), pl.col("file").alias("_f"), "global_tid"),
            left_on="start",
            right_on="_d",
            by="global_tid",
            strategy="backward",
            check_sortedness=False,
        ).with_columns(pl.col("_d").fill_null(0))
    else:
        steps = steps.with_columns(pl.lit(0).alias("_d"), pl.col("file").alias("_f"))
    longest = steps.group_by("_f", "_d").len().sort("len", "_f", "_d", descending=[True, False, False]).row(0)
    chosen = steps.filter((pl.col("_f") == longest[0]) & (pl.col("_d") == longest[1])).sort("start")
    ctx: list[int | None] = [None] * chosen.height
    if not baseline.is_empty() and "context_length" in baseline.columns:
        base_steps = baseline.filter(pl.col("stage") == nv.DECODE_STEP)
        if "repeat" in base_steps.columns and base_steps.height:
            first = base_steps.select(pl.col("repeat").drop_nulls().min()).item()
            if first is not None:
                base_steps = base_steps.filter(pl.col("repeat") == first)
            if "page" in base_steps.columns:
                page0 = base_steps.select(pl.col("page").drop_nulls().min()).item()
                if page0 is not None:
                    base_steps = base_steps.filter(pl.col("page") == page0)
        vals = base_steps["context_length"].to_list()
        if len(vals) == chosen.height:
            ctx = vals
    return tuple(
        DecodeStep(i, float(c), float(b) if b is not None and has_gpu else None, cl)
        for i, ((c, b), cl) in enumerate(zip(chosen.select("cpu_ns", "gpu_busy_ns").iter_rows(), ctx, strict=True))
    )


def _idle_instances(instances: pl.DataFrame, names: Sequence[str], has_gpu: bool) -> tuple[IdleGap, ...]:
    if instances.is_empty() or not has_gpu:
        return ()
    leaves = _leaf_instances(instances, names)
    t0 = instances["start"].min()
    top = (
        leaves.with_columns((pl.col("cpu_ns") - pl.col("gpu_busy_ns")).clip(0).alias("idle"))
        .sort("idle", descending=True)
        .head(TOP_IDLE)
    )
    return tuple(
        IdleGap(str(s), float(st - t0), float(i)) for s, st, i in top.select("stage", "start", "idle").iter_rows()
    )


def _idle_gaps(d: AnalysisDocument) -> tuple[IdleGap, ...]:
    """True GPU idle gaps, when the analysis lists them (``idle_gaps``: ``stage``, ``start_ns``, ``duration_ns``)."""
    rows = d.idle_gaps
    return tuple(
        IdleGap(str(r.get("stage")), float(r.get("start_ns") or 0), float(r["duration_ns"]), "gap")
        for r in rows[: TOP_IDLE * 2]
        if isinstance(r, Mapping) and r.get("duration_ns") is not None
    )


def _memory(
    d: AnalysisDocument, names: Sequence[str], baseline: pl.DataFrame, analytic: Mapping[str, Any] | None
) -> MemoryView:
    stages = _frame(d.stages)
    # where vision ran inside prefill, prefill's copies include vision's: vision is not added again
    inside = {nesting.GUEST} if _nested(d) else set()
    top = stages.filter(
        pl.col("stage").is_in([n for n in names if nv.PARENT.get(n) in (None, nv.PAGE) and n not in inside])
    )
    passes = max(1, int(d.repeats_value("passes") or 1))
    copies: list[tuple[str, int | None, float]] = []
    if not top.is_empty():
        cols = ("h2d_bytes", "d2h_bytes", "d2d_bytes", "p2p_bytes", "d2h_copies", "memcpys")
        sums = top.select(pl.col(c).sum() for c in cols if c in top.columns)
        r = {c: None for c in cols} | sums.row(0, named=True)
        total = sum(r[c] or 0 for c in cols[:4])
        if r["memcpys"] or total:
            n_all = None if r["memcpys"] is None else round(r["memcpys"] / passes)
            copies.append(("all directions", n_all, total / passes))
        for label, col, n in (
            ("host to device", "h2d_bytes", None),
            ("device to host", "d2h_bytes", r["d2h_copies"]),
            ("device to device", "d2d_bytes", None),
            ("peer to peer", "p2p_bytes", None),
        ):
            if r[col]:
                copies.append((label, None if n is None else round(n / passes), r[col] / passes))
    peaks: tuple[tuple[str, float], ...] = ()
    if not baseline.is_empty() and "peak_allocated_bytes" in baseline.columns:
        pk = (
            baseline.filter(pl.col("peak_allocated_bytes").is_not_null())
            .group_by("stage", maintain_order=True)
            .agg(pl.col("peak_allocated_bytes").max())
        )
        peaks = tuple((str(s), float(b)) for s, b in pk.iter_rows())
    mem = _get(analytic, "memory") or {}
    weights = mem.get("weight_footprint_bytes", mem.get("weights_bytes"))  # the key before dsocr.model/2
    return MemoryView(weights, mem.get("kv_cache_bytes"), peaks, tuple(copies))


def _roofline(
    stages: Sequence[StageView], analytic: Mapping[str, Any] | None, measured: Mapping[str, Any] | None = None
) -> tuple[RooflinePoint, ...]:
    """Stages, and modules with a measured time (the analytic model's, or dsocr analyze's ``modules`` rows)."""
    pts = [
        RooflinePoint(s.name, "stage", s.flops / s.bytes, s.flops / (s.gpu_busy_ns.mean / 1e9))
        for s in stages
        if s.flops and s.bytes and s.gpu_busy_ns.mean > 0
    ]
    for m in [*(_get(analytic, "modules") or []), *(_get(measured, "rows") or [])]:
        f, b, t = m.get("flops"), m.get("bytes"), m.get("measured_ns")
        if f and b and t:
            pts.append(RooflinePoint(str(m.get("path")), "module", f / b, f / (t / 1e9)))
    return tuple(pts)


def _assumptions(
    manifest: RunManifest | None, timing: RunTiming | None, analytic: Mapping[str, Any] | None
) -> tuple[tuple[tuple[str, str], ...], Table | None, tuple[str, ...]]:
    pairs: list[tuple[str, str]] = []
    settings = _settings(manifest, timing)
    for k, v in sorted(settings.items()):
        if isinstance(v, str | int | float | bool) or v is None:
            pairs.append((str(k), "n/a" if v is None else str(v)))
    peak = _get(analytic, "peak")
    if peak:
        pairs.append(("peak", f"{peak.get('tflops')} TFLOP/s, {peak.get('tbps')} TB/s ({peak.get('source')})"))
    work = _get(analytic, "workload") or {}
    decoder_only = work.get("image_embeddings") == 0  # --prefill-tokens: no vision, so no mode or crop grid
    keys = ("mode", "crop_grid", "prompt_tokens", "prefill_length", "new_tokens", "context_mode", "dtype")
    if _get(analytic, "workload_source") == "flags" and analytic is not None:
        n = analytic.get("pages_per_pass")
        if n:
            # a foreign trace: its stage instances are runs of the given workload, not pages
            pairs.append(("runs of the workload per pass", f"{n} (stage instances in the trace; not pages)"))
    for key in keys[2:] if decoder_only else keys:
        if work.get(key) is not None:
            value = work[key]
            shown = "x".join(map(str, value)) if isinstance(value, list) else str(value)
            pairs.append((f"analytic workload: {key.replace('_', ' ')}", shown))
    prof = manifest.profile_command() if manifest is not None else None
    if prof:
        pairs.append(("nsys command", " ".join(prof)))
    setup = (timing.setup if timing is not None else None) or {}
    for k, v in sorted(setup.items()):
        if isinstance(v, str | int | float | bool):
            pairs.append((f"setup: {k}", str(v)))
    inputs = (manifest.inputs if manifest is not None else None) or ()
    planned = timing.pages if timing is not None else ()
    pages = None
    if inputs or planned:
        cols = ("name", "kind", "size (px)", "sha256", "crop grid", "image tokens", "prefill length")
        rows = []
        src: Sequence[ManifestInput | TimingPage] = inputs or planned
        for i, p in enumerate(src):
            plan = planned[i] if len(planned) == len(src) else TimingPage()
            given = p if isinstance(p, ManifestInput) else None
            rows.append(
                (
                    str(p.name or p.path or ""),
                    f"PDF page {given.pdf_page}" if given is not None and given.pdf_page is not None else "image",
                    f"{p.width}x{p.height}" if p.width else "",
                    str((given.sha256 if given is not None else None) or "")[:16],
                    "x".join(map(str, plan.grid)) if plan.grid is not None else "",
                    str(plan.image_tokens or ""),
                    str(plan.prefill_length or ""),
                )
            )
        pages = Table(cols, tuple(rows))
    caveats = (
        tuple(timing.assumptions if timing is not None else ())
        + tuple(str(a) for a in (_get(analytic, "assumptions") or []))
        + tuple(str(n) for n in (_get(analytic, "peak", "notes") or []))
    )
    return tuple(pairs), pages, caveats


def _run_order(manifest: RunManifest | None, files: Sequence[str]) -> tuple[tuple[int, str], ...]:
    """Each unprofiled run (its index in ``files``) and where it ran relative to the profiled one, in execution order.

    A capture made before ``--baseline-runs`` ran its one baseline after the profiled run.
    """
    runs = manifest.timing.runs if manifest is not None and manifest.timing is not None else ()
    order = {str(r.file): i for i, r in enumerate(runs)}
    where = {str(r.file): str(r.position or "unknown") for r in runs}
    default = {rundir.TIMING_BASELINE: "after"}
    ranked = sorted(range(len(files)), key=lambda i: order.get(files[i], len(order)))
    return tuple((i, where.get(files[i]) or default.get(files[i], "unknown")) for i in ranked)


def _positions(manifest: RunManifest | None, files: Sequence[str]) -> tuple[str, ...]:
    """Where each unprofiled run (by file) ran relative to the profiled one, in execution order."""
    return tuple(where for _, where in _run_order(manifest, files))


def _ms(v: Any) -> str:
    return "n/a" if v is None else f"{v / 1e6:,.3f} ms"


def _x(v: Any) -> str:
    return "n/a" if v is None else f"{v:.2f}x"


def _mib(v: Any) -> str:
    return "n/a" if v is None else f"{v / 2**20:,.1f} MiB"


def _modules(d: AnalysisDocument) -> tuple[Table | None, Table | None, str | None]:
    """The module tables of analysis.json's ``modules`` (measured rows only) and their note."""
    mods = d.modules
    if not isinstance(mods, Mapping):
        return None, None, None
    rows = [r for r in mods.get("rows") or [] if isinstance(r, Mapping) and r.get("measured_ns") is not None]
    share = mods.get("attributed_share")
    note = (
        f"GPU busy time inside named module ranges: {'n/a' if share is None else f'{100 * share:.1f}%'} of the "
        f"pass's GPU busy time (target >= 90%). Per pass, mean over {mods.get('passes')} pass(es); measured = GPU "
        "busy time of the ops launched inside the module's ranges; predicted = the sum of its operations' roofline "
        "times; calibrated = its primitives timed alone (calibration.json); memory = the analytic estimate of the "
        "weights it holds and its largest activation working set (not measured)."
    )
    cols = ("module", "calls", "measured", "predicted", "measured / predicted", "calibrated", "measured / calibrated")
    table = Table(
        (*cols, "weights", "activations peak"),
        tuple(
            (
                str(r["path"]),
                f"{r.get('calls') or 0:,.1f}",
                _ms(r.get("measured_ns")),
                _ms(r.get("predicted_ops_ns")),
                _x(r.get("ratio")),
                _ms(r.get("calibrated_ns")),
                _x(r.get("ratio_calibrated")),
                _mib(r.get("weight_footprint_bytes")),
                _mib(r.get("act_peak_bytes")),
            )
            for r in rows
        ),
    )
    cats = [c for c in mods.get("categories") or [] if isinstance(c, Mapping)]
    cat_table = (
        Table(
            ("module", "category", "kernels", "kernel time", "share of the module's kernel time"),
            tuple(
                (
                    str(c["path"]),
                    LABELS.get(str(c["category"]), str(c["category"])),
                    f"{c['kernels']:,.1f}",
                    _ms(c["kernel_ns"]),
                    f"{100 * c['share']:.1f}%" if c.get("share") is not None else "n/a",
                )
                for c in cats
            ),
        )
        if cats
        else None
    )
    return table, cat_table, note


def _op_memory(d: AnalysisDocument) -> OpMemoryView | None:
    """analysis.json's ``op_memory`` (present only with op_memory.json in the run directory)."""
    mem = d.op_memory
    if not isinstance(mem, Mapping):
        return None
    stages = tuple(r for r in mem.get("stages") or () if isinstance(r, Mapping))
    ops = [r for r in mem.get("operators") or () if isinstance(r, Mapping)]
    per_stage = tuple(
        (str(s["stage"]), rows) for s in stages if (rows := tuple(dict(r) for r in ops if r.get("stage") == s["stage"]))
    )
    return OpMemoryView(str(mem.get("device", "")), str(mem.get("measures", "")), tuple(map(dict, stages)), per_stage)


def view_from_analysis(
    document: AnalysisDocument | Mapping[str, Any],
    manifest: RunManifest | None = None,
    timing: RunTiming | None = None,
    baseline: RunTiming | None = None,
) -> ReportView:
    """The report view of an analysis document (plus the optional run files, see the module doc); a plain
    mapping (``Analysis.to_dict()``, parsed analysis.json) is typed first."""
    d = document if isinstance(document, AnalysisDocument) else AnalysisDocument.from_json(document, "analysis")
    manifest = manifest if manifest is not None else d.manifest
    timing = timing if timing is not None else d.timing
    analytic: Mapping[str, Any] | None = d.analytic
    why_no_model = None
    peak_only: Mapping[str, Any] | None = None
    if isinstance(analytic, Mapping) and analytic.get("available") is False:
        why_no_model = analytic.get("reason")  # dsocr analyze had no workload for this trace
        peak_only = {"peak": analytic.get("peak")}  # the peak may still be known (the GPU is)
        analytic = None
    baseline = baseline if baseline is not None else d.baseline
    files = [str(baseline.file or rundir.TIMING_BASELINE)] if baseline is not None else []
    if baseline is None and timing is not None and timing.profiled is False:
        baseline = timing  # an unprofiled timing serves as the baseline
        files = [rundir.TIMING]
    baselines = baseline.other_runs if baseline is not None else ()
    docs = [*([baseline] if baseline is not None else []), *baselines]
    files += [str(b.file or "unknown") for b in baselines]
    records = _records(timing)
    base = _records(baseline)
    passes = int(d.repeats_value("passes") or 1)
    is_profiled = timing is None or timing.profiled is not False
    order = _run_order(manifest, files) if files != [rundir.TIMING] else ((0, "unknown"),)
    stages = _stage_views(d, records, _baseline_records(docs), analytic, passes, is_profiled, order)
    names = [s.name for s in stages]
    nested = _nested(d)
    instances = _own_parts(_frame(d.stage_instances)) if nested else _frame(d.stage_instances)
    has_gpu = _has_gpu(d)
    cats = _frame(d.kernel_categories)
    if nested and not cats.is_empty():
        cats = _own_categories(cats)
    categories = (
        tuple(
            (str(s), str(c), float(ns) / passes)
            for s, c, ns in cats.select("stage", "category", "total_ns").iter_rows()
        )
        if not cats.is_empty()
        else ()
    )
    kern = _frame(d.top_kernels)
    kernels = (
        tuple(
            KernelView(
                str(r["stage"]),
                str(r["name"]),
                float(r["total_ns"]),
                int(r["instances"]),
                r["pct"] / 100,
                r["category"],
            )
            for r in kern.iter_rows(named=True)
        )
        if not kern.is_empty()
        else ()
    )
    ops = _frame(d.operators)
    operators = (
        tuple(
            KernelView(
                str(r["stage"]),
                str(r["operator"]),
                float(r["gpu_ns"]),
                int(r["calls"]),
                r["pct"] / 100,
                "operator",
                r.get("input_shapes"),
                r.get("mem_allocated_bytes"),
                r.get("mem_allocations"),
            )
            for r in ops.iter_rows(named=True)
        )
        if not ops.is_empty()
        else ()
    )
    peak = _get(analytic if analytic is not None else peak_only, "peak") or {}
    peaks = (
        Peaks(float(peak["tflops"]), float(peak["tbps"]), str(peak.get("source", "")))
        if peak.get("tflops") and peak.get("tbps")
        else None
    )
    model_row = next(
        (r for r in (_get(analytic, "stage_metrics") or []) if isinstance(r, Mapping) and r.get("stage") == "model"),
        None,
    )
    # the figure report.md and analysis.json give (ratio of means), with the spread of the per-pass values
    model_mfu = _as(model_row, "mfu_busy", _utilization(analytic).get(("model", "mfu_busy"))) if has_gpu else None
    facts = timing if timing is not None else baseline
    assumptions, pages, caveats = _assumptions(manifest, facts, analytic)
    modules, module_categories, modules_note = _modules(d)
    return ReportView(
        identity=_identity(d, manifest, facts),
        stages=stages,
        kernels=kernels,
        operators=operators,
        categories=categories,
        decode_steps=_decode_steps(instances, records if not records.is_empty() else base, has_gpu),
        timeline=_timeline(instances, names, has_gpu),
        roofline=_roofline(stages, analytic, d.modules),
        peaks=peaks,
        model_mfu=model_mfu,
        memory=_memory(d, names, base if not base.is_empty() else records, analytic),
        op_memory=_op_memory(d),
        op_memory_note=HOW_TO if d.op_memory is None and (manifest is not None or timing is not None) else None,
        idle_gaps=_idle_gaps(d) or _idle_instances(instances, names, has_gpu),
        assumptions=assumptions,
        pages=pages,
        caveats=caveats,
        notes=d.warnings + ((str(why_no_model),) if why_no_model else ()),
        warnings=d.warnings,
        gpu_lost=str(d.trace_value("gpu_lost")) if d.trace_value("gpu_lost") else None,
        analytic_reason=str(why_no_model) if why_no_model else None,
        nesting_note=str(_get(d.stage_nesting, "note")) if nested else None,
        has_gpu=has_gpu,
        baseline_positions=_positions(manifest, files) if files != [rundir.TIMING] else ("unknown",),
        modules=modules,
        module_categories=module_categories,
        modules_note=modules_note,
        devices=_devices(d),
    )


def _devices(d: AnalysisDocument) -> tuple[tuple[str, Table], ...]:
    """The per-device tables of a data-parallel trace (analysis.json ``devices``), none otherwise."""
    if not d.devices:
        return ()
    from dsocr.report.devices import device_view_tables

    return device_view_tables(d.devices, max(1, len(d.traces)))
