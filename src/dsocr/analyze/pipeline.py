"""``run_analysis``: load each trace, attribute, compute every table, combine over files.

The result is an :class:`~dsocr.analyze.analysis.Analysis`. Nothing is written here: the report
layer writes the files, once everything was computed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs
import polars as pl

from dsocr.analyze import integrity
from dsocr.analyze.analysis import Analysis, TraceInfo, TraceResult
from dsocr.analyze.categories import category_expr
from dsocr.analyze.input_files import forget_cached, resolve_input
from dsocr.analyze.policy import ENGINE_VAR, RuntimePolicy
from dsocr.analyze.repeats import analyze_repeats
from dsocr.analyze.stages import TOP_N, analyze_stages, summarize
from dsocr.analyze.study import (
    check_against,
    check_same_gpus,
    check_same_nesting,
    check_same_study,
    distinct_inputs,
    partial_run_warning,
    stage_names,
)
from dsocr.analyze.trace import Trace

if TYPE_CHECKING:
    from dsocr.analytic.calibration import Calibration
    from dsocr.analyze.analytic_section import PeakFlags
    from dsocr.analyze.attribution import Attribution
    from dsocr.analyze.trace import GpuInfo
    from dsocr.analyze.workload_from_run import RunFiles, WorkloadFlags
from dsocr.contract import rundir
from dsocr.contract.errors import BadInput, DsocrError

#: Called with a step name before each step (for progress bars).
Progress = Callable[[str], None]


#: From this many API calls on, the NVTX projection folds launches up the range tree instead of
#: expanding every (API call, enclosing range) pair (less peak memory on big traces).
FOLD_PROJECTION_CALLS: Final = 1_000_000


def _load(path: Path, policy: RuntimePolicy) -> Trace:
    from dsocr.analyze.load import load_trace

    return load_trace(path, trim_heap=policy.trim_heap)


def _attribute(trace: Trace) -> Attribution:
    from dsocr.analyze.attribution import attribute

    return attribute(trace)


def _projection(trace: Trace, api_pairs: pl.DataFrame | None) -> pl.DataFrame:
    """NVIDIA's projection summary, from the API calls' (api_id, range_id) pairs when given."""
    from dsocr.analyze.projection import projection_summary

    if api_pairs is None:
        return projection_summary(trace)  # folds launches up the range tree: less memory, a little slower
    return projection_summary(trace, pairs=api_pairs)


def _kernels(trace: Trace) -> pl.DataFrame:
    from dsocr.analyze.kernels import kernel_summary

    summary = kernel_summary(trace)
    cats = summary.select("name").unique().with_columns(category_expr(pl.col("name")).alias("category"))
    return summary.join(cats, on="name", how="left", maintain_order="left")


def _info(given: Path, trace: Trace, mode: str, gpu_lost: str | None = None, graphs: int = 0) -> TraceInfo:
    m = trace.meta
    return TraceInfo(
        file=str(given),
        path=str(m.path),
        product_version=m.product_version,
        schema_version=str(m.schema),
        source_format=m.source_format,
        gpus=tuple(attrs.asdict(g) for g in trace.gpus),
        has_cuda=m.has_cuda,
        has_nvtx=m.has_nvtx,
        duration_ns=m.duration_ns,
        stage_mode=mode,
        open_ranges=m.open_ranges.count,
        gpu_lost=gpu_lost,
        graph_executions=graphs,
    )


def _named_as_given(exc: DsocrError, given: Path, path: Path) -> DsocrError:
    """``exc`` naming the user's ``.xz`` instead of its decompressed copy in the cache (then removed)."""
    source = given / rundir.TRACE_SQLITE_XZ if given.is_dir() else given
    if source.suffix != ".xz":
        return exc
    forget_cached(path)  # not a usable export: no copy of it stays in the cache
    return type(exc)(exc.message.replace(str(path), f"{source} (decompressed)"), exc.exit_code)


