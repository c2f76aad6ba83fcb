"""``run_analysis``: load each trace, attribute, compute every table, combine over files.

The result (:class:`Analysis`) holds polars frames; :meth:`Analysis.to_dict` gives the
``analysis.json`` document (docs/analysis-schema.md). Nothing is written here: the report
layer writes the files, once everything was computed.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import polars as pl

from dsocr import SMALL_TRACE_BYTES
from dsocr.analyze.categories import category_expr
from dsocr.analyze.inputs import distinct_inputs, forget_cached, partial_run_warning, resolve_input
from dsocr.analyze.repeats import CV_LIMIT, RepeatTables, analyze_repeats
from dsocr.analyze.stages import DSOCR, TOP_N, StageTables, analyze_stages, summarize
from dsocr.analyze.trace import Trace

if TYPE_CHECKING:
    from dsocr.analytic.calibration import Calibration
    from dsocr.analyze.analytic_section import AnalyticResult, PeakFlags
    from dsocr.analyze.attribution import Attribution
    from dsocr.analyze.modules import ModuleAttribution, ModuleTimes
    from dsocr.analyze.trace import GpuInfo
    from dsocr.analyze.workload_from_run import RunFiles, WorkloadFlags
from dsocr.contract import rundir
from dsocr.contract.errors import BadInput, DsocrError

#: Called with a step name before each step (for progress bars).
Progress = Callable[[str], None]

#: From this many API calls on, the NVTX projection folds launches up the range tree instead of
#: expanding every (API call, enclosing range) pair (less peak memory on big traces).
FOLD_PROJECTION_CALLS: Final = 1_000_000


@attrs.frozen
class TraceInfo:
    """What one analyzed trace file is."""

    file: str  #: the path as given (run directory, .sqlite, .sqlite.xz, parquet dir)
    path: str  #: the export actually read
    product_version: str
    schema_version: str
    source_format: str
    gpus: tuple[dict[str, Any], ...]
    has_cuda: bool
    has_nvtx: bool
    duration_ns: int | None
    stage_mode: str  #: ``dsocr`` or ``foreign``


@attrs.frozen
class TraceResult:
    """The per-file tables: NVIDIA-equal summaries and this file's stage tables."""

    info: TraceInfo
    nvtx_projection: pl.DataFrame
    kernels: pl.DataFrame
    stages: StageTables
    module_times: ModuleTimes | None = None  #: with --module-ranges captures
    idle_gaps: pl.DataFrame | None = None  #: the longest GPU idle gaps per stage


@attrs.frozen
class Analysis:
    """Everything ``dsocr analyze`` computed (frames; columns in docs/analysis-schema.md)."""

    traces: tuple[TraceResult, ...]
    stage_instances: pl.DataFrame  #: every file's instances, with ``file`` (index)
    stages: pl.DataFrame  #: per stage name over all files
    categories: pl.DataFrame
    top_kernels: pl.DataFrame
    operators: pl.DataFrame
    repeats: RepeatTables
    warnings: tuple[str, ...] = ()
    idle_gaps: pl.DataFrame = attrs.field(factory=pl.DataFrame)  #: stage, range_id, repeat, page, start_ns, ...
    analytic: AnalyticResult | None = None
    modules: ModuleAttribution | None = None
    run: RunFiles | None = None  #: the run directory's files (first trace), if it is one

    def to_dict(self, *, full_projection: bool = False) -> dict[str, Any]:
        """The ``analysis.json`` document (NaN/inf in the tables as ``None``).

        Without ``full_projection`` the ``nvtx_projection`` rows of per-instance operator
        ranges (``aten::...`` with a unique ``op_id``, from ``--op-ranges`` captures) are left
        out; ``nvtx_projection_omitted`` says how many and where they are (results.sqlite).
        """
        from dsocr.analyze.workload_from_run import compact_timing

        first = self.traces[0]
        extra: dict[str, Any] = {}
        if self.run is not None:
            extra = {
                "run_dir": str(self.run.directory),
                "manifest": self.run.manifest,
                "timing": compact_timing(self.run.timing),
                "baseline": compact_timing(self.run.baseline),
            }

        def projection(t: TraceResult) -> dict[str, Any]:
            rows, omitted = _projection_rows(t.nvtx_projection, full_projection)
            return {"nvtx_projection": rows, "nvtx_projection_omitted": omitted}

        return {
            "schema_version": rundir.ANALYSIS_SCHEMA_VERSION,
            "trace": _info_dict(first.info),
            "traces": [{**_info_dict(t.info), **projection(t), "kernels": _rows(t.kernels)} for t in self.traces]
            if len(self.traces) > 1
            else [],
            **projection(first),
            "kernels": _rows(first.kernels),
            "stages": _rows(self.stages),
            "stage_instances": _rows(self.stage_instances),
            "kernel_categories": _rows(self.categories),
            "top_kernels": _rows(self.top_kernels),
            "operators": _rows(self.operators),
            "repeats": {
                "passes": self.repeats.passes,
                "cv_limit": CV_LIMIT,
                "flagged": list(self.repeats.flagged),
                "per_pass": _rows(self.repeats.per_pass),
                "stats": _rows(self.repeats.stats),
            },
            "idle_gaps": _rows(self.idle_gaps),
            "analytic": self.analytic.doc if self.analytic is not None else None,
            "modules": self.modules.to_dict() if self.modules is not None else None,
            **extra,
            "warnings": list(self.warnings),
        }


