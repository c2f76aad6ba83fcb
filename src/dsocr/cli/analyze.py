"""``dsocr analyze``: any nsys SQLite export -> analysis.json, report.md, results.sqlite."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dsocr.analyze.policy import RuntimePolicy
from dsocr.cli._values import context_value, crops_value, mode_value, positive_value, scheduler_value
from dsocr.cli.app import app
from dsocr.cli.common import JsonOpt, QuietOpt, Ui, VerboseOpt, check_out_dir
from dsocr.contract import rundir
from dsocr.contract.errors import BadUsage, InputNotFound
from dsocr.contract.paths import check_input, refuse_overwrite

if TYPE_CHECKING:
    from dsocr.analyze.analysis import Analysis
    from dsocr.report.advice import Measurements
    from dsocr.report.html import Rendered

FORMATS = ("md", "json", "sqlite", "html")


def parse_formats(value: str) -> tuple[str, ...]:
    """``md,json,sqlite,html`` -> a tuple of known formats (BadInput on an unknown one)."""
    got = tuple(dict.fromkeys(f.strip().lower() for f in value.split(",") if f.strip()))
    bad = [f for f in got if f not in FORMATS]
    if bad or not got:
        raise BadUsage(
            f"--format {value!r}: unknown format {', '.join(bad) or '(none)'}; use a comma list of {','.join(FORMATS)}"
        )
    return got


def _opt(flag: str, env: str, text: str, **kwargs: Any) -> Any:
    return typer.Option(flag, envvar=env, show_envvar=True, help=text, show_default=False, **kwargs)


@app.command()
def analyze(
    traces: Annotated[
        list[Path] | None,
        typer.Argument(
            help="nsys SQLite exports (.sqlite or .sqlite.xz), parquetdir exports or run directories; "
            "several files are several passes. Without one: the bundled sample run "
            "(H100, gundam, 2 pages x 2 repeats).",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            envvar="DSOCR_ANALYZE_OUT",
            show_envvar=True,
            help="Directory the report files are written to.",
        ),
    ] = Path(rundir.DEFAULT_REPORT_DIR),
    formats: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            envvar="DSOCR_ANALYZE_FORMAT",
            show_envvar=True,
            help="Comma list of outputs: md (report.md), json (analysis.json), sqlite (results.sqlite), "
            "html (report.html, summary.md, plots/*.svg).",
        ),
    ] = ",".join(FORMATS),
    mode: Annotated[
        str | None,
        _opt(
            "--mode",
            "DSOCR_MODE",
            "Workload of a foreign trace: resolution mode (tiny, small, base, large, gundam, ...).",
            callback=mode_value,
        ),
    ] = None,
    crops: Annotated[
        str | None,
        _opt(
            "--crops",
            "DSOCR_CROPS",
            "Workload of a foreign trace: crop grid WxH (e.g. 2x3, 'none').",
            callback=crops_value,
        ),
    ] = None,
    prompt_tokens: Annotated[
        int | None,
        _opt("--prompt-tokens", "DSOCR_PROMPT_TOKENS", "Workload of a foreign trace: text prompt tokens.", min=0),
    ] = None,
    max_new_tokens: Annotated[
        int | None,
        _opt(
            "--max-new-tokens", "DSOCR_MAX_NEW_TOKENS", "Workload of a foreign trace: generated tokens per page.", min=1
        ),
    ] = None,
    prefill_tokens: Annotated[
        int | None,
        _opt(
            "--prefill-tokens",
            "DSOCR_PREFILL_TOKENS",
            "Workload of a decoder-only trace (no vision): prefill length in tokens.",
            min=1,
        ),
    ] = None,
    context: Annotated[
        str,
        _opt(
            "--context",
            "DSOCR_CONTEXT",
            "Decode context per step for the analytic FLOPs and MFU: auto (the measured lengths, prefill + step), "
            "max (every step at the final length) or fixed:N (N for every step).",
            callback=context_value,
        ),
    ] = "auto",
    peak_tflops: Annotated[
        float | None,
        _opt(
            "--peak-tflops",
            "DSOCR_PEAK_TFLOPS",
            "Peak dense BF16 TFLOP/s for MFU (overrides the table).",
            callback=positive_value,
        ),
    ] = None,
    peak_tbps: Annotated[
        float | None,
        _opt(
            "--peak-tbps",
            "DSOCR_PEAK_TBPS",
            "Peak memory bandwidth in TB/s for MBU (overrides the table).",
            callback=positive_value,
        ),
    ] = None,
    gpu: Annotated[
        str | None, _opt("--gpu", "DSOCR_GPU", "GPU name to look the peak up by (default: the trace's GPU).")
    ] = None,
    calibration: Annotated[
        Path | None,
        _opt(
            "--calibration",
            "DSOCR_CALIBRATION",
            "calibration.json from `dsocr calibrate` for the calibrated prediction "
            "(default: the run directory's calibration.json when there is one).",
        ),
    ] = None,
    whatif: Annotated[
        Path | None,
        _opt(
            "--whatif",
            "DSOCR_WHATIF",
            "A what-if directory (or its whatif.json) from `dsocr whatif run`: the advice quotes its measured gains "
            "(default: the what-if whose baseline the run directory is, when it lies in one).",
        ),
    ] = None,
    full_projection: Annotated[
        bool,
        typer.Option(
            "--full-projection",
            envvar="DSOCR_FULL_PROJECTION",
            show_envvar=True,
            help="Put every nvtx_projection row in analysis.json, also one per operator range instance "
            "(--op-ranges captures; by default they are only in results.sqlite).",
        ),
    ] = False,
    scheduler: Annotated[
        str | None,
        _opt(
            "--scheduler",
            "DSOCR_SCHEDULER",
            "Run the per-trace work on Dask: 'local' (a cluster of processes here) or a scheduler address "
            '(tcp://host:8786); needs pip install "dsocr[dask]". Same results as without.',
            callback=scheduler_value,
        ),
    ] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Analyze Nsight Systems exports: stages, kernels, operators, repeats, MFU; write the report files."""
    ui = Ui(quiet=quiet, json_mode=json_out, verbose=verbose)
    wanted = parse_formats(formats)
    check_out_dir(out)  # before any work: the same checks again when writing
    if calibration is not None and not os.path.exists(calibration):
        raise InputNotFound(
            f"{calibration}: calibration file not found; make one with `dsocr calibrate --out {calibration}`"
        )
    if whatif is not None and not os.path.exists(whatif):
        raise InputNotFound(
            f"--whatif {whatif}: no such what-if directory or whatif.json; make one with `dsocr whatif run`"
        )
    for given in traces or []:
        check_input(given)  # before anything opens it: a FIFO would block, a missing directory is named
    if traces:
        _refuse_overwrite(out, wanted, _output_names(wanted), traces, calibration)
    policy = RuntimePolicy.for_inputs(traces or [])  # decided once, before polars is imported
    policy.apply_allocator()

    with _cyclic_gc_off():  # a one-shot command: see _cyclic_gc_off
        if policy.early_read is not None:
            from dsocr.analyze.prefetch import start as start_reading

            start_reading(policy.early_read)  # the largest tables, while polars and the analysis are imported
        from dsocr.analyze.analytic_section import PeakFlags
        from dsocr.analyze.input_files import sample_trace
        from dsocr.analyze.pipeline import run_analysis
        from dsocr.analyze.workload_from_run import WorkloadFlags

        paths = list(traces or [])
        if not paths:
            paths = [sample_trace()]
            ui.info(
                f"no trace given: analyzing the bundled sample run ({paths[0].name}: H100, gundam, 2 pages x 2 repeats)"
            )
        from dsocr.analytic.workload import parse_context

        flags = WorkloadFlags(mode, crops, prompt_tokens, max_new_tokens, prefill_tokens, parse_context(context))
        peak = PeakFlags(gpu, peak_tflops, peak_tbps, calibration)

        # per file: load, attribute, stages, projection; then combine, analytic model, render all, write all
        with _progress(ui, 4 * len(paths) + 4) as advance:
            analysis = run_analysis(
                paths, progress=advance, workload=flags, peak=peak, policy=policy, scheduler=scheduler
            )
            for w in analysis.warnings:
                print(f"dsocr: warning: {w}", file=sys.stderr)  # one line, never wrapped
            if analysis.analytic is not None and analysis.analytic.doc.get("reason"):
                ui.info(f"MFU/MBU: {analysis.analytic.doc['reason']}")
            advance("rendering outputs")
            from dsocr.report.jsonout import document, dumps

            doc = (
                document(analysis, full_projection=full_projection)
                if (set(wanted) & {"json", "html", "md"} or json_out)
                else None
            )
            jtext = dumps(doc) if doc is not None and ("json" in wanted or json_out) else None
            rendered = None
            summary_md = None
            facts_md = ""
            if doc is not None and ("html" in wanted or "md" in wanted):
                from dsocr.report.adapt import view_from_analysis

                view = view_from_analysis(doc)
                measured = _measurements(paths, whatif)
                if "html" in wanted:
                    from dsocr.report.html import render

                    rendered = render(view, measured)
                    summary_md = rendered.summary_md
                else:  # report.md only needs the summary: no plots, no report.html
                    from dsocr.report.html import render_summary_md
                    from dsocr.report.summary import build

                    summary_md = render_summary_md(view, build(view, measured))
                if "md" in wanted:
                    from dsocr.report.html import render_facts_md

                    facts_md = render_facts_md(view)
            mtext = _markdown(analysis, summary_md, rendered, facts_md) if "md" in wanted else None
            advance("writing outputs")
            _write(out, wanted, analysis, jtext, mtext, rendered, paths)

        if json_out:
            sys.stdout.write(jtext or "")
        elif not quiet:
            ui.out.print(str(out), markup=False)


