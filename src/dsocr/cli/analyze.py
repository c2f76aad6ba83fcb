"""``dsocr analyze``: any nsys SQLite export -> analysis.json, report.md, results.sqlite."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dsocr.cli.app import app
from dsocr.cli.common import JsonOpt, QuietOpt, Ui, VerboseOpt
from dsocr.contract import rundir
from dsocr.contract.errors import BadInput, ExitCode

if TYPE_CHECKING:
    from dsocr.analyze.analysis import Analysis

FORMATS = ("md", "json", "sqlite")


def parse_formats(value: str) -> tuple[str, ...]:
    """``md,json,sqlite`` -> a tuple of known formats (BadInput on an unknown one)."""
    got = tuple(dict.fromkeys(f.strip().lower() for f in value.split(",") if f.strip()))
    bad = [f for f in got if f not in FORMATS]
    if bad or not got:
        raise BadInput(
            f"--format {value!r}: unknown format {', '.join(bad) or '(none)'}; use a comma list of {','.join(FORMATS)}",
            ExitCode.USAGE,
        )
    return got


@app.command()
def analyze(
    traces: Annotated[
        list[Path] | None,
        typer.Argument(
            help="nsys SQLite exports (.sqlite or .sqlite.xz), parquetdir exports or run directories; "
            "several files are several passes. Without one: the bundled sample trace.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", envvar="DSOCR_OUT", show_envvar=True, help="Directory the report files are written to."
        ),
    ] = Path(rundir.DEFAULT_REPORT_DIR),
    formats: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            envvar="DSOCR_FORMAT",
            show_envvar=True,
            help="Comma list of outputs: md (report.md), json (analysis.json), sqlite (results.sqlite).",
        ),
    ] = ",".join(FORMATS),
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Analyze Nsight Systems exports: stages, kernels, operators, repeats; write the report files."""
    ui = Ui(quiet=quiet, json_mode=json_out, verbose=verbose)
    wanted = parse_formats(formats)

    from dsocr.analyze.analysis import run_analysis, sample_trace

    paths = list(traces or [])
    if not paths:
        paths = [sample_trace()]
        ui.info(f"no trace given: analyzing the bundled sample ({paths[0].name}, H100 decoder-only MoE run)")

    # per file: load, attribute, stages, projection; then combine, render, write
    with _progress(ui, 4 * len(paths) + 3) as advance:
        analysis = run_analysis(paths, progress=advance)
        for w in analysis.warnings:
            print(f"dsocr: warning: {w}", file=sys.stderr)  # one line, never wrapped
        advance("rendering outputs")
        from dsocr.report.jsonout import json_text

        jtext = json_text(analysis) if ("json" in wanted or json_out) else None
        mtext = None
        if "md" in wanted:
            from dsocr.report.markdown import markdown_text

            mtext = markdown_text(analysis)
        advance("writing outputs")
        _write(out, wanted, analysis, jtext, mtext)

    if json_out:
        sys.stdout.write(jtext or "")
    elif not quiet:
        ui.out.print(str(out), markup=False)


def _write(out: Path, wanted: tuple[str, ...], analysis: Analysis, jtext: str | None, mtext: str | None) -> None:
    """Write the chosen files all or nothing: each is built as a temp file, all are renamed at the end."""
    from dsocr.contract.atomic import atomic_path
    from dsocr.report.sqliteout import build_sqlite

    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out}: exists and is not a directory; choose another --out")
    with ExitStack() as stack:
        if "json" in wanted and jtext is not None:
            stack.enter_context(atomic_path(out / rundir.ANALYSIS_JSON)).write_text(jtext, encoding="utf-8")
        if "md" in wanted and mtext is not None:
            stack.enter_context(atomic_path(out / rundir.REPORT_MD)).write_text(mtext, encoding="utf-8")
        if "sqlite" in wanted:
            build_sqlite(analysis, stack.enter_context(atomic_path(out / rundir.RESULTS_SQLITE)))
    _share(out, wanted)


def _share(out: Path, wanted: tuple[str, ...]) -> None:
    """Give the written files the usual permissions (temp files are created 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    names = {"json": rundir.ANALYSIS_JSON, "md": rundir.REPORT_MD, "sqlite": rundir.RESULTS_SQLITE}
    for fmt in wanted:
        (out / names[fmt]).chmod(0o666 & ~mask)


@contextmanager
def _progress(ui: Ui, steps: int) -> Iterator[Callable[[str], None]]:
    """Yield a step callback driving a rich progress bar on stderr (only messages with --verbose
    when quiet or not a TTY)."""
    if not ui.show_progress:
        yield ui.debug
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=ui.err, transient=True) as progress:
        task = progress.add_task("starting", total=steps)

        def step(name: str) -> None:
            ui.debug(name)
            progress.update(task, description=name, advance=1)

        yield step