def analyze_trace(
    given: Path,
    progress: Progress | None = None,
    resolved: Path | None = None,
    reference: TraceResult | None = None,
    policy: RuntimePolicy | None = None,
) -> tuple[TraceResult, list[str]]:
    """Load and analyze one trace (``resolved``: its export, if already known); return its tables and any warnings.

    With ``reference`` (the first of several traces) BadInput is raised as soon as the trace
    turns out not to be another pass of the same study (:func:`check_same_study`).
    """
    step = progress or (lambda _name: None)
    path = resolved if resolved is not None else resolve_input(given)
    step(f"loading {given.name}")
    try:
        trace = _load(path, policy or RuntimePolicy.for_inputs([path]))
    except DsocrError as exc:
        raise _named_as_given(exc, given, path) from None
    if reference is not None:
        check_same_gpus(reference.info, str(given), [attrs.asdict(g) for g in trace.gpus])
    integrity.check_ranges(given, trace)
    gpu = integrity.gpu_records(trace)
    warnings = gpu.warnings(given)
    if not trace.meta.has_cuda and gpu.lost is None:
        warnings.append(f"{given}: no CUDA activity in this trace (no GPU traced); reporting CPU-side NVTX ranges only")
    step("attributing GPU work to NVTX ranges")
    att = _attribute(trace)
    # GPU work per stage only where it can be tied to the ranges (integrity.GpuRecords.lost)
    cuda = trace.meta.has_cuda and gpu.lost is None
    # the API calls' (call, range) pairs, built once for the stages and the projection; from
    # FOLD_PROJECTION_CALLS calls on they are built for the stages only (the projection folds)
    fold = att.api_enclosing.ids.len() >= FOLD_PROJECTION_CALLS
    api_pairs = None if fold else att.api_ranges
    step("stage tables")
    stages = analyze_stages(
        trace,
        att.op_ranges.lazy() if cuda else None,
        (att.api_ranges if api_pairs is None else api_pairs).lazy() if cuda else None,
        top_n=None,
        op_innermost=att.op_innermost.lazy() if cuda else None,
    )
    if stages.instances.height == 0:
        raise integrity.no_stages_error(given, trace)
    warnings[:0] = [w for w in [integrity.open_ranges_warning(given, trace, stages.cut_short)] if w]
    if stages.nesting is not None and (odd := stages.nesting.warning(str(given))):
        warnings.append(odd)
    info = _info(given, trace, stages.mode, gpu.lost, gpu.graphs)
    if reference is not None:
        check_same_study(reference.info, info, stage_names(reference.stages), stage_names(stages))
        check_same_nesting(reference, str(given), stages)
    step("NVTX projection and kernel summary")
    proj = _projection(trace, api_pairs)
    del api_pairs
    kern = _kernels(trace)
    mod_times = None
    gaps = None
    if cuda:
        from dsocr.analyze.gaps import idle_gaps
        from dsocr.analyze.modules import module_times

        mod_times = module_times(trace, att.op_ranges)
        gaps = idle_gaps(stages.instances, att.op_ranges.lazy(), trace.gpu_ops)
    procs = None
    tids = stages.instances.get_column("global_tid")
    if cuda and (tids // (1 << 24)).n_unique() > 1:  # several worker processes (dsocr capture --gpus N)
        from dsocr.analyze.devices import processes

        procs = processes(trace)
    return TraceResult(info, proj, kern, stages, mod_times, gaps, procs), warnings


def run_analysis(
    paths: Sequence[Path],
    progress: Progress | None = None,
    top_n: int = TOP_N,
    workload: WorkloadFlags | None = None,
    peak: PeakFlags | None = None,
    policy: RuntimePolicy | None = None,
    scheduler: str | None = None,
) -> Analysis:
    """Analyze one or several traces (several files = several passes) into one :class:`Analysis`.

    When the first path is a dsocr run directory (or a trace in one) its manifest and timing
    files give the analytic workload; otherwise ``workload`` flags may. ``peak`` overrides the
    GPU peak used for MFU/MBU. ``policy``: the run-time settings (default: the policy of the
    resolved exports). ``scheduler`` (``local`` or a Dask scheduler address) runs the per-trace
    work on a Dask cluster (:mod:`dsocr.analyze.distributed`), under the same policy: the same results.
    """
    if not paths:
        raise BadInput("no trace given; pass an nsys SQLite export or a run directory")
    if scheduler is not None:
        from dsocr.analyze.distributed import check_available

        check_available()
    resolved = distinct_inputs(paths)
    policy = policy or RuntimePolicy.for_inputs(resolved)
    with polars_engine(policy):
        return _analyze_all(paths, resolved, progress, top_n, workload, peak, policy, scheduler)


def polars_engine(policy: RuntimePolicy) -> contextlib.AbstractContextManager[object]:
    """The polars engine setting the policy asks for (in-memory for small traces: on small frames each query
    costs less there than on the streaming engine, polars' default, whose smaller peak memory is kept for
    large traces); a user's ``POLARS_ENGINE_AFFINITY`` wins."""
    if not policy.in_memory_engine or os.environ.get(ENGINE_VAR):
        return contextlib.nullcontext()
    return pl.Config(engine_affinity="in-memory")


def _analyze_all(
    paths: Sequence[Path],
    resolved: Sequence[Path],
    progress: Progress | None,
    top_n: int,
    workload: WorkloadFlags | None,
    peak: PeakFlags | None,
    policy: RuntimePolicy,
    scheduler: str | None = None,
) -> Analysis:
    from dsocr.analyze.workload_from_run import run_files

    results: list[TraceResult] = []
    runs = [run_files(p) if p.exists() else None for p in paths]  # each run directory's documents, read once
    warnings: list[str] = [w for p, files in zip(paths, runs, strict=True) if (w := partial_run_warning(p, files))]
    if scheduler is None:
        for p, r in zip(paths, resolved, strict=True):
            res, warn = analyze_trace(p, progress, r, results[0] if results else None, policy)
            results.append(res)
            warnings.extend(warn)
    else:
        from dsocr.analyze.distributed import analyze_traces

        if progress is not None:
            progress(f"analyzing {len(paths)} trace(s) on Dask ({scheduler})")
        for p, (res, warn) in zip(paths, analyze_traces(scheduler, paths, resolved, policy), strict=True):
            if results:
                check_against(results[0], str(p), res)
            if progress is not None:
                progress(f"{p.name}: analyzed on Dask")
            results.append(res)
            warnings.extend(warn)
    step = progress or (lambda _name: None)
    step("combining files and repeats")
    instances = pl.concat(
        [r.stages.instances.with_columns(pl.lit(i, dtype=pl.Int64).alias("file")) for i, r in enumerate(results)],
        how="diagonal_relaxed",
    )
    repeats = analyze_repeats(instances)
    step("analytic model")
    from dsocr.analyze.analytic_section import PeakFlags, analytic_section, pages_per_pass, trace_peak
    from dsocr.analyze.modules import combine
    from dsocr.analyze.trace import GpuInfo
    from dsocr.analyze.workload_from_run import WorkloadFlags, workloads_for

    run = runs[0]
    for files in runs:  # a corrupt manifest.json or timing file, named
        if files is not None:
            warnings.extend(w for w in files.warnings() if w not in warnings)
    op_memory = None
    if run is not None:
        from dsocr.analyze.op_memory import read_run

        op_memory, unreadable = read_run(run.directory)
        warnings.extend([unreadable] if unreadable else [])
    gpus = tuple(GpuInfo(**g) for g in results[0].info.gpus)
    the_peak = trace_peak(gpus, peak or PeakFlags())
    warnings.extend(f"GPU peak: {note}" for note in the_peak.notes)  # unknown GPU, assumed form factor, ...
    work, reason = workloads_for(run, workload or WorkloadFlags(), pages_per_pass(repeats.per_pass))
    calibration = find_calibration(peak, run, gpus, warnings)
    analytic = analytic_section(work, reason, repeats.per_pass, the_peak, calibration)
    mods = combine(
        [r.module_times for r in results if r.module_times is not None], analytic.estimates, the_peak, calibration
    )
    gaps = [
        r.idle_gaps.with_columns(pl.lit(i, dtype=pl.Int64).alias("file"))
        for i, r in enumerate(results)
        if r.idle_gaps is not None
    ]
    from dsocr.analyze.devices import device_tables

    devices = device_tables(instances, [r.processes for r in results], [r.info.gpus for r in results])
    operators = _combine_top([r.stages.operators for r in results], ["operator", "input_shapes"], "gpu_ns", top_n)
    if op_memory is not None:
        from dsocr.analyze.op_memory import join_operators

        operators = join_operators(operators, op_memory)
    return Analysis(
        devices=devices,
        traces=tuple(results),
        stage_instances=instances,
        stages=summarize(instances),
        categories=_combine_categories([r.stages.categories for r in results]),
        top_kernels=_combine_top([r.stages.top_kernels for r in results], ["name", "category"], "total_ns", top_n),
        operators=operators,
        repeats=repeats,
        warnings=tuple(warnings),
        idle_gaps=pl.concat(gaps, how="vertical_relaxed").sort("duration_ns", descending=True)
        if gaps
        else pl.DataFrame(),
        analytic=analytic,
        modules=mods,
        run=run,
        op_memory=op_memory,
    )


def find_calibration(
    flags: PeakFlags | None, run: RunFiles | None, gpus: Sequence[GpuInfo], warnings: list[str]
) -> Calibration | None:
    """``--calibration FILE``, else the run directory's calibration.json, else none.

    A calibration measured on another GPU than the trace's is used but warned about.
    """
    path = flags.calibration if flags is not None else None
    if path is None and run is not None and (run.directory / rundir.CALIBRATION).is_file():
        path = run.directory / rundir.CALIBRATION
    if path is None:
        return None
    from dsocr.analytic.calibration import load_calibration

    cal = load_calibration(path)
    trace_gpu = gpus[0].name if gpus else None
    if cal.gpu and trace_gpu and cal.gpu != trace_gpu:
        warnings.append(
            f"calibration {path} was measured on {cal.gpu}, the trace ran on {trace_gpu}: "
            "its calibrated times may not apply"
        )
    return cal


def _combine_categories(frames: list[pl.DataFrame]) -> pl.DataFrame:
    total = pl.col("total_ns").sum().over("stage")
    return (
        pl.concat(frames, how="vertical_relaxed")
        .group_by("stage", "category")
        .agg(pl.col("kernels").sum(), pl.col("total_ns").sum())
        .with_columns(pl.when(total > 0).then(100.0 * pl.col("total_ns") / total).otherwise(0.0).alias("pct"))
        .sort(["stage", "total_ns", "category"], descending=[False, True, False])
    )


def _combine_top(frames: list[pl.DataFrame], keys: list[str], by: str, top_n: int) -> pl.DataFrame:
    """Sum per-file tables (untruncated) by stage and ``keys``, rank by ``by``, keep ``top_n``."""
    df = pl.concat(frames, how="vertical_relaxed")
    counts = [c for c in df.columns if c not in {"stage", "rank", "pct", *keys}]
    total = pl.col(by).sum().over("stage")
    return (
        df.group_by(["stage", *keys])
        .agg(*[pl.col(c).sum() for c in counts])
        .with_columns(pl.when(total > 0).then(100.0 * pl.col(by) / total).otherwise(0.0).alias("pct"))
        .sort(["stage", by, *keys], descending=[False, True, *[False] * len(keys)], nulls_last=True)
        .with_columns(pl.int_range(pl.len()).over("stage").add(1).alias("rank"))
        .filter(pl.col("rank") <= top_n)
        .select("stage", "rank", *keys, *counts, "pct")
    )