def _measurements(paths: list[Path], whatif: Path | None) -> Measurements | None:
    """A what-if's measured gains for the advice (``--whatif``, or the what-if whose baseline ``paths`` is)."""
    from dsocr.report.advice import find

    return find(paths, whatif)


def _markdown(analysis: Analysis, summary_md: str | None, rendered: Rendered | None, facts: str = "") -> str:
    """report.md: the stakeholder summary, (with the html outputs) the plots and the run facts report.html
    shows (``facts``) first, then the tables."""
    from dsocr.report.markdown import markdown_text, summary_preamble

    if summary_md is None:
        return markdown_text(analysis)
    plots = []
    if rendered is not None:
        from dsocr.report.html import PLOTS_DIR

        plots = [(f"{PLOTS_DIR}/{p.id}.svg", p.heading) for p in rendered.plots]
    return markdown_text(analysis, summary_preamble(summary_md, plots, facts))


def _write(
    out: Path,
    wanted: tuple[str, ...],
    analysis: Analysis,
    jtext: str | None,
    mtext: str | None,
    rendered: Rendered | None,
    inputs: list[Path],
) -> None:
    """Write every chosen file as one set, all or nothing (:mod:`dsocr.report.report_set`): report files of an
    older analysis in ``out`` that this set lacks are removed, ``inputs`` never."""
    from dsocr.report.report_set import write_report_set
    from dsocr.report.sqliteout import build_sqlite

    check_out_dir(out)
    texts: dict[str, str] = {}
    if "json" in wanted and jtext is not None:
        texts[rundir.ANALYSIS_JSON] = jtext
    if "md" in wanted and mtext is not None:
        texts[rundir.REPORT_MD] = mtext
    if "html" in wanted and rendered is not None:
        texts.update(rendered.files())
    build = {rundir.RESULTS_SQLITE: partial(build_sqlite, analysis)} if "sqlite" in wanted else {}
    given = [Path(t.info.file) for t in analysis.traces]
    read = [*given, *(Path(t.info.path) for t in analysis.traces)]
    _refuse_overwrite(out, wanted, [*texts, *build], read, None)
    write_report_set(out, texts, build, inputs)