#: ``nvtx_projection`` rows of one operator range instance each (``--op-ranges`` names carry a unique op_id).
PER_INSTANCE_OP_RANGE: Final = r", op_id = \d+"

#: Keys of :meth:`Analysis.to_dict` whose values are table rows (already free of NaN/inf).
TABLE_KEYS: Final = frozenset(
    {
        "traces",
        "nvtx_projection",
        "kernels",
        "stages",
        "stage_instances",
        "kernel_categories",
        "top_kernels",
        "operators",
        "idle_gaps",
    }
)


def _projection_rows(df: pl.DataFrame, full: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The projection rows for analysis.json and what was left out of them."""
    kept = df if full or df.is_empty() else df.filter(~pl.col("range").str.contains(PER_INSTANCE_OP_RANGE))
    omitted = {
        "rows": df.height - kept.height,
        "what": "per-instance operator ranges (aten::..., op_id = N); the operators table groups them",
        "where": f"{rundir.RESULTS_SQLITE} table nvtx_projection (all rows)",
        "option": "--full-projection puts them in analysis.json",
    }
    return _rows(kept), omitted


def _rows(df: pl.DataFrame) -> list[dict[str, Any]]:
    """The rows of ``df`` as dicts, NaN/inf as ``None`` (JSON has neither)."""
    if any(t.is_nested() for t in df.schema.values()):
        return [_finite(r) for r in df.to_dicts()]
    floats = [c for c, t in df.schema.items() if t.is_float()]
    if floats:
        df = df.with_columns(pl.when(pl.col(c).is_finite()).then(pl.col(c)).alias(c) for c in floats)
    return df.to_dicts()


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


def _info_dict(info: TraceInfo) -> dict[str, Any]:
    d = attrs.asdict(info)
    d["gpus"] = list(info.gpus)
    d["gpu"] = info.gpus[0]["name"] if info.gpus else None
    return d


def _stage_names(stages: StageTables) -> frozenset[str]:
    return frozenset(stages.instances.get_column("stage").unique().to_list())


def _gpu_names(gpus: Sequence[dict[str, Any]]) -> str:
    return ", ".join(sorted(str(g.get("name")) for g in gpus)) or "no GPU"


#: How to go on when several traces are not one study.
NOT_ONE_STUDY_FIX: Final = "analyze them separately (or compare two run directories with `dsocr diff`)"


def check_same_gpus(first: TraceInfo, other_file: str, other_gpus: Sequence[dict[str, Any]]) -> None:
    """BadInput when a trace was taken on other GPUs than the first one (checked right after loading)."""
    a, b = _gpu_names(first.gpus), _gpu_names(other_gpus)
    if a != b:
        raise BadInput(f"{first.file} and {other_file}: traced on different GPUs ({a} vs {b}); {NOT_ONE_STUDY_FIX}")


def check_same_study(
    first: TraceInfo, other: TraceInfo, first_stages: frozenset[str], other_stages: frozenset[str]
) -> None:
    """BadInput when two traces cannot be passes of one study (GPU or stage ranges differ)."""
    where = f"{first.file} and {other.file}"
    fix = NOT_ONE_STUDY_FIX
    check_same_gpus(first, other.file, other.gpus)
    if first.stage_mode != other.stage_mode:
        raise BadInput(
            f"{where}: different stage kinds ({first.stage_mode} vs {other.stage_mode} NVTX stage ranges); {fix}"
        )
    if first.stage_mode != DSOCR and first_stages != other_stages:
        only = sorted(first_stages ^ other_stages)
        shown = ", ".join(only[:3]) + (f" and {len(only) - 3} more" if len(only) > 3 else "")
        raise BadInput(f"{where}: different top-level stage ranges (not in both: {shown}); {fix}")


# ---------------------------------------------------------------------------------------
# the per-trace steps (loading, attribution and the NVIDIA-equal summaries are H1's modules)


def _load(path: Path) -> Trace:
    from dsocr.analyze.load import load_trace

    return load_trace(path)


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


def _info(given: Path, trace: Trace, mode: str) -> TraceInfo:
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
    )


def _named_as_given(exc: DsocrError, given: Path, path: Path) -> DsocrError:
    """``exc`` naming the user's ``.xz`` instead of its decompressed copy in the cache (then removed)."""
    source = given / rundir.TRACE_SQLITE_XZ if given.is_dir() else given
    if source.suffix != ".xz":
        return exc
    forget_cached(path)  # not a usable export: no copy of it stays in the cache
    return type(exc)(exc.message.replace(str(path), f"{source} (decompressed)"), exc.exit_code)


def analyze_trace(
    given: Path, progress: Progress | None = None, resolved: Path | None = None, reference: TraceResult | None = None
) -> tuple[TraceResult, list[str]]:
    """Load and analyze one trace (``resolved``: its export, if already known); return its tables and any warnings.

    With ``reference`` (the first of several traces) BadInput is raised as soon as the trace
    turns out not to be another pass of the same study (:func:`check_same_study`).
    """
    step = progress or (lambda _name: None)
    path = resolved if resolved is not None else resolve_input(given)
    step(f"loading {given.name}")
    try:
        trace = _load(path)
    except DsocrError as exc:
        raise _named_as_given(exc, given, path) from None
    if reference is not None:
        check_same_gpus(reference.info, str(given), [attrs.asdict(g) for g in trace.gpus])
    warnings: list[str] = []
    if not trace.meta.has_cuda:
        warnings.append(f"{given}: no CUDA activity in this trace (no GPU traced); reporting CPU-side NVTX ranges only")
    step("attributing GPU work to NVTX ranges")
    att = _attribute(trace)
    cuda = trace.meta.has_cuda
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
        warnings.append(f"{given}: no NVTX ranges usable as stages (no dsocr-domain or top-level ranges)")
    if reference is not None:
        check_same_study(
            reference.info, _info(given, trace, stages.mode), _stage_names(reference.stages), _stage_names(stages)
        )
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
    info = _info(given, trace, stages.mode)
    return TraceResult(info, proj, kern, stages, mod_times, gaps), warnings


def run_analysis(
    paths: Sequence[Path],
    progress: Progress | None = None,
    top_n: int = TOP_N,
    workload: WorkloadFlags | None = None,
    peak: PeakFlags | None = None,
) -> Analysis:
    """Analyze one or several traces (several files = several passes) into one :class:`Analysis`.

    When the first path is a dsocr run directory (or a trace in one) its manifest and timing
    files give the analytic workload; otherwise ``workload`` flags may. ``peak`` overrides the
    GPU peak used for MFU/MBU.
    """
    if not paths:
        raise BadInput("no trace given; pass an nsys SQLite export or a run directory")
    resolved = distinct_inputs(paths)
    with _polars_engine(resolved):
        return _analyze_all(paths, resolved, progress, top_n, workload, peak)


#: Up to this many bytes of trace files (and unless POLARS_ENGINE_AFFINITY says otherwise) the
#: queries run on polars' in-memory engine: on small frames each costs less there than on the
#: streaming engine (polars' default), whose smaller peak memory is kept for large traces.
IN_MEMORY_ENGINE_BYTES: Final = SMALL_TRACE_BYTES


def _polars_engine(resolved: Sequence[Path]) -> contextlib.AbstractContextManager[object]:
    """The polars engine setting for analyzing ``resolved`` (the exports: files or directories)."""
    if os.environ.get("POLARS_ENGINE_AFFINITY") or not all(p.is_file() for p in resolved):
        return contextlib.nullcontext()
    if sum(p.stat().st_size for p in resolved) >= IN_MEMORY_ENGINE_BYTES:
        return contextlib.nullcontext()
    return pl.Config(engine_affinity="in-memory")


def _analyze_all(
    paths: Sequence[Path],
    resolved: Sequence[Path],
    progress: Progress | None,
    top_n: int,
    workload: WorkloadFlags | None,
    peak: PeakFlags | None,
) -> Analysis:
    results: list[TraceResult] = []
    warnings: list[str] = [w for p in paths if (w := partial_run_warning(p))]
    for p, r in zip(paths, resolved, strict=True):
        res, warn = analyze_trace(p, progress, r, results[0] if results else None)
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
    from dsocr.analyze.workload_from_run import WorkloadFlags, run_files, workloads_for

    run = run_files(paths[0]) if paths[0].exists() else None
    for files in (run, *(run_files(p) for p in paths[1:])):  # a corrupt manifest.json or timing file, named
        if files is not None:
            warnings.extend(w for w in files.warnings() if w not in warnings)
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
    return Analysis(
        traces=tuple(results),
        stage_instances=instances,
        stages=summarize(instances),
        categories=_combine_categories([r.stages.categories for r in results]),
        top_kernels=_combine_top([r.stages.top_kernels for r in results], ["name", "category"], "total_ns", top_n),
        operators=_combine_top([r.stages.operators for r in results], ["operator", "input_shapes"], "gpu_ns", top_n),
        repeats=repeats,
        warnings=tuple(warnings),
        idle_gaps=pl.concat(gaps, how="vertical_relaxed").sort("duration_ns", descending=True)
        if gaps
        else pl.DataFrame(),
        analytic=analytic,
        modules=mods,
        run=run,
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