#: The report files of each --format (html's plots/*.svg are checked once rendered).
_FORMAT_FILES = {
    "md": (rundir.REPORT_MD,),
    "json": (rundir.ANALYSIS_JSON,),
    "sqlite": (rundir.RESULTS_SQLITE,),
    "html": (rundir.REPORT_HTML, rundir.SUMMARY_MD),
}


def _output_names(wanted: tuple[str, ...]) -> list[str]:
    return [name for f in wanted for name in _FORMAT_FILES[f]]


def _refuse_overwrite(
    out: Path, wanted: tuple[str, ...], names: list[str], traces: list[Path], calibration: Path | None
) -> None:
    """Refuse (one line) when a report file would replace a file the analysis reads, whatever its name."""
    from dsocr.analyze.input_files import files_read

    refuse_overwrite(
        [out / name for name in names],
        files_read(traces, calibration),
        "choose another --out (dsocr never overwrites an input)",
    )


@contextmanager
def _cyclic_gc_off() -> Iterator[None]:
    """Python's cyclic garbage collector off while the command runs (as it was afterwards).

    An analysis makes next to no reference cycles (its data are polars frames), but the collector's
    passes over the young objects of the imports and of the report rows took 12-16 ms of a run on the
    H100 fixture; without them the command ran ~28 ms faster (mean of 40 alternated runs).
    """
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


@contextmanager
def _progress(ui: Ui, steps: int) -> Iterator[Callable[[str], None]]:
    """Yield a step callback driving a rich progress bar on stderr (only messages with --verbose
    when quiet or not a TTY)."""
    if not ui.show_progress:
        yield ui.debug
        return
    progress = ui.progress_bar(transient=True)
    try:
        task = progress.add_task("starting", total=steps)

        def step(name: str) -> None:
            ui.debug(name)
            progress.update(task, description=name, advance=1)

        yield step
    finally:
        progress.stop()
